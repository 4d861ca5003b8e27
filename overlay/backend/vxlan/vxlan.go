// Package vxlan is flannel's vxlan backend: a kernel VXLAN device
// flannel.<VNI> on the external interface, no learning, and for every peer a
// permanent neighbour entry (peer subnet's .0 → peer VtepMAC), an FDB entry
// (VtepMAC → peer PublicIP) and an onlink route (peer subnet via .0). The
// kernel does all the encapsulation; the agent only programs it.
package vxlan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// overhead is outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
const overhead = 50

// Data is the lease's BackendData for vxlan, as flannel writes it.
type Data struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
}

// peer is what we programmed for one lease, so removal deletes exactly that.
type peer struct {
	subnet   netip.Prefix
	vtepIP   netip.Addr // the peer subnet's network address, flannel's gateway on flannel.<VNI>
	mac      net.HardwareAddr
	publicIP netip.Addr
}

// VXLAN is the backend.
type VXLAN struct {
	cfg  *config.Config
	ext  backend.External
	log  *slog.Logger
	name string
	mac  net.HardwareAddr
	mtu  int
	// network and table are the multi-network agent's (backend.Options):
	// the routes go into table, and the admission filter is the network's.
	network string
	table   int

	// mu guards own and peers: the agent's goroutine adds and removes
	// peers while Run may rebuild a deleted device from them.
	mu     sync.Mutex
	own    subnet.Lease
	peers  map[netip.Prefix]peer
	filter *peerFilter
}

// DeviceName is flannel's name for the device of a VNI.
func DeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

// New is the backend.Factory for "vxlan".
func New(cfg *config.Config, ext backend.External, _ *backend.Metrics, o backend.Options) (backend.Backend, error) {
	if cfg.Backend.VNI < 1 || cfg.Backend.VNI > 1<<24-1 {
		return nil, fmt.Errorf("vxlan backend: VNI %d: must be 1..16777215", cfg.Backend.VNI)
	}
	name := DeviceName(cfg.Backend.VNI)
	if len(name) > 15 {
		return nil, fmt.Errorf("vxlan backend: device name %s is longer than 15 characters: use a smaller VNI", name)
	}
	log := slog.Default().With("backend", config.BackendVXLAN, "dev", name)
	if o.Network != "" {
		log = log.With("network", o.Network)
	}
	return &VXLAN{
		cfg: cfg, ext: ext, name: name, network: o.Network, table: o.Table,
		log:   log,
		peers: map[netip.Prefix]peer{},
	}, nil
}

// vtepMAC derives the device MAC from the public IP, so a recreated device
// (or a restarted agent) keeps the MAC its peers already know.
func vtepMAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, a[0], a[1], a[2], a[3]}
}

// Prepare creates (or adopts) the VXLAN device and publishes its MAC.
func (v *VXLAN) Prepare(ctx context.Context) (backend.Published, error) {
	v.mtu = v.cfg.MTU
	if v.mtu == 0 {
		v.mtu = v.ext.Iface.MTU - overhead
	}
	v.mac = vtepMAC(v.ext.PublicIP)
	f, err := newPeerFilter(v.cfg.Backend.Port, v.network, v.cfg.Backend.VNI)
	if err != nil {
		return backend.Published{}, err
	}
	v.filter = f
	if err := v.ensureDevice(); err != nil {
		return backend.Published{}, err
	}
	data, err := json.Marshal(Data{VNI: v.cfg.Backend.VNI, VtepMAC: v.mac.String()})
	if err != nil {
		return backend.Published{}, err
	}
	return backend.Published{BackendType: config.BackendVXLAN, BackendData: data, MTU: v.mtu}, nil
}

func (v *VXLAN) wanted() *netlink.Vxlan {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = v.name
	attrs.HardwareAddr = v.mac
	attrs.MTU = v.mtu
	return &netlink.Vxlan{
		LinkAttrs:    attrs,
		VxlanId:      v.cfg.Backend.VNI,
		VtepDevIndex: v.ext.Iface.Index,
		SrcAddr:      v.ext.LocalIP.AsSlice(),
		Port:         v.cfg.Backend.Port,
		Learning:     false,
	}
}

