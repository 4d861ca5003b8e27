package hostgw

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

func lease(sub, publicIP, typ string) subnet.Lease {
	l := subnet.Lease{Subnet: netip.MustParsePrefix(sub)}
	l.Attrs.BackendType = typ
	if publicIP != "" {
		l.Attrs.PublicIP = netip.MustParseAddr(publicIP)
	}
	return l
}

func TestCheckPeer(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    subnet.Lease
		want string // "" = accepted
	}{
		{"host-gw peer", lease("10.10.3.0/24", "192.168.77.3", "host-gw"), ""},
		{"another backend", lease("10.10.3.0/24", "192.168.77.3", "vxlan"), `uses backend "vxlan", not host-gw`},
		{"no public IP", lease("10.10.3.0/24", "", "host-gw"), "no IPv4 PublicIP"},
		{"IPv6 public IP", lease("10.10.3.0/24", "fd00::3", "host-gw"), "no IPv4 PublicIP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPeer(tc.l)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("checkPeer = %v, want accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("checkPeer = %v, want an error with %q", err, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.l.Subnet.String()):
				t.Errorf("checkPeer error %q does not name the peer %s", err, tc.l.Subnet)
			}
		})
	}
}

func TestDirectlyReachable(t *testing.T) {
	const ext = 2
	gw := net.ParseIP("192.168.77.254")
	for _, tc := range []struct {
		name   string
		lookup []netlink.Route
		want   bool
	}{
		{"connected on the external device", []netlink.Route{{LinkIndex: ext}}, true},
		{"through a router on the external device", []netlink.Route{{LinkIndex: ext, Gw: gw}}, false},
		{"connected on another device", []netlink.Route{{LinkIndex: ext + 1}}, false},
		{"unreachable (no answer)", nil, false},
		{"one answer of several fits", []netlink.Route{{LinkIndex: ext + 1}, {LinkIndex: ext}}, true},
	} {
		if got := directlyReachable(tc.lookup, ext); got != tc.want {
			t.Errorf("%s: directlyReachable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPeerRoute(t *testing.T) {
	r := peerRoute(7, 0, lease("10.10.3.0/24", "192.168.77.3", "host-gw"))
	if r.LinkIndex != 7 || r.Dst.String() != "10.10.3.0/24" || !r.Gw.Equal(net.ParseIP("192.168.77.3")) {
		t.Errorf("peerRoute = dev %d dst %s via %s, want dev 7 dst 10.10.3.0/24 via 192.168.77.3", r.LinkIndex, r.Dst, r.Gw)
	}
	if r.Protocol != backend.RouteProtocol {
		t.Errorf("peerRoute protocol = %d, want the agent's %d: a restarted agent could not tell it is its own", r.Protocol, backend.RouteProtocol)
	}
	if len(r.Gw) != 4 || len(r.Dst.IP) != 4 {
		t.Errorf("peerRoute addresses are not 4-byte IPv4: gw %d bytes, dst %d bytes", len(r.Gw), len(r.Dst.IP))
	}
}

func TestStaleRoutes(t *testing.T) {
	const ext = 2
	h2 := lease("10.10.2.0/24", "192.168.77.2", "host-gw")
	h3 := lease("10.10.3.0/24", "192.168.77.3", "host-gw")
	want := map[netip.Prefix]*netlink.Route{h2.Subnet: peerRoute(ext, 0, h2)}
	owned := func(r *netlink.Route) netlink.Route { return *r }
	moved := *peerRoute(ext, 0, h2)
	moved.Gw = net.ParseIP("192.168.77.9").To4()
	otherDev := *peerRoute(ext+1, 0, h2)
	notOurs := *peerRoute(ext, 0, h3)
	notOurs.Protocol = 4 // static: an administrator's
	stale := staleRoutes([]netlink.Route{
		owned(peerRoute(ext, 0, h2)), // a current peer's: kept
		owned(peerRoute(ext, 0, h3)), // h3 left while the agent was down
		moved,                        // h2's subnet through an old gateway
		otherDev,                     // h2's subnet on a device no longer used
		notOurs,                      // never ours, whatever the filter passed
		{Protocol: backend.RouteProtocol, LinkIndex: ext}, // no destination
	}, want)
	var got []string
	for _, r := range stale {
		got = append(got, r.String())
	}
	if len(stale) != 4 {
		t.Fatalf("staleRoutes = %d routes, want 4 (h3's, h2's through the old gateway, h2's on the old device, the default):\n%s", len(stale), strings.Join(got, "\n"))
	}
	for _, r := range stale {
		if r.Protocol != backend.RouteProtocol {
			t.Errorf("a route the agent does not own is called stale: %s", r)
		}
		if p, ok := backend.PrefixOf(r.Dst); ok && p == h2.Subnet && r.LinkIndex == ext && r.Gw.Equal(net.ParseIP("192.168.77.2")) {
			t.Errorf("the current peer's route is called stale: %s", r)
		}
	}
	if got := staleRoutes(nil, want); len(got) != 0 {
		t.Errorf("staleRoutes(nothing owned) = %v", got)
	}
}

// TestStaleRoutesKeepUnreachable: a network's table also holds the agent's
// unreachable default (proto 77, no device); host-gw's Reconcile must not
// take it for a peer route that went stale.
func TestStaleRoutesKeepUnreachable(t *testing.T) {
	unreach := netlink.Route{Table: 1001, Type: unix.RTN_UNREACHABLE, Protocol: backend.RouteProtocol}
	blackhole := netlink.Route{Table: 1001, Type: unix.RTN_BLACKHOLE, Protocol: backend.RouteProtocol}
	h3 := *peerRoute(2, 1001, lease("10.10.3.0/24", "192.168.77.3", "host-gw"))
	h3.Type = unix.RTN_UNICAST
	stale := staleRoutes([]netlink.Route{unreach, blackhole, h3}, nil)
	if len(stale) != 1 || stale[0].Dst.String() != "10.10.3.0/24" {
		t.Errorf("staleRoutes = %v, want only h3's unicast route", stale)
	}
}

func TestPeerRouteInTable(t *testing.T) {
	r := peerRoute(7, 1003, lease("10.10.3.0/24", "192.168.77.3", "host-gw"))
	if r.Table != 1003 || r.Protocol != backend.RouteProtocol {
		t.Errorf("peerRoute table %d proto %d, want table 1003 proto 77", r.Table, r.Protocol)
	}
}
