package udp

import (
	"context"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// Reconcile holds the udp backend to the one kernel route it owns: the
// Network through flannel0 (in the network's table for a multi-network
// agent), re-installed here with the agent's route protocol, and no other
// route so marked on flannel0 in that table. Peers live only in the
// datapath's own table, so no per-peer kernel state can go stale.
func (b *UDP) Reconcile(ctx context.Context) error {
	link, err := netlink.LinkByName(b.dev)
	if err != nil {
		return fmt.Errorf("udp reconcile: find %s: %w", b.dev, err)
	}
	idx := link.Attrs().Index
	nw := b.cfg.Network
	rt := &netlink.Route{
		LinkIndex: idx,
		Dst:       &net.IPNet{IP: nw.Addr().AsSlice(), Mask: net.CIDRMask(nw.Bits(), 32)},
		Scope:     netlink.SCOPE_LINK,
		Table:     b.table,
		Protocol:  backend.RouteProtocol,
	}
	if err := netlink.RouteReplace(rt); err != nil {
		return fmt.Errorf("udp reconcile: route %s dev %s table %d: %w", nw, b.dev, b.table, err)
	}
	owned, err := backend.OwnedRoutesIn(b.table, idx)
	if err != nil {
		return fmt.Errorf("udp reconcile: %w", err)
	}
	var stale []netlink.Route
	for _, r := range owned {
		if p, ok := backend.PrefixOf(r.Dst); !ok || p != nw {
			b.log.Info("removing stale route", "dst", r.Dst.String(), "dev", b.dev)
			stale = append(stale, r)
		}
	}
	if err := backend.DeleteRoutes(stale); err != nil {
		return fmt.Errorf("udp reconcile: %w", err)
	}
	return nil
}
