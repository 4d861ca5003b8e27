package overlay

import (
	"context"
	"net/netip"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// peerState is the agent's view of the peers it has programmed.
type peerState struct {
	own   netip.Prefix
	peers map[netip.Prefix]subnet.Lease
}

func newPeerState(own netip.Prefix) *peerState {
	return &peerState{own: own, peers: map[netip.Prefix]subnet.Lease{}}
}

// peerUpdate is what the lease watcher hands the event loop: events, or
// after a re-list the complete current lease set.
type peerUpdate struct {
	events  []subnet.Event
	resync  bool
	current []subnet.Lease // with resync
}

// apply hands lease events to the backend, skipping our own subnet and
// no-op updates.
func (n *network) apply(ctx context.Context, be backend.Backend, st *peerState, evs []subnet.Event) {
	if b, ok := be.(backend.Batcher); ok && len(evs) > 1 {
		b.BeginPeers()
		defer b.EndPeers()
	}
	for _, ev := range evs {
		p := ev.Lease.Subnet
		if p == st.own {
			continue
		}
		switch ev.Type {
		case subnet.Added:
			if old, ok := st.peers[p]; ok && sameAttrs(old.Attrs, ev.Lease.Attrs) {
				continue
			}
			if err := be.AddPeer(ctx, ev.Lease); err != nil {
				n.log.Error("add peer failed", "subnet", p, "public_ip", ev.Lease.Attrs.PublicIP, "err", err)
				continue
			}
			st.peers[p] = ev.Lease
			n.log.Info("peer added", "subnet", p, "public_ip", ev.Lease.Attrs.PublicIP)
		case subnet.Removed:
			n.removePeer(ctx, be, st, p)
		}
	}
	n.peers.Store(int64(len(st.peers)))
}

func (n *network) removePeer(ctx context.Context, be backend.Backend, st *peerState, p netip.Prefix) {
	old, ok := st.peers[p]
	if !ok {
		return
	}
	if err := be.RemovePeer(ctx, old); err != nil {
		n.log.Error("remove peer failed", "subnet", p, "err", err)
	}
	delete(st.peers, p)
	n.log.Info("peer removed", "subnet", p)
}

// resync brings the programmed peers and the kernel in line with the
// complete current lease set: peers that are gone although no event said
// so are removed, then the backend drops whatever it owns that no
// remaining peer justifies.
func (n *network) resync(ctx context.Context, be backend.Backend, st *peerState, current []subnet.Lease) {
	keep := make(map[netip.Prefix]bool, len(current))
	for _, l := range current {
		keep[l.Subnet] = true
	}
	if b, ok := be.(backend.Batcher); ok {
		b.BeginPeers()
		defer b.EndPeers()
	}
	for p := range st.peers {
		if !keep[p] {
			n.log.Info("peer gone without an event; removing it", "subnet", p)
			n.removePeer(ctx, be, st, p)
		}
	}
	n.peers.Store(int64(len(st.peers)))
	n.reconcile(ctx, be)
}

// reconcile asks the backend to drop stale kernel state and, for a
// network of several, restores the network's rule and unreachable default.
// A failure is logged, not fatal: the current peers are programmed either
// way, and the next resync tries again.
func (n *network) reconcile(ctx context.Context, be backend.Backend) {
	if err := be.Reconcile(ctx); err != nil {
		n.log.Error("removing stale peer state failed", "err", err)
	}
	if n.tenant != nil {
		if err := n.a.tenancy.ensure(n.tenancy); err != nil {
			n.log.Error("restoring the network's policy rule and unreachable default failed", "err", err)
		}
	}
}

func sameAttrs(x, y subnet.LeaseAttrs) bool {
	return x.PublicIP == y.PublicIP && x.BackendType == y.BackendType && string(x.BackendData) == string(y.BackendData)
}
