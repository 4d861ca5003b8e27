package vxlan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// kernelState is what the kernel holds on the device that Reconcile may
// touch: the agent's routes (by route protocol) and the permanent
// neighbour and FDB entries (the device is the agent's own, and it has
// learning off, so every permanent entry on it was written by an agent).
type kernelState struct {
	routes []netlink.Route
	neighs []netlink.Neigh // AF_INET
	fdb    []netlink.Neigh // AF_BRIDGE
}

// stale picks from what the kernel holds what none of peers justifies: a
// route to a subnet no peer holds (or through another gateway), a
// neighbour whose address and MAC match no peer's gateway and VTEP, an FDB
// entry whose MAC and destination match no peer's VTEP and PublicIP. The
// Network's own route (see networkRoute; network is the zero Prefix where
// there is none) is justified as it is, without a gateway.
func (k kernelState) stale(peers map[netip.Prefix]peer, network netip.Prefix) kernelState {
	gw := map[netip.Addr]string{}   // gateway address → VTEP MAC
	vtep := map[string]netip.Addr{} // VTEP MAC → PublicIP
	for _, p := range peers {
		gw[p.vtepIP] = p.mac.String()
		vtep[p.mac.String()] = p.publicIP
	}
	var out kernelState
	for _, r := range k.routes {
		if r.Protocol != backend.RouteProtocol {
			continue
		}
		dst, ok := backend.PrefixOf(r.Dst)
		if ok && network.IsValid() && dst == network.Masked() && r.Gw == nil {
			continue
		}
		p, known := peers[dst]
		if !ok || !known || !addrIs(r.Gw, p.vtepIP) {
			out.routes = append(out.routes, r)
		}
	}
	for _, n := range k.neighs {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue // resolved by the kernel, not written by an agent
		}
		mac, known := gw[addrOf(n.IP)]
		if !known || mac != n.HardwareAddr.String() {
			out.neighs = append(out.neighs, n)
		}
	}
	for _, f := range k.fdb {
		if f.State&netlink.NUD_PERMANENT == 0 || f.IP == nil {
			continue // the device's own addresses, or learnt (learning is off)
		}
		dst, known := vtep[f.HardwareAddr.String()]
		if !known || !addrIs(f.IP, dst) {
			out.fdb = append(out.fdb, f)
		}
	}
	return out
}

func addrOf(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func addrIs(ip []byte, want netip.Addr) bool { return ip != nil && addrOf(ip) == want }

// Reconcile removes the routes, neighbours and FDB entries on the device
// that no current peer justifies, such as those an earlier run programmed
// for peers that left while no agent watched. In a network's own table it
// first restores the Network's route.
func (v *VXLAN) Reconcile(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	l, err := netlink.LinkByName(v.name)
	if err != nil {
		return fmt.Errorf("vxlan reconcile: find %s: %w", v.name, err)
	}
	idx := l.Attrs().Index
	if r := networkRoute(idx, v.table, v.cfg.Network); r != nil {
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("vxlan reconcile: route %s dev %s table %d: %w", v.cfg.Network, v.name, v.table, err)
		}
	}
	var k kernelState
	if k.routes, err = backend.OwnedRoutesIn(v.table, idx); err != nil {
		return fmt.Errorf("vxlan reconcile: %w", err)
	}
	if k.neighs, err = neighList(idx, unix.AF_INET); err != nil {
		return fmt.Errorf("vxlan reconcile: neighbours of %s: %w", v.name, err)
	}
	if k.fdb, err = neighList(idx, unix.AF_BRIDGE); err != nil {
		return fmt.Errorf("vxlan reconcile: fdb of %s: %w", v.name, err)
	}
	var network netip.Prefix
	if v.table != 0 {
		network = v.cfg.Network
	}
	st := k.stale(v.peers, network)
	for _, r := range st.routes {
		v.log.Info("removing stale route", "dst", r.Dst.String(), "gw", r.Gw.String())
	}
	errs := []error{backend.DeleteRoutes(st.routes)}
	for _, n := range append(st.neighs, st.fdb...) {
		what := "neighbour"
		if n.Family == unix.AF_BRIDGE {
			what = "fdb entry"
		}
		v.log.Info("removing stale "+what, "ip", n.IP.String(), "mac", n.HardwareAddr.String())
		if err := netlink.NeighDel(&n); err != nil && !backend.NotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s %s: %w", what, n.IP, n.HardwareAddr, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vxlan reconcile: %w", err)
	}
	return nil
}

// neighList lists a device's entries of one family; an interrupted dump
// gives what it read (see backend.OwnedRoutesIn).
func neighList(idx, family int) ([]netlink.Neigh, error) {
	ns, err := netlink.NeighList(idx, family)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	return ns, nil
}
