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
	foreignRoute := *peerRoute(5, h3)
	foreignRoute.Protocol = unix.RTPROT_STATIC
	learnt := neigh(h3)
	learnt.State = netlink.NUD_REACHABLE
	ownAddr := netlink.Neigh{Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, HardwareAddr: vtepMAC(netip.MustParseAddr("192.168.77.1"))}

	k := kernelState{
		routes: []netlink.Route{*peerRoute(5, h2), *peerRoute(5, h3), foreignRoute},
		neighs: []netlink.Neigh{neigh(h2), neigh(h3), neigh(remac), learnt},
		fdb:    []netlink.Neigh{fdb(h2), fdb(h3), fdb(moved), ownAddr},
	}
	st := k.stale(peers)

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
	all := k.stale(nil)
	if len(all.routes) != 2 || len(all.neighs) != 3 || len(all.fdb) != 3 {
		t.Errorf("with no peers: %d routes, %d neighbours, %d fdb stale; want 2, 3, 3", len(all.routes), len(all.neighs), len(all.fdb))
	}
}
