package overlay

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// peerTable is a backend that only keeps the agent's calls: enough to check
// the agent's own bookkeeping without a kernel.
type peerTable struct {
	backend.Backend // not called
	peers           map[netip.Prefix]subnet.Lease
	removed         []netip.Prefix
	reconciles      int
}

func (p *peerTable) AddPeer(_ context.Context, l subnet.Lease) error {
	p.peers[l.Subnet] = l
	return nil
}

func (p *peerTable) RemovePeer(_ context.Context, l subnet.Lease) error {
	delete(p.peers, l.Subnet)
	p.removed = append(p.removed, l.Subnet)
	return nil
}

func (p *peerTable) Reconcile(context.Context) error {
	p.reconciles++
	return nil
}

func peerLease(s string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(s), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.0.2.1"), BackendType: "host-gw"}}
}

// TestResyncDropsPeersGoneWithoutEvent: after a re-list the agent removes
// the peers that are not in the complete set (the watcher may never have
// reported their removal), keeps the others, skips its own subnet, and then
// has the backend reconcile the kernel.
func TestResyncDropsPeersGoneWithoutEvent(t *testing.T) {
	a, err := New(Options{EtcdEndpoints: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	be := &peerTable{peers: map[netip.Prefix]subnet.Lease{}}
	own, h2, h3 := peerLease("10.10.1.0/24"), peerLease("10.10.2.0/24"), peerLease("10.10.3.0/24")
	n := a.nets[0]
	st := newPeerState(own.Subnet)
	ctx := context.Background()
	var evs []subnet.Event
	for _, l := range []subnet.Lease{own, h2, h3} {
		evs = append(evs, subnet.Event{Type: subnet.Added, Lease: l})
	}
	n.apply(ctx, be, st, evs)
	if len(st.peers) != 2 || n.peers.Load() != 2 {
		t.Fatalf("after adding own, h2, h3: %d peers (gauge %d), want 2", len(st.peers), n.peers.Load())
	}

	n.resync(ctx, be, st, []subnet.Lease{own, h2}) // h3 went without an event
	if _, ok := st.peers[h3.Subnet]; ok || !slices.Equal(be.removed, []netip.Prefix{h3.Subnet}) {
		t.Errorf("after resync: peers %v, removed %v; want h3 removed and only h3", st.peers, be.removed)
	}
	if _, ok := st.peers[h2.Subnet]; !ok || n.peers.Load() != 1 {
		t.Errorf("h2 lost in the resync (gauge %d)", n.peers.Load())
	}
	if be.reconciles != 1 {
		t.Errorf("Reconcile called %d times by the resync, want 1", be.reconciles)
	}
}
