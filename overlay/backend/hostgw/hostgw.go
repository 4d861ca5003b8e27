// Package hostgw is flannel's host-gw backend: no encapsulation at all, just
// a route per peer, `peer-subnet via peer-PublicIP dev <external>`. It needs
// every host on one L2 segment; a peer that is not is reported and skipped.
//
// The decisions (which lease is usable, whether a peer is on-link, which
// route it gets, which owned routes are stale) are pure functions in
// routes.go; this file only applies them to the kernel.
package hostgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// resyncInterval is how often routes are checked and restored, in case
// something else removed them.
const resyncInterval = 10 * time.Second

// HostGW is the backend.
type HostGW struct {
	cfg *config.Config
	ext backend.External
	log *slog.Logger
	// table is where the routes go: 0 (main) for a single-network agent,
	// the network's own table for one of several (backend.Options.Table).
	table int

	mu     sync.Mutex
	routes map[netip.Prefix]*netlink.Route
}

// New is the backend.Factory for "host-gw".
func New(cfg *config.Config, ext backend.External, _ *backend.Metrics, o backend.Options) (backend.Backend, error) {
	log := slog.Default().With("backend", config.BackendHostGW)
	if o.Network != "" {
		log = log.With("network", o.Network)
	}
	return &HostGW{cfg: cfg, ext: ext, log: log, table: o.Table, routes: map[netip.Prefix]*netlink.Route{}}, nil
}

// Prepare publishes the backend type; containers keep the external MTU.
func (h *HostGW) Prepare(ctx context.Context) (backend.Published, error) {
	mtu := h.cfg.MTU
	if mtu == 0 {
		mtu = h.ext.Iface.MTU
	}
	return backend.Published{BackendType: config.BackendHostGW, MTU: mtu}, nil
}

// Configure has nothing to set up for our own subnet: the container bridge
// already routes it.
func (h *HostGW) Configure(ctx context.Context, own subnet.Lease) error { return nil }

// onLink checks that ip is reachable directly on the external interface.
func (h *HostGW) onLink(ip netip.Addr) error {
	rs, err := netlink.RouteGet(ip.AsSlice())
	if err != nil && !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
		return fmt.Errorf("route lookup for %s: %w", ip, err)
	}
	if directlyReachable(rs, h.ext.Iface.Index) {
		return nil
	}
	return fmt.Errorf("PublicIP %s is not on the same L2 segment as %s (host-gw needs every host directly reachable; use vxlan across routers)", ip, h.ext.Iface.Name)
}

// AddPeer installs `peer-subnet via PublicIP dev <external> proto 77`.
func (h *HostGW) AddPeer(ctx context.Context, l subnet.Lease) error {
	if err := checkPeer(l); err != nil {
		return err
	}
	if err := h.onLink(l.Attrs.PublicIP); err != nil {
		return fmt.Errorf("peer %s skipped: %w", l.Subnet, err)
	}
	r := peerRoute(h.ext.Iface.Index, h.table, l)
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", l.Subnet, l.Attrs.PublicIP, err)
	}
	h.mu.Lock()
	h.routes[l.Subnet] = r
	h.mu.Unlock()
	return nil
}

// RemovePeer deletes that peer's route.
func (h *HostGW) RemovePeer(ctx context.Context, l subnet.Lease) error {
	h.mu.Lock()
	r, ok := h.routes[l.Subnet]
	delete(h.routes, l.Subnet)
	h.mu.Unlock()
	if !ok {
		return nil
	}
	if err := netlink.RouteDel(r); err != nil && !backend.NotFound(err) {
		return fmt.Errorf("delete route %s: %w", l.Subnet, err)
	}
	return nil
}

// Reconcile deletes the routes marked as the agent's in its table (on any
// device: an earlier run may have used another interface) that no current
// peer holds.
func (h *HostGW) Reconcile(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	owned, err := backend.OwnedRoutesIn(h.table, 0)
	if err != nil {
		return fmt.Errorf("host-gw reconcile: %w", err)
	}
	stale := staleRoutes(owned, h.routes)
	for _, r := range stale {
		h.log.Info("removing stale route", "dst", r.Dst.String(), "gw", r.Gw.String())
	}
	if err := backend.DeleteRoutes(stale); err != nil {
		return fmt.Errorf("host-gw reconcile: %w", err)
	}
	return nil
}

// Run restores routes that disappeared until ctx is done.
func (h *HostGW) Run(ctx context.Context) error {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			h.mu.Lock()
			for p, r := range h.routes {
				if err := netlink.RouteReplace(r); err != nil {
					h.log.Warn("restore route", "subnet", p, "err", err)
				}
			}
			h.mu.Unlock()
		}
	}
}

// Close leaves the routes: a restarted agent replaces them, and traffic
// keeps flowing meanwhile.
func (h *HostGW) Close() error { return nil }
