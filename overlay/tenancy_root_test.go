package overlay

import (
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/vishvananda/netlink"
)

// tenancyNetns equips a namespace of the test's own (nstest.Netns) with a
// tenancyKernel bound to it (netlink handle and nftables connections), and a
// veth pair eth0/eth1 to hang routes on; ip runs `ip -n <ns> ARGS`.
func tenancyNetns(t *testing.T, name string) (*netlinkTenancy, func(args ...string) string) {
	t.Helper()
	ns := nstest.NsHandle(t, name)
	h := nstest.Handle(t, name)
	la := netlink.NewLinkAttrs()
	la.Name = "eth0"
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth1"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"eth0", "eth1"} {
		l, err := h.LinkByName(n)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	k := &netlinkTenancy{h: h, nft: func() (*nftables.Conn, error) { return nftables.New(nftables.WithNetNSFd(int(ns))) }, log: slog.New(slog.DiscardHandler)}
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	return k, ip
}

func nftRuleset(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return string(out)
}

// TestTenancyInKernel installs two networks' isolation in a namespace that
// holds leftovers of other runs, and reads it back with ip and nft: each
// network's rule and unreachable default, the zone table, nothing of the
// leftovers that the agent owns, everything that it does not. A second
// ensure adds no duplicate; a single-network agent's reset removes it all.
func TestTenancyInKernel(t *testing.T) {
	ns := nstest.Netns(t, "tenancy")
	k, ip := tenancyNetns(t, ns)
	red, blue, _ := testTenancies(t)
	// Leftovers: an earlier run's network green (rule, table 1003), an
	// earlier single-network run's route in main and its admission table,
	// a vxlan network that is gone; and what is not the agent's.
	ip("rule", "add", "iif", "flannel.3", "lookup", "1003", "priority", "1000", "proto", "77")
	ip("rule", "add", "iif", "eth1", "lookup", "2000", "priority", "1000") // an administrator's
	ip("route", "add", "10.10.3.0/24", "dev", "eth0", "table", "1003", "proto", "77")
	ip("route", "add", "10.10.9.0/24", "dev", "eth0", "proto", "77")
	ip("route", "add", "10.10.8.0/24", "dev", "eth0", "proto", "static")
	ip("route", "add", "10.10.7.0/24", "dev", "eth0", "table", "2000")
	for _, tbl := range []string{"overlaylab-vxlan", "overlaylab-vxlan-green", "someone-else"} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "table", "inet", tbl).CombinedOutput(); err != nil {
			t.Fatalf("nft add table %s: %v\n%s", tbl, err, out)
		}
	}

	plan := []tenancy{red, blue}
	if err := k.reset(plan); err != nil {
		t.Fatalf("reset: %v", err)
	}
	for _, x := range plan {
		if err := k.ensure(x); err != nil {
			t.Fatalf("ensure %s: %v", x.name, err)
		}
		if err := k.ensure(x); err != nil { // as every reconcile does
			t.Fatalf("ensure %s again: %v", x.name, err)
		}
	}
	// The devices do not exist here: the kernel keeps such rules, marked
	// [detached], and applies them once the device appears.
	rules := strings.ReplaceAll(ip("rule", "show"), " [detached]", "")
	for _, want := range []string{"1000:\tfrom all iif flannel.1 lookup 1001 proto 77", "1000:\tfrom all iif fl-blue lookup 1002 proto 77", "1000:\tfrom all iif eth1 lookup 2000"} {
		if strings.Count(rules, want) != 1 {
			t.Errorf("rules hold %q %d times, want once:\n%s", want, strings.Count(rules, want), rules)
		}
	}
	if strings.Contains(rules, "flannel.3") {
		t.Errorf("green's rule survived:\n%s", rules)
	}
	for _, tbl := range []string{"1001", "1002"} {
		if got := ip("route", "show", "table", tbl); strings.TrimSpace(got) != "unreachable default proto 77" {
			t.Errorf("table %s = %q, want only the unreachable default", tbl, got)
		}
	}
	if got := ip("route", "show", "table", "1003"); strings.TrimSpace(got) != "" {
		t.Errorf("green's table still holds %q", got)
	}
	main := ip("route", "show")
	if strings.Contains(main, "10.10.9.0") || !strings.Contains(main, "10.10.8.0/24 dev eth0 proto static") {
		t.Errorf("main after reset (want the agent's route gone, the static one kept):\n%s", main)
	}
	if got := ip("route", "show", "table", "2000"); !strings.Contains(got, "10.10.7.0/24") {
		t.Errorf("an administrator's table lost its route: %q", got)
	}
	rs := nftRuleset(t, ns)
	for _, want := range []string{
		"table inet overlaylab-tenants {",
		"type filter hook prerouting priority raw; policy accept;",
		`iifname "flannel.1" ct zone set 1001`,
		`iifname "fl-blue" ct zone set 1002`,
		"table inet someone-else",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	for _, gone := range []string{"table inet overlaylab-vxlan {", "overlaylab-vxlan-green"} {
		if strings.Contains(rs, gone) {
			t.Errorf("ruleset still holds %q:\n%s", gone, rs)
		}
	}

	// A restart with the same networks replaces the zone table (no
	// duplicate rules) and keeps the rules.
	if err := k.reset(plan); err != nil {
		t.Fatalf("second reset: %v", err)
	}
	if rs := nftRuleset(t, ns); strings.Count(rs, "ct zone set 1001") != 1 {
		t.Errorf("after a second reset:\n%s", rs)
	}
	if r := ip("rule", "show"); !strings.Contains(r, "iif flannel.1 [detached] lookup 1001") {
		t.Errorf("a second reset removed a wanted rule:\n%s", r)
	}

	// The host goes back to a single-network agent: all of it goes.
	if err := k.reset(nil); err != nil {
		t.Fatalf("reset(nil): %v", err)
	}
	if r := ip("rule", "show"); strings.Contains(r, "proto 77") || !strings.Contains(r, "iif eth1 lookup 2000") {
		t.Errorf("rules after the single-network reset:\n%s", r)
	}
	for _, tbl := range []string{"1001", "1002"} {
		if got := ip("route", "show", "table", tbl); strings.TrimSpace(got) != "" {
			t.Errorf("table %s after the single-network reset: %q", tbl, got)
		}
	}
	if rs := nftRuleset(t, ns); strings.Contains(rs, "overlaylab-tenants") || !strings.Contains(rs, "someone-else") {
		t.Errorf("ruleset after the single-network reset:\n%s", rs)
	}
	// With nothing of a multi-network run left, a single-network reset
	// touches nothing at all, not even the admission table of its own.
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "overlaylab-vxlan-x").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := k.reset(nil); err != nil {
		t.Fatal(err)
	}
	if rs := nftRuleset(t, ns); !strings.Contains(rs, "overlaylab-vxlan-x") {
		t.Errorf("a single-network reset without multi-network rules acted anyway:\n%s", rs)
	}
}

// TestTenancyHostGW: a host-gw network's rule matches the external
// interface and its Network, and its zone rule the same.
func TestTenancyHostGW(t *testing.T) {
	ns := nstest.Netns(t, "tenhgw")
	k, ip := tenancyNetns(t, ns)
	_, _, hgw := testTenancies(t)
	if err := k.reset([]tenancy{hgw}); err != nil {
		t.Fatal(err)
	}
	if err := k.ensure(hgw); err != nil {
		t.Fatal(err)
	}
	if r := ip("rule", "show"); !strings.Contains(r, "1000:\tfrom all to 10.30.0.0/16 iif eth0 lookup 1003 proto 77") {
		t.Errorf("rules:\n%s", r)
	}
	if rs := nftRuleset(t, ns); !strings.Contains(rs, `iifname "eth0" ip daddr 10.30.0.0/16 ct zone set 1003`) {
		t.Errorf("ruleset:\n%s", rs)
	}
}
