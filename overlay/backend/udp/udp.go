// Package udp is flannel's udp backend: a TUN device flannel0 carries the
// whole overlay Network; the agent reads each packet from it, finds the peer
// whose subnet holds the destination and sends the bare packet in a UDP
// datagram to that peer's PublicIP on the backend port (8285). Datagrams
// received on the port are admitted (known peer, inner addresses that fit)
// and written back into the TUN device.
//
// Two datapaths move the same datagrams: "simple" (one packet per syscall,
// as upstream flanneld) and "fast" (the default: batches, TUN and UDP
// segmentation offloads; see fast.go). Either talks to the other and to
// upstream flanneld.
package udp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// TunName is flannel's device name for the udp backend.
const TunName = "flannel0"

// encapOverhead is the outer IPv4 + UDP header.
const encapOverhead = 20 + 8

// bufSize fits any IPv4 packet.
const bufSize = 65536

// route says where one peer subnet goes.
type route struct {
	subnet netip.Prefix
	dst    netip.AddrPort
}

// UDP is the backend.
type UDP struct {
	cfg     *config.Config
	ext     backend.External
	metrics *backend.Metrics
	log     *slog.Logger

	mode    string   // "fast" or "simple"
	offl    offloads // the fast mode's allowed offloads
	workers int      // the fast mode's workers (queues of flannel0)
	fast    *fastPath

	tun  *os.File // simple mode
	conn *net.UDPConn
	mtu  int
	// dev is the TUN device's name (TunName, or a multi-network agent's
	// per-network name) and table the routing table of the Network route
	// (0 = main): backend.Options.DeviceName and Table.
	dev   string
	table int

	mu    sync.Mutex // serialises table changes
	peers peerSet    // the truth the published table follows (peers.go)
	tab   atomic.Pointer[table]
}

// New is the backend.Factory for "udp".
func New(cfg *config.Config, ext backend.External, m *backend.Metrics, o backend.Options) (backend.Backend, error) {
	mode := o.UDPMode
	switch mode {
	case "":
		mode = "fast"
	case "fast", "simple":
	default:
		return nil, fmt.Errorf("--udp-mode %q: must be fast or simple", o.UDPMode)
	}
	offl, err := parseOffloads(os.Getenv(OffloadsEnv))
	if err != nil {
		return nil, err
	}
	workers := 1
	if mode == "fast" {
		if workers, err = workerCount(o.Workers); err != nil {
			return nil, err
		}
	} else if o.Workers > 1 {
		return nil, fmt.Errorf("--udp-workers %d: the simple datapath has one loop per direction; workers are the fast mode's", o.Workers)
	}
	if cfg.Backend.Port <= 0 || cfg.Backend.Port > 65535 {
		return nil, fmt.Errorf("udp backend: Port %d: must be 1..65535", cfg.Backend.Port)
	}
	dev := o.DeviceName
	if dev == "" {
		dev = TunName
	}
	if len(dev) > unix.IFNAMSIZ-1 {
		return nil, fmt.Errorf("udp backend: device name %q is longer than %d characters", dev, unix.IFNAMSIZ-1)
	}
	log := slog.Default().With("backend", config.BackendUDP, "mode", mode)
	if o.Network != "" {
		log = log.With("network", o.Network, "dev", dev)
	}
	b := &UDP{cfg: cfg, ext: ext, metrics: m, log: log,
		mode: mode, offl: offl, workers: workers, peers: newPeerSet(), dev: dev, table: o.Table}
	b.tab.Store(&table{subnetLen: cfg.SubnetLen, bySubnet: map[netip.Prefix]route{}, byPublic: map[netip.Addr]netip.Prefix{}})
	return b, nil
}

// Prepare opens the TUN device and the UDP socket.
func (b *UDP) Prepare(ctx context.Context) (backend.Published, error) {
	b.mtu = b.cfg.MTU
	if b.mtu == 0 {
		b.mtu = b.ext.Iface.MTU - encapOverhead
	}
	if b.mode == "fast" {
		if err := b.prepareFast(); err != nil {
			return backend.Published{}, err
		}
		return backend.Published{BackendType: config.BackendUDP, MTU: b.mtu}, nil
	}
	tun, err := openTun(b.dev)
	if err != nil {
		return backend.Published{}, err
	}
	b.tun = tun
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: b.cfg.Backend.Port})
	if err != nil {
		tun.Close()
		return backend.Published{}, fmt.Errorf("udp backend: listen on port %d: %w", b.cfg.Backend.Port, err)
	}
	// Large socket buffers absorb bursts; ignore failure (limits may forbid it).
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	b.conn = conn
	return backend.Published{BackendType: config.BackendUDP, MTU: b.mtu}, nil
}

