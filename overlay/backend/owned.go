package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks every route the agent installs (`ip route` shows
// "proto 77"). It is how a restarted agent tells its own routes, possibly
// left for peers that are gone, from routes an administrator or another
// daemon added on the same device: only routes with this mark are ever
// removed by Reconcile.
const RouteProtocol netlink.RouteProtocol = 77

// OwnedRoutesIn lists the IPv4 routes of the routing table table (0 =
// main) that carry RouteProtocol, on the device ifindex or, with ifindex 0,
// on any device. An interrupted dump gives what it read: Reconcile then
// misses a stale route until its next run, but never removes a route it
// did not see.
func OwnedRoutesIn(table, ifindex int) ([]netlink.Route, error) {
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	filter := &netlink.Route{Protocol: RouteProtocol, Table: table, LinkIndex: ifindex}
	mask := uint64(netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE)
	if ifindex != 0 {
		mask |= netlink.RT_FILTER_OIF
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list routes with protocol %d in table %d: %w", RouteProtocol, table, err)
	}
	return rs, nil
}

// DeleteRoutes removes routes; one already gone is not an error.
func DeleteRoutes(rs []netlink.Route) error {
	var errs []error
	for i := range rs {
		if err := netlink.RouteDel(&rs[i]); err != nil && !NotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", rs[i].Dst, err))
		}
	}
	return errors.Join(errs...)
}

// NotFound reports whether a netlink error says the object (route,
// neighbour, device) does not exist.
func NotFound(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENODEV)
}

// PrefixOf converts a route destination to a netip.Prefix (IPv4 addresses
// unmapped), as the backends key their peers.
func PrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, size := n.Mask.Size()
	if size == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && size == 128 {
		bits -= 96
	}
	return netip.PrefixFrom(a, bits), true
}