// ensureDevice makes the device exist with the wanted attributes: an
// existing compatible one is kept (a restart must not disturb traffic), an
// incompatible one is replaced.
func (v *VXLAN) ensureDevice() error {
	want := v.wanted()
	if l, err := netlink.LinkByName(v.name); err == nil {
		if ex, ok := l.(*netlink.Vxlan); ok && ex.VxlanId == want.VxlanId && ex.VtepDevIndex == want.VtepDevIndex &&
			ex.Port == want.Port && net.IP(ex.SrcAddr).Equal(want.SrcAddr) && !ex.Learning {
			if ex.HardwareAddr.String() != v.mac.String() {
				if err := netlink.LinkSetHardwareAddr(l, v.mac); err != nil {
					return fmt.Errorf("vxlan backend: set MAC on %s: %w", v.name, err)
				}
			}
			if ex.MTU != v.mtu {
				if err := netlink.LinkSetMTU(l, v.mtu); err != nil {
					return fmt.Errorf("vxlan backend: set MTU on %s: %w", v.name, err)
				}
			}
			return netlink.LinkSetUp(l)
		}
		v.log.Warn("replacing incompatible device")
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("vxlan backend: delete incompatible %s: %w", v.name, err)
		}
	}
	if err := netlink.LinkAdd(want); err != nil {
		return fmt.Errorf("vxlan backend: create %s (VNI %d, port %d on %s): %w", v.name, want.VxlanId, want.Port, v.ext.Iface.Name, err)
	}
	l, err := netlink.LinkByName(v.name)
	if err != nil {
		return fmt.Errorf("vxlan backend: find %s: %w", v.name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("vxlan backend: set %s up: %w", v.name, err)
	}
	v.log.Info("created device", "vni", want.VxlanId, "port", want.Port, "mac", v.mac.String(), "mtu", v.mtu)
	return nil
}

// Configure puts <subnet>.0/32 on the device, as flannel does, and in a
// table of its own (multi-network mode) routes the whole Network through
// the device there.
func (v *VXLAN) Configure(ctx context.Context, own subnet.Lease) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.own = own
	return v.configureLocked()
}

func (v *VXLAN) configureLocked() error {
	l, err := netlink.LinkByName(v.name)
	if err != nil {
		return fmt.Errorf("vxlan backend: find %s: %w", v.name, err)
	}
	want := netip.PrefixFrom(v.own.Subnet.Addr(), 32)
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("vxlan backend: addresses of %s: %w", v.name, err)
	}
	for _, a := range addrs {
		if a.IPNet.String() != want.String() {
			if err := netlink.AddrDel(l, &a); err != nil {
				return fmt.Errorf("vxlan backend: remove stale %s: %w", a.IPNet, err)
			}
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("vxlan backend: address %s on %s: %w", want, v.name, err)
	}
	if r := networkRoute(l.Attrs().Index, v.table, v.cfg.Network); r != nil {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("vxlan backend: route %s dev %s table %d: %w", v.cfg.Network, v.name, v.table, err)
		}
	}
	return nil
}

// networkRoute is, in a network's own table (multi-network mode), the
// route of the whole Network through the device: an address of the
// Network that no peer holds stays on this network's device instead of
// meeting the table's unreachable default. In the main table (single-
// network mode) there is none, as with flannel: nil.
func networkRoute(idx, table int, nw netip.Prefix) *netlink.Route {
	if table == 0 {
		return nil
	}
	return &netlink.Route{
		LinkIndex: idx,
		Dst:       &net.IPNet{IP: nw.Masked().Addr().AsSlice(), Mask: net.CIDRMask(nw.Bits(), 32)},
		Scope:     netlink.SCOPE_LINK,
		Table:     table,
		Protocol:  backend.RouteProtocol,
	}
}

func parsePeer(l subnet.Lease) (peer, error) {
	if l.Attrs.BackendType != config.BackendVXLAN {
		return peer{}, fmt.Errorf("peer %s uses backend %q, not vxlan", l.Subnet, l.Attrs.BackendType)
	}
	var d Data
	if err := json.Unmarshal(l.Attrs.BackendData, &d); err != nil {
		return peer{}, fmt.Errorf("peer %s: BackendData %s: %w", l.Subnet, l.Attrs.BackendData, err)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return peer{}, fmt.Errorf("peer %s: VtepMAC %q is not a MAC address", l.Subnet, d.VtepMAC)
	}
	if !l.Attrs.PublicIP.Is4() {
		return peer{}, fmt.Errorf("peer %s has no IPv4 PublicIP", l.Subnet)
	}
	return peer{subnet: l.Subnet, vtepIP: l.Subnet.Addr(), mac: mac, publicIP: l.Attrs.PublicIP}, nil
}

// AddPeer programs neighbour, FDB and route for a peer, replacing what an
// earlier version of the same lease had.
func (v *VXLAN) AddPeer(ctx context.Context, l subnet.Lease) error {
	p, err := parsePeer(l)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old, had := v.peers[p.subnet]
	if had && (old.mac.String() != p.mac.String() || old.publicIP != p.publicIP) {
		_ = v.removeLocked(old)
	}
	if err := v.programLocked(p); err != nil {
		return err
	}
	v.peers[p.subnet] = p
	if err := v.filter.add(p.publicIP); err != nil {
		return err
	}
	if had && old.publicIP != p.publicIP && !v.admittedLocked(old.publicIP) {
		return v.filter.remove(old.publicIP)
	}
	return nil
}