// openTun creates (or attaches to) a TUN device without packet info headers.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w (is the tun module available?)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	// Non-blocking so the Go poller drives reads and Close unblocks them.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s nonblock: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// Configure gives flannel0 the lease's network address with the Network's
// prefix (so the kernel routes the whole Network to it), the MTU, and an
// explicit Network route in case a more specific one hid the connected route.
// In a network's own table (multi-network mode) the address adds no route
// to main (noprefixroute) and the Network route goes into the table.
func (b *UDP) Configure(ctx context.Context, own subnet.Lease) error {
	link, err := netlink.LinkByName(b.dev)
	if err != nil {
		return fmt.Errorf("udp backend: find %s: %w", b.dev, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: own.Subnet.Addr().AsSlice(), Mask: net.CIDRMask(b.cfg.Network.Bits(), 32)}}
	if b.table != 0 {
		addr.Flags = unix.IFA_F_NOPREFIXROUTE
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("udp backend: list addresses of %s: %w", b.dev, err)
	}
	for _, a := range addrs {
		if !a.IPNet.IP.Equal(addr.IPNet.IP) {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("udp backend: remove stale %s from %s: %w", a.IPNet, b.dev, err)
			}
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("udp backend: address %s on %s: %w", addr.IPNet, b.dev, err)
	}
	if err := netlink.LinkSetMTU(link, b.mtu); err != nil {
		return fmt.Errorf("udp backend: MTU %d on %s: %w", b.mtu, b.dev, err)
	}
	if b.fast != nil {
		b.fast.configureFastLink(link, b.log)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("udp backend: set %s up: %w", b.dev, err)
	}
	nw := b.cfg.Network
	rt := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: nw.Addr().AsSlice(), Mask: net.CIDRMask(nw.Bits(), 32)},
		Scope:     netlink.SCOPE_LINK,
		Table:     b.table,
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("udp backend: route %s dev %s table %d: %w", nw, b.dev, b.table, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.publishLocked(own.Subnet)
	b.log.Info("configured", "dev", b.dev, "addr", addr.IPNet.String(), "mtu", b.mtu, "table", b.table)
	return nil
}

// AddPeer installs or replaces the route to a peer's subnet.
func (b *UDP) AddPeer(ctx context.Context, peer subnet.Lease) error {
	if !peer.Attrs.PublicIP.Is4() {
		return fmt.Errorf("udp backend: peer %s has no IPv4 PublicIP", peer.Subnet)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changeLocked(b.peers.set(route{subnet: peer.Subnet, dst: netip.AddrPortFrom(peer.Attrs.PublicIP, uint16(b.cfg.Backend.Port))}))
	return nil
}

// RemovePeer forgets a peer's subnet.
func (b *UDP) RemovePeer(ctx context.Context, peer subnet.Lease) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changeLocked(b.peers.remove(peer.Subnet))
	return nil
}

// BeginPeers defers publishing the changes of the AddPeer and RemovePeer
// calls that follow until EndPeers (backend.Batcher).
func (b *UDP) BeginPeers() {
	b.mu.Lock()
	b.peers.batching = true
	b.mu.Unlock()
}

// EndPeers publishes a fresh table with every change since BeginPeers. A
// batch that changed nothing (a resync that found every peer current, a
// watch response of lease renewals) keeps the table, unless it carries a
// delta (the settle rebuild skips a batch in progress): rebuilding it would
// copy every peer for nothing.
func (b *UDP) EndPeers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers.batching = false
	if t := b.tab.Load(); b.peers.dirty || t.delta != nil {
		b.peers.dirty = false
		b.publishLocked(t.own)
	}
}

