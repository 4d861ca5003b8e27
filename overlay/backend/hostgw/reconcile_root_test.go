package hostgw

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// unitNetns equips a namespace of the test's own (nstest.Netns) with ext0
// (192.168.90.1/24, one end of a veth pair: this kernel has no dummy links);
// fn runs inside.
func unitNetns(t *testing.T, name string) func(fn func() error) {
	t.Helper()
	in := func(fn func() error) {
		t.Helper()
		if err := nsutil.DoNamed(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "ext0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ext1"}); err != nil {
			return err
		}
		for _, n := range []string{"ext0", "ext1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("ext0")
		addr, _ := netlink.ParseAddr("192.168.90.1/24")
		return netlink.AddrAdd(l, addr)
	})
	return in
}

// TestReconcileAfterRestart: a restarted agent that sees one of two former
// peers removes the other's route, keeps the current one's, and leaves
// routes it does not own alone, even inside the Network.
func TestReconcileAfterRestart(t *testing.T) {
	in := unitNetns(t, nstest.Netns(t, "hostgw"))
	cfg, err := config.Parse([]byte(`{"Network":"10.10.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h2, h3 := lease("10.10.2.0/24", "192.168.90.2", "host-gw"), lease("10.10.3.0/24", "192.168.90.3", "host-gw")
	startBackend(in, cfg, backend.Options{}, h2, h3)
	in(func() error {
		l, err := netlink.LinkByName("ext0")
		if err != nil {
			return err
		}
		for _, d := range []string{"10.10.250.0/24", "10.99.0.0/16"} {
			_, dst, _ := net.ParseCIDR(d)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP("192.168.90.4")}); err != nil {
				return err
			}
		}
		return nil
	})
	if got := routes(t, in); !strings.Contains(got, "10.10.3.0/24 via 192.168.90.3 proto 77") {
		t.Fatalf("h3 not routed before the restart:\n%s", got)
	}

	be := startBackend(in, cfg, backend.Options{}, h2)
	in(func() error { return be.Reconcile(ctx) })
	got := routes(t, in)
	if strings.Contains(got, "10.10.3.0/24") {
		t.Errorf("h3's route is still there after Reconcile:\n%s", got)
	}
	for _, kept := range []string{"10.10.2.0/24 via 192.168.90.2 proto 77", "10.10.250.0/24 via 192.168.90.4 proto 3", "10.99.0.0/16 via 192.168.90.4 proto 3"} {
		if !strings.Contains(got, kept) {
			t.Errorf("%q is gone after Reconcile:\n%s", kept, got)
		}
	}
}

// startBackend plays an agent starting in the namespace: a host-gw backend
// on ext0 (192.168.90.1) with options o, given peers.
func startBackend(in func(func() error), cfg *config.Config, o backend.Options, peers ...subnet.Lease) backend.Backend {
	var be backend.Backend
	in(func() error {
		ifc, err := net.InterfaceByName("ext0")
		if err != nil {
			return err
		}
		ip := netip.MustParseAddr("192.168.90.1")
		if be, err = New(cfg, backend.External{Iface: ifc, PublicIP: ip, LocalIP: ip}, &backend.Metrics{}, o); err != nil {
			return err
		}
		for _, p := range peers {
			if err := be.AddPeer(context.Background(), p); err != nil {
				return err
			}
		}
		return nil
	})
	return be
}

func routes(t *testing.T, in func(func() error)) string {
	t.Helper()
	var b strings.Builder
	in(func() error {
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Gw != nil {
				fmt.Fprintf(&b, "%s via %s proto %d\n", r.Dst, r.Gw, int(r.Protocol))
			}
		}
		return nil
	})
	return b.String()
}

// TestReconcileInTable: a host-gw network of a multi-network agent routes
// its peers in its own table (none in main), and its Reconcile keeps the
// table's unreachable default, which the agent's tenancy put there.
func TestReconcileInTable(t *testing.T) {
	in := unitNetns(t, nstest.Netns(t, "hostgw"))
	cfg, err := config.Parse([]byte(`{"Network":"10.10.0.0/16","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h2, h3 := lease("10.10.2.0/24", "192.168.90.2", "host-gw"), lease("10.10.3.0/24", "192.168.90.3", "host-gw")
	be := startBackend(in, cfg, backend.Options{Network: "red", Table: 1001}, h2, h3)
	in(func() error {
		if err := be.RemovePeer(ctx, h3); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{Table: 1001, Type: unix.RTN_UNREACHABLE, Protocol: backend.RouteProtocol,
			Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}})
	})
	if got := routes(t, in); strings.Contains(got, "10.10.") {
		t.Errorf("main table holds a network's routes:\n%s", got)
	}
	in(func() error { return be.Reconcile(ctx) })
	var table []string
	in(func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 1001}, netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			table = append(table, fmt.Sprintf("%s type %d via %s proto %d", r.Dst, r.Type, r.Gw, int(r.Protocol)))
		}
		return err
	})
	got := strings.Join(table, "\n")
	if len(table) != 2 || !strings.Contains(got, "10.10.2.0/24 type 1 via 192.168.90.2 proto 77") ||
		!strings.Contains(got, fmt.Sprintf("type %d", unix.RTN_UNREACHABLE)) {
		t.Errorf("table 1001 after Reconcile = \n%s\nwant h2's route and the unreachable default", got)
	}
}
