// Package e2e drives the real overlaylab binary as root: real namespaces,
// real agent processes, a real etcd, real packets. Without root every spec
// is skipped.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "overlaylab e2e")
}

var (
	bin       string // the overlaylab binary under test
	stateRoot string // state dirs of the suite's labs
)

var _ = BeforeSuite(func() {
	if os.Geteuid() != 0 {
		Skip("e2e needs root (network namespaces); run `sudo make test` to include it")
	}
	bin = os.Getenv("OVERLAYLAB_BIN")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		bin = filepath.Join(GinkgoT().TempDir(), "overlaylab")
		out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "cmd", "overlaylab")).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
	}
	dir, err := os.MkdirTemp("", "overlaylab-e2e-")
	Expect(err).NotTo(HaveOccurred())
	stateRoot = dir
	DeferCleanup(func() { os.RemoveAll(stateRoot) })
})

// result is one run of the binary.
type result struct {
	code   int
	stdout string
	stderr string
}

// String is meant as a gomega description, which gomega runs through
// Sprintf: a '%' of the output is doubled so that it prints as itself.
func (r result) String() string {
	s := fmt.Sprintf("exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s", r.code, r.stdout, r.stderr)
	return strings.ReplaceAll(s, "%", "%%")
}

// run runs the binary with the suite's state root appended where it applies.
func run(args ...string) result {
	cmd := exec.Command(bin, args...)
	return runCmd(cmd)
}

func runCmd(cmd *exec.Cmd) result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		r.code = -1
		r.stderr += err.Error()
	}
	return r
}

// labArgs adds --name and --state-dir.
func labArgs(name string, args ...string) []string {
	return append(args, "--name", name, "--state-dir", stateRoot)
}

// status loads the lab through `status -o json`, the public contract.
func status(name string) *lab.State {
	r := run(labArgs(name, "status", "-o", "json")...)
	ExpectWithOffset(1, r.code).To(Equal(0), r.String())
	var st lab.State
	ExpectWithOffset(1, json.Unmarshal([]byte(r.stdout), &st)).To(Succeed())
	return &st
}

// netnsWithPrefix lists namespaces whose names start with prefix.
func netnsWithPrefix(prefix string) []string {
	ns, err := nsutil.List(prefix)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return ns
}

// inNetns runs a command inside a namespace, as `ip netns exec` would.
func inNetns(ns string, timeout time.Duration, name string, args ...string) result {
	full := append([]string{"netns", "exec", ns, "timeout", fmt.Sprint(int(timeout.Seconds())), name}, args...)
	return runCmd(exec.Command("ip", full...))
}

// rootLinks names the links of the root namespace, to prove a lab adds none.
func rootLinks() string {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return strings.Join(names, " ")
}

// etcdKeys reads the lab's keys under /coreos.com/network.
func etcdKeys(st *lab.State) map[string]string {
	cli, err := st.EtcdClient()
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/coreos.com/network/", clientv3.WithPrefix())
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// dumpLab prints what a failed spec needs to see.
func dumpLab(name string) {
	st, err := lab.Load(stateRoot, name)
	if err != nil {
		GinkgoWriter.Printf("no state for %s: %v\n", name, err)
		return
	}
	for _, h := range st.Hosts {
		for _, c := range [][]string{{"ip", "route"}, {"ip", "neigh"}, {"bridge", "fdb", "show"}, {"ip", "-d", "link"}} {
			r := inNetns(h.Netns, 5*time.Second, c[0], c[1:]...)
			GinkgoWriter.Printf("--- %s: %s ---\n%s%s\n", h.Name, strings.Join(c, " "), r.stdout, r.stderr)
		}
		log, _ := os.ReadFile(h.AgentLog)
		GinkgoWriter.Printf("--- %s agent log ---\n%s\n", h.Name, log)
	}
	GinkgoWriter.Printf("--- etcd keys ---\n")
	for k, v := range etcdKeys(st) {
		GinkgoWriter.Printf("%s = %s\n", k, v)
	}
}

// gone reports whether pid no longer runs. A killed process whose parent
// has not reaped it yet is a zombie: gone as well.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// syscallAlive reports whether pid runs (and is not a zombie).
func syscallAlive(pid int) bool { return !gone(pid) }

// pingMatrix probes the pairs pair selects (nil: every pair) until each
// answered once or ctx ends, and judges "all answered" with the lab's own
// prober and judge.
func pingMatrix(ctx context.Context, eps []lab.Endpoint, pair func(i, j int) bool) (*lab.Matrix, error) {
	if pair == nil {
		pair = func(i, j int) bool { return i != j }
	}
	c, err := lab.Probe(ctx, eps, pair, lab.ProbeOptions{Interval: 250 * time.Millisecond, UntilAnswered: true})
	return lab.Judge(eps, pair, c, lab.Want{Kind: lab.WantAll, Once: true}), err
}

// openLab takes a lab's handle (and its lock) for a spec that drives the
// lab through the Go API; the spec closes it.
func openLab(name string) *lab.Lab {
	l, err := lab.Open(context.Background(), stateRoot, name, lab.Options{Binary: bin, Command: "e2e " + CurrentSpecReport().LeafNodeText})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	DeferCleanup(l.Close)
	return l
}

// missing skips a spec whose prerequisite is not on this machine, except on
// CI (CI=true), where .ci/run installs every one of them: there a missing
// one fails the spec, so that coverage cannot quietly turn into skips.
func missing(why string) {
	if os.Getenv("CI") == "true" {
		Fail("on CI, " + why)
	}
	Skip(why)
}
