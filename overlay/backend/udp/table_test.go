package udp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

var _ backend.Batcher = (*UDP)(nil)

func tableBackend(t *testing.T) *UDP {
	cfg := &config.Config{Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24, Backend: config.Backend{Type: config.BackendUDP, Port: 8285}}
	b := &UDP{cfg: cfg, peers: newPeerSet()}
	b.publishLocked(netip.MustParsePrefix("10.10.1.0/24"))
	t.Cleanup(func() { b.Close() })
	return b
}

func peerLease(i, host int) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.10.%d.0/24", i)),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 168, 77, byte(host)})}}
}

// TestPeersBatched: between BeginPeers and EndPeers the table the datapath
// reads stays as it was; EndPeers publishes every change at once, without
// a delta.
func TestPeersBatched(t *testing.T) {
	b := tableBackend(t)
	before := b.tab.Load()
	b.BeginPeers()
	for i := 2; i < 102; i++ {
		if err := b.AddPeer(t.Context(), peerLease(i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.RemovePeer(t.Context(), peerLease(50, 50)); err != nil {
		t.Fatal(err)
	}
	if b.tab.Load() != before {
		t.Fatal("the table changed inside a batch")
	}
	b.EndPeers()
	tab := b.tab.Load()
	if len(tab.bySubnet) != 99 || tab.delta != nil {
		t.Fatalf("after EndPeers: %d peers (want 99), delta %v", len(tab.bySubnet), tab.delta)
	}
	if _, ok := tab.lookup(netip.MustParseAddr("10.10.50.7")); ok {
		t.Fatal("the peer removed in the batch is still routed")
	}
	if r, ok := tab.lookup(netip.MustParseAddr("10.10.101.7")); !ok || r.dst != netip.MustParseAddrPort("192.168.77.101:8285") {
		t.Fatalf("10.10.101.7 routes to %v, %v", r.dst, ok)
	}
	// A batch that changes nothing publishes nothing.
	b.BeginPeers()
	b.EndPeers()
	if b.tab.Load() != tab {
		t.Fatal("an empty batch published a new table")
	}
}

// TestTableFollowsPeers: random adds, moves (a subnet to another PublicIP,
// a PublicIP to another subnet) and removals, one at a time; after each, the
// published table answers every lookup exactly as the truth does, through
// deltas, delta overflows and the settle rebuild. A change made outside a
// batch is visible at once.
func TestTableFollowsPeers(t *testing.T) {
	b := tableBackend(t)
	rng := rand.New(rand.NewPCG(1, 2))
	truthRoute := map[netip.Prefix]netip.Addr{}
	check := func(step int) {
		t.Helper()
		tab := b.tab.Load()
		for i := 0; i < 256; i++ {
			p := netip.MustParsePrefix(fmt.Sprintf("10.10.%d.0/24", i))
			r, ok := tab.lookup(p.Addr().Next())
			want, wok := truthRoute[p]
			if ok != wok || (ok && r.dst.Addr() != want) {
				t.Fatalf("step %d: %s routes to %v (%v), want %v (%v)", step, p, r.dst, ok, want, wok)
			}
			// An address two leases name (a host whose lease moved)
			// may be either's.
			a := netip.AddrFrom4([4]byte{192, 168, 77, byte(i)})
			got, gok := tab.peerOf(a)
			var holders []netip.Prefix
			for p, o := range truthRoute {
				if o == a {
					holders = append(holders, p)
				}
			}
			if gok != (len(holders) > 0) || (gok && !slices.Contains(holders, got)) {
				t.Fatalf("step %d: %s is peer %v (%v), want one of %v", step, a, got, gok, holders)
			}
		}
	}
	deltas, rebuilds := 0, 0
	for step := 0; step < 400; step++ {
		i, host := 2+rng.IntN(60), 2+rng.IntN(60)
		l := peerLease(i, host)
		if rng.IntN(3) == 0 {
			if err := b.RemovePeer(t.Context(), l); err != nil {
				t.Fatal(err)
			}
			delete(truthRoute, l.Subnet)
		} else {
			if err := b.AddPeer(t.Context(), l); err != nil {
				t.Fatal(err)
			}
			truthRoute[l.Subnet] = l.Attrs.PublicIP
		}
		if b.tab.Load().delta != nil {
			deltas++
		} else {
			rebuilds++
		}
		check(step)
	}
	if deltas == 0 || rebuilds == 0 {
		t.Fatalf("the run never exercised both paths: %d tables with a delta, %d rebuilt", deltas, rebuilds)
	}
	// Quiet peers: the delta is folded into fresh base maps.
	deadline := time.Now().Add(5 * settleAfter)
	for b.tab.Load().delta != nil {
		if time.Now().After(deadline) {
			t.Fatal("the delta was never folded in")
		}
		time.Sleep(50 * time.Millisecond)
	}
	check(-1)
}