// Run moves packets both ways until ctx is done.
func (b *UDP) Run(ctx context.Context) error {
	if b.fast != nil {
		return b.runFast(ctx)
	}
	errc := make(chan error, 2)
	go func() { errc <- b.tunToUDP() }()
	go func() { errc <- b.udpToTun() }()
	select {
	case <-ctx.Done():
		b.tun.SetDeadline(immediate)
		b.conn.SetDeadline(immediate)
		<-errc
		<-errc
		return nil
	case err := <-errc:
		b.tun.SetDeadline(immediate)
		b.conn.SetDeadline(immediate)
		<-errc
		return err
	}
}

// tunToUDP encapsulates: one packet per read, one datagram per send.
func (b *UDP) tunToUDP() error {
	buf := make([]byte, bufSize)
	icmp := make([]byte, 20+8+60+8)
	for {
		n, err := b.tun.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", TunName, err)
		}
		pkt := buf[:n]
		_, dst, err := ipv4Addrs(pkt)
		if err != nil {
			b.metrics.Drop(dropReason(err))
			continue
		}
		t := b.tab.Load()
		r, ok := t.lookup(dst)
		if !ok {
			b.metrics.Drop(backend.DropNoRoute)
			// Tell the sender, as a router would, so it fails fast.
			if m := netUnreachable(icmp, pkt); m > 0 {
				_, _ = b.tun.Write(icmp[:m])
			}
			continue
		}
		if _, err := b.conn.WriteToUDPAddrPort(pkt, r.dst); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			b.metrics.Drop(backend.DropSendError)
			continue
		}
		b.metrics.EncapPackets.Add(1)
		b.metrics.EncapBytes.Add(uint64(n))
	}
}

// udpToTun decapsulates after admission: the datagram must come from a
// current peer, its inner source must lie in that peer's subnet and its inner
// destination in ours.
func (b *UDP) udpToTun() error {
	buf := make([]byte, bufSize)
	for {
		n, from, err := b.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read udp: %w", err)
		}
		pkt := buf[:n]
		// The sender first: nothing a stranger sent is looked at
		// (docs/SECURITY.md), and all of it counts as not_peer.
		t := b.tab.Load()
		peer, known := t.peerOf(from.Addr().Unmap())
		if !known {
			b.metrics.Drop(backend.DropNotPeer)
			continue
		}
		src, dst, err := ipv4Addrs(pkt)
		if err != nil {
			b.metrics.Drop(dropReason(err))
			continue
		}
		if reason, ok := t.admitFrom(peer, true, src, dst); !ok {
			b.metrics.Drop(reason)
			continue
		}
		if _, err := b.tun.Write(pkt); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			b.metrics.Drop(backend.DropWriteError)
			continue
		}
		b.metrics.DecapPackets.Add(1)
		b.metrics.DecapBytes.Add(uint64(n))
	}
}

// admit decides whether a decapsulated packet may enter this host.
func (t *table) admit(from, innerSrc, innerDst netip.Addr) (backend.DropReason, bool) {
	peer, ok := t.peerOf(from)
	return t.admitFrom(peer, ok, innerSrc, innerDst)
}

// admitFrom is admit once the sender's subnet has been looked up (known
// says whether the sender is a peer at all): a batch from one sender looks
// it up once.
func (t *table) admitFrom(peer netip.Prefix, known bool, innerSrc, innerDst netip.Addr) (backend.DropReason, bool) {
	if !known {
		return backend.DropNotPeer, false
	}
	if !peer.Contains(innerSrc) || !t.own.IsValid() || !t.own.Contains(innerDst) {
		return backend.DropSpoofed, false
	}
	return 0, true
}

// Close releases the socket and the TUN device; the kernel deletes the
// non-persistent device and its routes with the last descriptor.
func (b *UDP) Close() error {
	b.mu.Lock()
	if b.peers.settle != nil {
		b.peers.settle.Stop()
	}
	b.mu.Unlock()
	var errs []error
	if b.fast != nil {
		errs = append(errs, b.fast.close())
	}
	if b.conn != nil {
		errs = append(errs, b.conn.Close())
	}
	if b.tun != nil {
		errs = append(errs, b.tun.Close())
	}
	return errors.Join(errs...)
}

func dropReason(err error) backend.DropReason {
	if err == errVersion {
		return backend.DropNotIPv4
	}
	return backend.DropMalformed
}
