package topo

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/internal/nstest"
)

// TestTenantBridgeRoot: the tenant's bridge is up with its address and no
// prefix route in main, its subnet routed in the tenant's table, a rule
// sending the bridge's traffic there, and the zone rule's table in
// nftables; the link helpers see and change it.
func TestTenantBridgeRoot(t *testing.T) {
	ns := nstest.Netns(t, "topo")
	b := TenantBridge{Name: "br-red", Addr: netip.MustParsePrefix("10.20.3.1/24"), MTU: 1400,
		MAC: net.HardwareAddr{0x02, 0x4f, 0, 0, 0, 1}, Table: 101, Zone: 7, NftName: "ol-red"}
	if err := CreateTenantBridge(ns, b); err != nil {
		t.Fatal(err)
	}
	h := nstest.Handle(t, ns)
	l, err := h.LinkByName(b.Name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != 1400 || l.Attrs().HardwareAddr.String() != b.MAC.String() {
		t.Errorf("bridge: %+v", l.Attrs())
	}
	main, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(main) != 0 {
		t.Errorf("routes in main: %v", main)
	}
	tenant, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 101}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(tenant) != 1 || tenant[0].Dst.String() != "10.20.3.0/24" || tenant[0].LinkIndex != l.Attrs().Index {
		t.Errorf("routes in table 101: %v", tenant)
	}
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rules {
		found = found || (r.IifName == b.Name && r.Table == 101)
	}
	if !found {
		t.Errorf("no rule iif %s lookup 101 in %v", b.Name, rules)
	}
	err = WithNft(ns, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		if len(tables) != 1 || tables[0].Name != b.NftName {
			t.Errorf("nftables tables: %v", tables)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := CreateTenantBridge(ns, TenantBridge{Name: "br-x", Table: 1, Zone: 1}); err == nil {
		t.Error("a tenant bridge without a subnet was made")
	}

	if err := SetMTU(ns, b.Name, 1300); err != nil {
		t.Fatal(err)
	}
	if mtu, err := LinkMTU(ns, b.Name); err != nil || mtu != 1300 {
		t.Errorf("LinkMTU = %d, %v; want 1300", mtu, err)
	}
	if err := SetLinkUp(ns, b.Name, false); err != nil {
		t.Fatal(err)
	}
	if l, _ := h.LinkByName(b.Name); l.Attrs().Flags&net.FlagUp != 0 {
		t.Error("bridge still up")
	}
	if _, err := LinkMTU(ns, "nosuch0"); err == nil {
		t.Error("LinkMTU of a missing device: no error")
	}
	probe := netip.MustParsePrefix("10.20.3.9/32")
	if err := AddAddress(ns, b.Name, probe); err != nil {
		t.Fatal(err)
	}
	if err := DelAddress(ns, b.Name, probe); err != nil {
		t.Fatal(err)
	}
	if err := DelAddress(ns, b.Name, probe); err != nil {
		t.Errorf("deleting a missing address: %v", err)
	}
}

// TestOffloadsRoot: switching tx checksums off on a veth shows in its
// features.
func TestOffloadsRoot(t *testing.T) {
	ns := nstest.Netns(t, "topo-off")
	h := nstest.Handle(t, ns)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v0"}, PeerName: "v1"}); err != nil {
		t.Fatal(err)
	}
	changed, err := SetOffloads(ns, "v0", map[Offload]bool{OffloadTxChecksum: false})
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) == 0 {
		t.Fatal("nothing changed")
	}
	have, err := Offloads(ns, "v0")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range changed {
		if have[name] {
			t.Errorf("%s still on", name)
		}
	}
	if _, err := SetOffloads(ns, "v0", map[Offload]bool{"bogus": true}); err == nil {
		t.Error("an unknown offload was accepted")
	}
}
