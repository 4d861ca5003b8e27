package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
)

// overlaylabBinary is $OVERLAYLAB_BIN or a fresh build of cmd/overlaylab.
func overlaylabBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("OVERLAYLAB_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(t.TempDir(), "overlaylab")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/overlaylab/overlaylab/cmd/overlaylab").CombinedOutput()
	if err != nil {
		t.Fatalf("build overlaylab: %v\n%s", err, out)
	}
	return bin
}

// TestDataPlaneRoot runs the data-plane bench for one short round on the
// baseline and vxlan, plus a configuration whose agents refuse to start,
// which must be reported and not stop the others.
func TestDataPlaneRoot(t *testing.T) {
	nstest.SkipUnlessRoot(t, "builds network namespaces")
	if testing.Short() {
		t.Skip("builds three labs")
	}
	cfgs, err := SelectConfigs([]string{CfgBaseline, CfgVXLAN})
	if err != nil {
		t.Fatal(err)
	}
	cfgs = append(cfgs, Config{Name: "udp-bogus", Backend: "udp", AgentArgs: []string{"--udp-mode=bogus"}, labSuffix: "bad"})
	var progress bytes.Buffer
	o := Options{
		Configs: cfgs, Rounds: 1, Duration: time.Second, Probes: 50,
		StateRoot: t.TempDir(), Binary: overlaylabBinary(t), LabPrefix: "bt", Command: "test", Progress: &progress,
	}
	labs := []string{"btbase", "btvxl", "btbad"}
	for _, l := range labs {
		if lab.Exists(o.StateRoot, l) || nsExists(l) {
			t.Skipf("lab %s exists already; not touching it", l)
		}
	}
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(t.Context(), o)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	WriteTable(&table, rep)
	t.Logf("\n%s", table.String())

	for _, name := range []string{CfgBaseline, CfgVXLAN} {
		c := rep.Config(name)
		if c == nil || !c.OK() {
			t.Fatalf("%s did not run: %+v", name, c)
		}
		if len(c.Rounds) != 1 || len(c.Rounds[0].Errors) > 0 {
			t.Errorf("%s rounds: %+v", name, c.Rounds)
		}
		for _, m := range []string{MTCP1, MTCP4, MRTT50, MRTT99, MRTT1C} {
			if v, ok := c.Median(m); !ok || v <= 0 {
				t.Errorf("%s %s = %v (measured: %v); want > 0", name, m, v, ok)
			}
		}
		if v, ok := c.Median(MRSS); !ok || v < 1 {
			t.Errorf("%s agent RSS = %v MiB; want a real figure", name, v)
		}
		if v, ok := c.Median(MCPU); !ok || v < 0 {
			t.Errorf("%s agent CPU = %v; want ≥ 0", name, v)
		}
	}
	if p50, _ := rep.Config(CfgVXLAN).Median(MRTT50); p50 > 100000 {
		t.Errorf("vxlan RTT p50 %v µs is absurd", p50)
	}
	// The one-CPU probe gave every thread its CPUs back.
	for _, tid := range tasks(os.Getpid()) {
		var after unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &after); err == nil && after != before {
			t.Errorf("thread %d left with CPU mask %v, was %v", tid, after, before)
		}
	}
	bad := rep.Config("udp-bogus")
	if bad == nil || bad.OK() || !strings.Contains(bad.Error, "bogus") {
		t.Errorf("the bogus configuration should be reported with its reason: %+v", bad)
	}
	if len(rep.Ratios) == 0 {
		t.Error("no ratios")
	}
	if !strings.Contains(Markdown(rep), "| vxlan |") {
		t.Error("markdown lacks the vxlan row")
	}

	// Everything is gone: namespaces, state, processes.
	for _, l := range labs {
		if nsExists(l) {
			t.Errorf("namespaces of lab %s are left", l)
		}
		if _, err := os.Stat(plan.StateDir(o.StateRoot, l)); !os.IsNotExist(err) {
			t.Errorf("state dir of lab %s is left", l)
		}
		if pids := markedProcesses(l); len(pids) > 0 {
			t.Errorf("processes of lab %s are left: %v", l, pids)
		}
	}
}

func nsExists(labName string) bool {
	ns, _ := nsutil.List(plan.Names{Lab: labName}.Prefix())
	return len(ns) > 0
}

// markedProcesses finds processes carrying a lab's mark.
func markedProcesses(labName string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == lab.EnvLab+"="+labName {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
