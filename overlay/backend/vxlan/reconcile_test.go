package vxlan

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

func testPeer(i byte) peer {
	sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, i, 0}), 24)
	pub := netip.AddrFrom4([4]byte{192, 168, 77, i})
	return peer{subnet: sub, vtepIP: sub.Addr(), mac: vtepMAC(pub), publicIP: pub}
}

// key names a neighbour or FDB entry for comparisons.
func key(n netlink.Neigh) string { return n.String() }

func neigh(p peer) netlink.Neigh {
	return netlink.Neigh{Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: p.vtepIP.AsSlice(), HardwareAddr: p.mac}
}

func fdb(p peer) netlink.Neigh {
	return netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: p.publicIP.AsSlice(), HardwareAddr: p.mac}
}

func TestStaleEntries(t *testing.T) {
	h2, h3 := testPeer(2), testPeer(3)
	peers := map[netip.Prefix]peer{h2.subnet: h2}
	moved := h2
	moved.publicIP = netip.MustParseAddr("192.168.77.9") // h2's VTEP at its old address
	remac := h2
	remac.mac = net.HardwareAddr{0x0a, 0x58, 1, 2, 3, 4} // h2's gateway with an old MAC
	foreignRoute := *peerRoute(5, 0, h3)
	foreignRoute.Protocol = unix.RTPROT_STATIC
	learnt := neigh(h3)
	learnt.State = netlink.NUD_REACHABLE
	ownAddr := netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, HardwareAddr: vtepMAC(netip.MustParseAddr("192.168.77.1"))}

	k := kernelState{
		routes: []netlink.Route{*peerRoute(5, 0, h2), *peerRoute(5, 0, h3), foreignRoute},
		neighs: []netlink.Neigh{neigh(h2), neigh(h3), neigh(remac), learnt},
		fdb:    []netlink.Neigh{fdb(h2), fdb(h3), fdb(moved), ownAddr},
	}
	st := k.stale(peers, netip.Prefix{})

	if len(st.routes) != 1 || st.routes[0].Dst.String() != h3.subnet.String() || st.routes[0].Protocol != backend.RouteProtocol {
		t.Errorf("stale routes = %v, want only h3's own route (the static one is not the agent's)", st.routes)
	}
	wantNeighs := map[string]bool{key(neigh(h3)): true, key(neigh(remac)): true}
	if len(st.neighs) != 2 {
		t.Errorf("stale neighbours = %v, want h3's and h2's gateway with the old MAC", st.neighs)
	}
	for _, n := range st.neighs {
		if !wantNeighs[key(n)] {
			t.Errorf("neighbour %v called stale", n)
		}
	}
	wantFDB := map[string]bool{key(fdb(h3)): true, key(fdb(moved)): true}
	if len(st.fdb) != 2 {
		t.Errorf("stale fdb = %v, want h3's and h2's VTEP at its old address", st.fdb)
	}
	for _, f := range st.fdb {
		if !wantFDB[key(f)] {
			t.Errorf("fdb entry %v called stale", f)
		}
	}

	// Nothing programmed: every entry the agent owns is stale, nothing else.
	all := k.stale(nil, netip.Prefix{})
	if len(all.routes) != 2 || len(all.neighs) != 3 || len(all.fdb) != 3 {
		t.Errorf("with no peers: %d routes, %d neighbours, %d fdb stale; want 2, 3, 3", len(all.routes), len(all.neighs), len(all.fdb))
	}
}

// TestStaleNetworkRoute: in a network's own table the Network's route
// through the device (no gateway) is the backend's and never stale; the
// same destination through a gateway, or another network's prefix, is.
func TestStaleNetworkRoute(t *testing.T) {
	nw := netip.MustParsePrefix("10.10.0.0/16")
	h2 := testPeer(2)
	own := *networkRoute(5, 1001, nw)
	viaGW := own
	viaGW.Gw = net.ParseIP("10.10.0.1")
	other := *networkRoute(5, 1001, netip.MustParsePrefix("10.20.0.0/16"))
	k := kernelState{routes: []netlink.Route{own, viaGW, other, *peerRoute(5, 1001, h2)}}
	st := k.stale(map[netip.Prefix]peer{h2.subnet: h2}, nw)
	if len(st.routes) != 2 || st.routes[0].Gw == nil || st.routes[1].Dst.String() != "10.20.0.0/16" {
		t.Errorf("stale = %v, want the gateway route and 10.20.0.0/16 only", st.routes)
	}
	// Without a table of its own (single network) the same route is stale.
	if st := k.stale(map[netip.Prefix]peer{h2.subnet: h2}, netip.Prefix{}); len(st.routes) != 3 {
		t.Errorf("single network: stale = %v, want all three non-peer routes", st.routes)
	}
}

// TestRoutesInTable: with a table every route the backend builds names it
// and carries the agent's protocol; without one they are main's, and the
// main table gets no Network route at all.
func TestRoutesInTable(t *testing.T) {
	nw := netip.MustParsePrefix("10.10.0.0/16")
	r := networkRoute(7, 1002, nw)
	if r == nil || r.Table != 1002 || r.LinkIndex != 7 || r.Dst.String() != "10.10.0.0/16" || r.Gw != nil ||
		r.Scope != netlink.SCOPE_LINK || r.Protocol != backend.RouteProtocol {
		t.Errorf("networkRoute = %+v, want 10.10.0.0/16 dev 7 scope link table 1002 proto 77", r)
	}
	if r := networkRoute(7, 0, nw); r != nil {
		t.Errorf("networkRoute in main = %+v, want none", r)
	}
	p := peerRoute(7, 1002, testPeer(3))
	if p.Table != 1002 || p.Dst.String() != "10.10.3.0/24" || !p.Gw.Equal(net.ParseIP("10.10.3.0")) || p.Flags&int(netlink.FLAG_ONLINK) == 0 {
		t.Errorf("peerRoute = %+v, want 10.10.3.0/24 via 10.10.3.0 onlink table 1002", p)
	}
	if p := peerRoute(7, 0, testPeer(3)); p.Table != 0 {
		t.Errorf("single-network peerRoute table %d, want 0 (main)", p.Table)
	}
}
