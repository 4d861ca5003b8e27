package vxlan

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// tenantLease is host i's lease in a network with vni (every network of a
// host publishes the same VTEP MAC: it comes from the PublicIP).
func tenantLease(i byte, vni int) subnet.Lease {
	l := vxlanLease(i)
	l.Attrs.BackendData, _ = json.Marshal(Data{VNI: vni, VtepMAC: vtepMAC(l.Attrs.PublicIP).String()})
	return l
}

// routesIn lists table's IPv4 routes as "DST dev NAME [via GW] proto N".
func routesIn(t *testing.T, in func(func() error), table int) string {
	t.Helper()
	var b strings.Builder
	in(func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range rs {
			dev := "-"
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			b.WriteString(r.Dst.String() + " dev " + dev)
			if r.Gw != nil {
				b.WriteString(" via " + r.Gw.String())
			}
			b.WriteString(" proto " + r.Protocol.String() + "\n")
		}
		return nil
	})
	return b.String()
}

// TestTwoNetworksOwnTables runs two vxlan networks with the same CIDR in
// one namespace, as one multi-network agent does: each device's routes
// sit in its network's table only (never in main), each network has its
// own admission table matching its VNI, and each Reconcile keeps its
// Network route, restores it, and touches no other table.
func TestTwoNetworksOwnTables(t *testing.T) {
	ns := nstest.Netns(t, "vxten")
	in := unitNetns(t, ns)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.168.90.1")
	start := func(network string, vni, table int) backend.Backend {
		cfg, err := config.Parse([]byte(`{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":` + strconv.Itoa(vni) + `}}`))
		if err != nil {
			t.Fatal(err)
		}
		var be backend.Backend
		in(func() error {
			ifc, err := net.InterfaceByName("ext0")
			if err != nil {
				return err
			}
			be, err = New(cfg, backend.External{Iface: ifc, PublicIP: ip, LocalIP: ip}, &backend.Metrics{}, backend.Options{Network: network, Table: table})
			if err != nil {
				return err
			}
			if _, err := be.Prepare(ctx); err != nil {
				return err
			}
			// Both networks lease the same subnet here: they may.
			if err := be.Configure(ctx, vxlanLease(1)); err != nil {
				return err
			}
			return be.AddPeer(ctx, tenantLease(2, vni))
		})
		return be
	}
	red, blue := start("red", 1, 1001), start("blue", 2, 1002)

	if main := routesIn(t, in, 254); strings.Contains(main, "10.10.") || strings.Contains(main, "flannel") {
		t.Errorf("the main table holds overlay routes:\n%s", main)
	}
	for _, tc := range []struct {
		table int
		dev   string
	}{{1001, "flannel.1"}, {1002, "flannel.2"}} {
		got := routesIn(t, in, tc.table)
		for _, want := range []string{
			"10.10.0.0/16 dev " + tc.dev + " proto 77\n",
			"10.10.2.0/24 dev " + tc.dev + " via 10.10.2.0 proto 77\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("table %d lacks %q:\n%s", tc.table, want, got)
			}
		}
		if strings.Count(got, "\n") != 2 {
			t.Errorf("table %d holds more than its two routes:\n%s", tc.table, got)
		}
	}

	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	rules := string(out)
	for _, want := range []string{"table inet overlaylab-vxlan-red", "table inet overlaylab-vxlan-blue",
		"@th,96,24 0x1 ip saddr != @peers", "@th,96,24 0x2 ip saddr != @peers"} {
		if !strings.Contains(rules, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rules)
		}
	}
	if strings.Contains(rules, "table inet overlaylab-vxlan {") {
		t.Errorf("a multi-network backend made the single-network admission table:\n%s", rules)
	}

	// A stale route of each network's, and red's Network route gone.
	in(func() error {
		for _, tc := range []struct {
			dev   string
			table int
		}{{"flannel.1", 1001}, {"flannel.2", 1002}} {
			l, err := netlink.LinkByName(tc.dev)
			if err != nil {
				return err
			}
			_, dst, _ := net.ParseCIDR("10.10.9.0/24")
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.10.9.0"), Flags: int(netlink.FLAG_ONLINK), Table: tc.table, Protocol: backend.RouteProtocol}); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("flannel.1")
		return netlink.RouteDel(networkRoute(l.Attrs().Index, 1001, netip.MustParsePrefix("10.10.0.0/16")))
	})
	in(func() error { return red.Reconcile(ctx) })
	if got := routesIn(t, in, 1001); strings.Contains(got, "10.10.9.0") || !strings.Contains(got, "10.10.0.0/16 dev flannel.1") {
		t.Errorf("red's table after its Reconcile (want the stale route gone, the Network route back):\n%s", got)
	}
	if got := routesIn(t, in, 1002); !strings.Contains(got, "10.10.9.0/24 dev flannel.2") {
		t.Errorf("red's Reconcile touched blue's table:\n%s", got)
	}
	in(func() error { return blue.Reconcile(ctx) })
	if got := routesIn(t, in, 1002); strings.Contains(got, "10.10.9.0") || !strings.Contains(got, "10.10.0.0/16 dev flannel.2") || !strings.Contains(got, "10.10.2.0/24") {
		t.Errorf("blue's table after its Reconcile:\n%s", got)
	}
}
