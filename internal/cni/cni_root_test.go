package cni

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// pluginDir is where `make cni-plugins` puts the plugins, seen from here.
const pluginDir = "../../bin/cni"

// fakeHost is a throwaway "node": a host namespace with its own subnet.env
// and CNI data dir, and container namespaces to attach to it.
type fakeHost struct {
	tag        string // in the names of its namespaces
	hostPath   string
	subnetFile string
	runner     *Runner
	conf       FlannelConf
}

// newFakeHost makes the host namespace and writes subnet.env; cleanup
// removes every namespace it made.
func newFakeHost(t *testing.T, tag, subnetEnv string) *fakeHost {
	t.Helper()
	nstest.SkipUnlessRoot(t, "creates network namespaces")
	r := &Runner{PluginDir: pluginDir, DataDir: filepath.Join(t.TempDir(), "cni")}
	if err := r.CheckPlugins(); err != nil {
		t.Skipf("%v", err)
	}
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(subnetFile, []byte(subnetEnv), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{
		tag:        tag,
		subnetFile: subnetFile,
		runner:     r,
		conf:       FlannelConf{Network: "ol-cnitest", SubnetFile: subnetFile},
	}
	h.hostPath = h.netns(t, "h")
	return h
}

// netns creates a throwaway namespace for the host's tag and suffix and
// returns its path.
func (h *fakeHost) netns(t *testing.T, suffix string) string {
	t.Helper()
	return filepath.Join(nsutil.RunDir, nstest.Netns(t, "cni"+h.tag+"-"+suffix))
}

func (h *fakeHost) add(t *testing.T, ctrPath, id string) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.runner.Add(ctx, h.hostPath, ctrPath, id, "eth0", h.conf)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (h *fakeHost) del(t *testing.T, ctrPath, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.runner.Del(ctx, h.hostPath, ctrPath, id, "eth0", h.conf); err != nil {
		t.Fatal(err)
	}
}

// link returns the named link in the namespace at path (nil if absent) with
// its IPv4 addresses.
func link(t *testing.T, nsPath, name string) (netlink.Link, []netip.Prefix) {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, nil
		}
		t.Fatalf("link %s in %s: %v", name, nsPath, err)
	}
	addrs, err := nh.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return l, out
}

// tree lists the files under dir with their sizes and times ("" for a
// missing dir), to show that a run left it alone.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %s\n", p, fi.Size(), fi.ModTime())
		return nil
	})
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// leftovers lists what CNI state survives in a data dir: host-local's
// reservations (files named by address), the flannel plugin's delegate
// configs and libcni's cached results. host-local's own bookkeeping (its
// lock and last-reserved-address files) is no reservation.
func leftovers(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dataDir, p)
		switch {
		case strings.HasPrefix(rel, "networks/"):
			if _, err := netip.ParseAddr(d.Name()); err == nil {
				out = append(out, rel)
			}
		default:
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func ping(t *testing.T, fromNS string, to netip.Addr) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", filepath.Base(fromNS),
		"ping", "-c", "3", "-i", "0.2", "-W", "2", to.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", to, filepath.Base(fromNS), err, out)
	}
	return nil
}