func (v *VXLAN) programLocked(p peer) error {
	l, err := netlink.LinkByName(v.name)
	if err != nil {
		return fmt.Errorf("vxlan backend: find %s: %w", v.name, err)
	}
	idx := l.Attrs().Index
	// The neighbour answers ARP for the peer's gateway address locally.
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		IP: p.vtepIP.AsSlice(), HardwareAddr: p.mac,
	}); err != nil {
		return fmt.Errorf("vxlan backend: neighbour %s lladdr %s: %w", p.vtepIP, p.mac, err)
	}
	// The FDB entry sends frames for the peer's MAC to its PublicIP.
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: p.publicIP.AsSlice(), HardwareAddr: p.mac,
	}); err != nil {
		return fmt.Errorf("vxlan backend: fdb %s dst %s: %w", p.mac, p.publicIP, err)
	}
	if err := netlink.RouteReplace(peerRoute(idx, v.table, p)); err != nil {
		return fmt.Errorf("vxlan backend: route %s via %s: %w", p.subnet, p.vtepIP, err)
	}
	return nil
}

// peerRoute is a peer's onlink route through its gateway address on the
// device, marked as the agent's, in table (0 = main).
func peerRoute(idx, table int, p peer) *netlink.Route {
	return &netlink.Route{
		LinkIndex: idx,
		Dst:       &net.IPNet{IP: p.subnet.Addr().AsSlice(), Mask: net.CIDRMask(p.subnet.Bits(), 32)},
		Gw:        p.vtepIP.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
		Table:     table,
		Protocol:  backend.RouteProtocol,
	}
}

// RemovePeer deletes exactly that peer's route, neighbour and FDB entry.
func (v *VXLAN) RemovePeer(ctx context.Context, l subnet.Lease) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, ok := v.peers[l.Subnet]
	if !ok {
		return nil
	}
	delete(v.peers, l.Subnet)
	err := v.removeLocked(p)
	if !v.admittedLocked(p.publicIP) {
		err = errors.Join(err, v.filter.remove(p.publicIP))
	}
	return err
}

// admittedLocked reports whether another peer still uses ip.
func (v *VXLAN) admittedLocked(ip netip.Addr) bool {
	for _, q := range v.peers {
		if q.publicIP == ip {
			return true
		}
	}
	return false
}

func (v *VXLAN) removeLocked(p peer) error {
	l, err := netlink.LinkByName(v.name)
	if err != nil {
		return nil // the device is gone and took its entries with it
	}
	idx := l.Attrs().Index
	var errs []error
	if err := netlink.RouteDel(peerRoute(idx, v.table, p)); err != nil && !backend.NotFound(err) {
		errs = append(errs, fmt.Errorf("route %s: %w", p.subnet, err))
	}
	if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: p.vtepIP.AsSlice(), HardwareAddr: p.mac}); err != nil && !backend.NotFound(err) {
		errs = append(errs, fmt.Errorf("neighbour %s: %w", p.vtepIP, err))
	}
	if err := netlink.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: p.publicIP.AsSlice(), HardwareAddr: p.mac}); err != nil && !backend.NotFound(err) {
		errs = append(errs, fmt.Errorf("fdb %s: %w", p.mac, err))
	}
	return errors.Join(errs...)
}

// Run watches for the device being deleted (by an operator, a script, a
// scenario) and rebuilds it with its address and every peer's entries.
func (v *VXLAN) Run(ctx context.Context) error {
	for {
		if err := v.watchOnce(ctx); err != nil {
			v.log.Warn("link watch failed; polling instead", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		if _, err := netlink.LinkByName(v.name); err != nil {
			v.rebuild()
		}
	}
}

// watchOnce follows link events until the device is deleted (then rebuilds
// it) or ctx ends.
func (v *VXLAN) watchOnce(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	ch := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{}); err != nil {
		return err
	}
	// The device may have vanished between Configure and the subscription.
	if _, err := netlink.LinkByName(v.name); err != nil {
		v.rebuild()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				return errors.New("link subscription closed")
			}
			if u.Header.Type == unix.RTM_DELLINK && u.Link.Attrs().Name == v.name {
				v.rebuild()
			}
		}
	}
}

func (v *VXLAN) rebuild() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.log.Warn("device was deleted; recreating it")
	if err := v.ensureDevice(); err != nil {
		v.log.Error("recreate device", "err", err)
		return
	}
	if v.own.Subnet.IsValid() {
		if err := v.configureLocked(); err != nil {
			v.log.Error("reconfigure device", "err", err)
		}
	}
	for _, p := range v.peers {
		if err := v.programLocked(p); err != nil {
			v.log.Error("reprogram peer", "subnet", p.subnet, "err", err)
		}
	}
	v.log.Info("device recreated", "peers", len(v.peers))
}

// Close leaves the device in place, as flannel does: a restarted agent
// adopts it and traffic to existing peers never stops. The admission filter
// stays too, so the port is never open to everyone.
func (v *VXLAN) Close() error { return nil }
