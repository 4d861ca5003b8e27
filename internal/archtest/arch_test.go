// Package archtest holds the tree's layering rules as tests (docs/
// ARCHITECTURE.md draws them): what the parser may link, what the lab may
// import, and that nothing imports upward.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/overlaylab/overlaylab/"

// goList runs `go list` with args and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, stderr)
	}
	return strings.Fields(string(out))
}

// TestParserLinksNoSystem: `overlaylab validate` needs no root, so the
// scenario parser must not link the etcd server, nftables or netlink.
func TestParserLinksNoSystem(t *testing.T) {
	for _, dep := range goList(t, "-deps", module+"scenarios") {
		for _, banned := range []string{"go.etcd.io/etcd/server", "github.com/google/nftables", "github.com/vishvananda/netlink"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("scenarios depends on %s", dep)
			}
		}
	}
}

// TestImports: the rules of the one-way flow, package by package.
func TestImports(t *testing.T) {
	rules := []struct {
		pkgs   string   // pattern for go list
		banned []string // a package, or with /... a package and all below it
		why    string
	}{
		{module + "scenarios/...", []string{"topo/...", "pcapcheck/..."}, "scenarios asks the lab, never its building blocks"},
		{module + "lab/...", []string{"overlay/backend/...", "overlay", "scenarios/...", "bench/...", "cmd/..."}, "the lab knows the overlay's formats, not the agent"},
		{module + "overlay/...", []string{"lab/...", "topo/...", "pcapcheck/...", "scenarios/...", "bench/...", "internal/cni", "internal/linkem", "cmd/..."}, "the agent knows nothing of the lab"},
		{module + "topo/...", []string{"lab/...", "overlay/...", "scenarios/...", "bench/...", "pcapcheck/..."}, "topo is a building block"},
		{module + "pcapcheck/...", []string{"lab/...", "topo/...", "scenarios/...", "bench/..."}, "pcapcheck is a building block"},
		{module + "scenarios/report", []string{"lab/...", "scenarios/...", "overlay/..."}, "a report is data"},
	}
	for _, r := range rules {
		for _, line := range goList(t, "-f", `{{.ImportPath}}:{{join .Imports ","}}`, r.pkgs) {
			pkg, imports, _ := strings.Cut(line, ":")
			for _, imp := range strings.Split(imports, ",") {
				rel, ok := strings.CutPrefix(imp, module)
				if !ok {
					continue
				}
				for _, b := range r.banned {
					if tree, ok := strings.CutSuffix(b, "/..."); ok && (rel == tree || strings.HasPrefix(rel, tree+"/")) || rel == b {
						t.Errorf("%s imports %s: %s", strings.TrimPrefix(pkg, module), rel, r.why)
					}
				}
			}
		}
	}
}