// TestAddPingDel: the flannel plugin, run in a fake host's namespace, attaches
// two containers to a cni0 bridge built from that host's subnet.env; they
// reach each other; DEL takes every trace away, also for a container whose
// namespace is already gone; nothing lands in the root namespace or
// /var/lib/cni.
func TestAddPingDel(t *testing.T) {
	h := newFakeHost(t, "a", "FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
	varLib := tree(t, "/var/lib/cni")
	rootCNI0, _ := link(t, "/proc/self/ns/net", DefaultBridge)

	c1, c2 := h.netns(t, "c1"), h.netns(t, "c2")
	r1 := h.add(t, c1, "cnitest-c1")
	r2 := h.add(t, c2, "cnitest-c2")
	subnet := netip.MustParsePrefix("10.10.7.0/24")
	gw := netip.MustParseAddr("10.10.7.1")
	for _, r := range []*Result{r1, r2} {
		if !subnet.Contains(r.Address.Addr()) || r.Address.Bits() != 24 || r.Address.Addr() == gw {
			t.Errorf("container address %s, want a host address in %s", r.Address, subnet)
		}
		if r.Gateway != gw || r.Bridge != "cni0" || r.ContainerIf != "eth0" || r.HostVeth == "" || r.MAC == "" {
			t.Errorf("result %+v: want gateway %s, bridge cni0, container eth0, a host veth and a MAC", *r, gw)
		}
	}
	if r1.Address == r2.Address {
		t.Fatalf("both containers got %s", r1.Address)
	}

	// cni0 in the host namespace, with the subnet's first address and
	// FLANNEL_MTU; the host ends of the veths there too.
	br, addrs := link(t, h.hostPath, "cni0")
	if br == nil {
		t.Fatal("no cni0 in the host namespace")
	}
	if br.Type() != "bridge" || br.Attrs().MTU != 1400 {
		t.Errorf("cni0: type %s MTU %d, want a bridge with MTU 1400", br.Type(), br.Attrs().MTU)
	}
	if len(addrs) != 1 || addrs[0] != netip.MustParsePrefix("10.10.7.1/24") {
		t.Errorf("cni0 addresses %v, want [10.10.7.1/24]", addrs)
	}
	for _, r := range []*Result{r1, r2} {
		if v, _ := link(t, h.hostPath, r.HostVeth); v == nil || v.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("host veth %s missing or not on cni0", r.HostVeth)
		}
	}
	if l, _ := link(t, "/proc/self/ns/net", DefaultBridge); rootCNI0 == nil && l != nil {
		t.Error("cni0 appeared in the root namespace")
	}

	// Each container: eth0 with its address and FLANNEL_MTU, lo up.
	for _, c := range []struct {
		path string
		r    *Result
	}{{c1, r1}, {c2, r2}} {
		eth, addrs := link(t, c.path, "eth0")
		if eth == nil {
			t.Fatalf("no eth0 in %s", c.path)
		}
		if eth.Attrs().MTU != 1400 {
			t.Errorf("%s eth0 MTU %d, want FLANNEL_MTU 1400", filepath.Base(c.path), eth.Attrs().MTU)
		}
		if len(addrs) != 1 || addrs[0] != c.r.Address {
			t.Errorf("%s eth0 addresses %v, want [%s]", filepath.Base(c.path), addrs, c.r.Address)
		}
		if lo, _ := link(t, c.path, "lo"); lo == nil || lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: lo is not up (the loopback plugin ran?)", filepath.Base(c.path))
		}
	}

	if err := ping(t, c1, r2.Address.Addr()); err != nil {
		t.Error(err)
	}
	if err := ping(t, c2, r1.Address.Addr()); err != nil {
		t.Error(err)
	}

	// DEL c1 normally, and twice (DEL is idempotent). c2's namespace goes
	// first, as when a lab is torn down: DEL still frees its address.
	h.del(t, c1, "cnitest-c1")
	h.del(t, c1, "cnitest-c1")
	if err := nsutil.Delete(filepath.Base(c2)); err != nil {
		t.Fatal(err)
	}
	h.del(t, c2, "cnitest-c2")

	if left := leftovers(t, h.runner.DataDir); len(left) > 0 {
		t.Errorf("CNI state left in %s after DEL: %v", h.runner.DataDir, left)
	}
	for _, r := range []*Result{r1, r2} {
		if v, _ := link(t, h.hostPath, r.HostVeth); v != nil {
			t.Errorf("host veth %s left after DEL", r.HostVeth)
		}
	}
	if eth, _ := link(t, c1, "eth0"); eth != nil {
		t.Error("c1's eth0 left after DEL")
	}
	if after := tree(t, "/var/lib/cni"); after != varLib {
		t.Errorf("/var/lib/cni changed:\nbefore:\n%s\nafter:\n%s", varLib, after)
	}

}

// TestMasqueradeFollowsSubnetEnv: when the agent does not masquerade
// (FLANNEL_IPMASQ=false), the flannel plugin has the bridge do it, with a
// NAT rule for the container in the host namespace that DEL removes.
func TestMasqueradeFollowsSubnetEnv(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables on PATH (the bridge plugin's masquerading uses it)")
	}
	h := newFakeHost(t, "m", "FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
	c1 := h.netns(t, "c1")
	natRules := func() string {
		out, err := exec.Command("ip", "netns", "exec", filepath.Base(h.hostPath), "iptables", "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -t nat -S in the host namespace: %v\n%s", err, out)
		}
		return string(out)
	}
	r := h.add(t, c1, "cnitest-m1")
	src := "-s " + netip.PrefixFrom(r.Address.Addr(), 32).String()
	if rules := natRules(); !strings.Contains(rules, src) || !strings.Contains(rules, "MASQUERADE") {
		t.Errorf("no masquerading for %s in the host namespace:\n%s", r.Address.Addr(), rules)
	}
	h.del(t, c1, "cnitest-m1")
	if rules := natRules(); strings.Contains(rules, src) {
		t.Errorf("NAT rule for %s left after DEL:\n%s", r.Address.Addr(), rules)
	}
	if left := leftovers(t, h.runner.DataDir); len(left) > 0 {
		t.Errorf("CNI state left after DEL: %v", left)
	}
}

// TestFailedAddLeavesNothing: when the flannel plugin fails (a subnet.env
// without FLANNEL_MTU), Add says why and runs DEL for what it had added (the
// loopback attachment before it), so no CNI state is left.
func TestFailedAddLeavesNothing(t *testing.T) {
	h := newFakeHost(t, "f", "FLANNEL_NETWORK=10.10.0.0/16\nFLANNEL_SUBNET=10.10.8.1/24\nFLANNEL_IPMASQ=true\n")
	c1 := h.netns(t, "c1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := h.runner.Add(ctx, h.hostPath, c1, "cnitest-f1", "eth0", h.conf)
	if err == nil || !strings.Contains(err.Error(), "FLANNEL_MTU") || !strings.Contains(err.Error(), h.subnetFile) {
		t.Fatalf("got %v, want an error naming %s and the missing FLANNEL_MTU", err, h.subnetFile)
	}
	if left := leftovers(t, h.runner.DataDir); len(left) > 0 {
		t.Errorf("CNI state left after a failed Add: %v", left)
	}
}
