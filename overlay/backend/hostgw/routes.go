package hostgw

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// checkPeer says whether host-gw can route to a peer lease at all, before
// anything asks the kernel: the lease must be host-gw's and carry an IPv4
// PublicIP to route through.
func checkPeer(l subnet.Lease) error {
	if l.Attrs.BackendType != config.BackendHostGW {
		return fmt.Errorf("peer %s uses backend %q, not host-gw: skipped", l.Subnet, l.Attrs.BackendType)
	}
	if !l.Attrs.PublicIP.Is4() {
		return fmt.Errorf("peer %s has no IPv4 PublicIP", l.Subnet)
	}
	return nil
}

// directlyReachable decides from the kernel's route lookup for a peer's
// PublicIP whether the peer sits on the external interface's own segment:
// some answer must leave through that interface without a gateway.
func directlyReachable(lookup []netlink.Route, ifindex int) bool {
	for _, r := range lookup {
		if r.LinkIndex == ifindex && r.Gw == nil {
			return true
		}
	}
	return false
}

// peerRoute is the route for a peer: its subnet via its PublicIP on the
// external interface, marked as the agent's, in table (0 = main).
func peerRoute(ifindex, table int, l subnet.Lease) *netlink.Route {
	return &netlink.Route{
		LinkIndex: ifindex,
		Dst:       &net.IPNet{IP: l.Subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(l.Subnet.Bits(), 32)},
		Gw:        l.Attrs.PublicIP.AsSlice(),
		Table:     table,
		Protocol:  backend.RouteProtocol,
	}
}

// staleRoutes picks, among the routes the agent owns (already filtered by
// its route protocol), those that no current peer route matches exactly in
// destination, gateway and device. Only unicast routes are host-gw's: a
// network's table also holds the agent's unreachable default, which is
// not a peer's.
func staleRoutes(owned []netlink.Route, want map[netip.Prefix]*netlink.Route) []netlink.Route {
	var stale []netlink.Route
	for _, r := range owned {
		if r.Protocol != backend.RouteProtocol {
			continue // not ours, whatever the caller's filter let through
		}
		if r.Type != unix.RTN_UNICAST && r.Type != 0 {
			continue // unreachable, blackhole, ...: not a peer route
		}
		if !justified(r, want) {
			stale = append(stale, r)
		}
	}
	return stale
}

func justified(r netlink.Route, want map[netip.Prefix]*netlink.Route) bool {
	if r.Dst == nil {
		return false
	}
	dst, ok := backend.PrefixOf(r.Dst)
	if !ok {
		return false
	}
	w, ok := want[dst]
	return ok && w.LinkIndex == r.LinkIndex && w.Gw.Equal(r.Gw)
}
