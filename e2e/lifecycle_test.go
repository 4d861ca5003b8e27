package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab/plan"
)

// privateMountNS runs a shell script in a private mount namespace with a
// fresh /run (a tmpfs), whose /run/netns is a plain directory no tool has
// bound a namespace in yet, as on a fresh machine, and holds no other
// lab's names; the machine's own mounts are untouched.
func privateMountNS(script string) result {
	if _, err := exec.LookPath("unshare"); err != nil {
		missing("unshare (util-linux) is not installed")
	}
	pre := `mount -t tmpfs tmpfs /run && mkdir -p /run/netns || exit 9; `
	return runCmd(exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", pre+script))
}

var _ = Describe("teardown beside iproute2", func() {
	It("works when iproute2's first `ip netns add` comes after the lab, with `ip netns exec … sleep` running", func() {
		const name = "robust-teardown-7" // names up to 32 characters
		// down runs on exit whatever happened, so a failure leaves nothing.
		script := `B=` + bin + `; S="--name ` + name + ` --state-dir ` + stateRoot + `"
trap '$B down $S >/dev/null 2>&1' EXIT
$B up $S --hosts 2 --containers 1 >/dev/null || { echo "up failed"; exit 10; }
ip netns add ol-e2e-x1 && ip netns del ol-e2e-x1 || exit 11
ip netns exec ol-` + name + `-h1 sleep 600 & sleeper=$!
sleep 0.5
$B down $S || exit 12
ip netns list 2>&1 | grep -q Error && { ip netns list; exit 13; }
ls /run/netns | grep -q '^ol-` + name + `-' && exit 14
sleep 0.2; kill -0 $sleeper 2>/dev/null && exit 15
exit 0`
		r := privateMountNS(script)
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(MatchRegexp(`lab "` + name + `" is down: \d+ namespaces removed, \d+ processes ended \(.*sleep in ol-` + name + `-h1`))
	})

	It("works when iproute2 made /run/netns a mount point before the lab", func() {
		const name = "e2eip2"
		script := `B=` + bin + `; S="--name ` + name + ` --state-dir ` + stateRoot + `"
trap '$B down $S >/dev/null 2>&1; ip netns del ol-e2e-x2 2>/dev/null' EXIT
ip netns add ol-e2e-x2 || exit 11
$B up $S --hosts 2 --containers 1 >/dev/null || exit 10
ip netns list | grep -q ol-` + name + `-h1 || exit 16
$B down $S || exit 12
ip netns del ol-e2e-x2 || exit 17
ip netns list 2>&1 | grep -q Error && exit 13
ls /run/netns | grep -q '^ol-` + name + `-' && exit 14
exit 0`
		r := privateMountNS(script)
		Expect(r.code).To(Equal(0), r.String())
	})
})

var _ = Describe("a lab name is checked by every command", func() {
	It("refuses names that lead outside the state dir and deletes nothing", func() {
		parent := GinkgoT().TempDir()
		root := filepath.Join(parent, "labs")
		Expect(os.MkdirAll(filepath.Join(root, "other"), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(parent, "precious"), []byte("x"), 0o644)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(root, "other", "state.json"), []byte("{}"), 0o644)).To(Succeed())
		for _, bad := range []string{"..", "", "../labs", ".", "a/b", "UP"} {
			for _, args := range [][]string{
				{"down"}, {"status"}, {"kill", "h1"}, {"start", "h1"}, {"host", "add"}, {"host", "remove", "h1"},
				{"exec", "h1", "--", "true"}, {"etcd", "stop"}, {"up"},
			} {
				// The flags go before "--": what follows is exec's command.
				full := append([]string{}, args...)
				at := len(full)
				for i, a := range full {
					if a == "--" {
						at = i
					}
				}
				full = append(full[:at], append([]string{"--name", bad, "--state-dir", root}, args[at:]...)...)
				r := run(full...)
				Expect(r.code).NotTo(Equal(0), "%v --name %q: %s", args, bad, r)
				Expect(r.stderr).To(ContainSubstring("--name"), "%v --name %q", args, bad)
			}
		}
		Expect(filepath.Join(parent, "precious")).To(BeARegularFile())
		Expect(filepath.Join(root, "other", "state.json")).To(BeARegularFile())
	})
})

// concurrently runs commands at once and returns their results in order.
func concurrently(cmds ...[]string) []result {
	out := make([]result, len(cmds))
	var wg sync.WaitGroup
	for i, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = run(c...)
		}()
	}
	wg.Wait()
	return out
}

// waitForState waits until a lab's state file exists (its `up` holds the
// lock and is building).
func waitForState(name string) {
	EventuallyWithOffset(1, func() error {
		_, err := os.Stat(filepath.Join(plan.StateDir(stateRoot, name), "state.json"))
		return err
	}).WithTimeout(20 * time.Second).WithPolling(5 * time.Millisecond).Should(Succeed())
}

var _ = Describe("commands on one lab are serialized by its lock", func() {
	It("makes a second `up` of a name wait, then refuse, leaving the first lab whole", func() {
		const name = "e2elk1"
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		first := make(chan result, 1)
		go func() { first <- run(labArgs(name, "up", "--hosts", "2", "--containers", "1")...) }()
		waitForState(name)
		second := run(labArgs(name, "up", "--hosts", "2", "--containers", "1")...)
		a := <-first
		Expect(a.code).To(Equal(0), a.String())
		Expect(second.code).NotTo(Equal(0), second.String())
		Expect(second.stderr).To(ContainSubstring(`lab "` + name + `" is busy (pid `))
		Expect(second.stderr).To(ContainSubstring(": up, since "))
		Expect(second.stderr).To(ContainSubstring("already exists"))
		st := status(name)
		Expect(st.Phase).To(Equal("up"))
		checkMatrixAndWire(st, 0)
	})

	It("runs two `host add` at once one after the other, and `start` beside `host add` keeps both updates", func() {
		const name = "e2elk2"
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		rs := concurrently(labArgs(name, "host", "add", "--containers", "1"), labArgs(name, "host", "add", "--containers", "1"))
		for _, r := range rs {
			Expect(r.code).To(Equal(0), r.String())
		}
		st := status(name)
		Expect(st.Hosts).To(HaveLen(4))
		old := st.Hosts[1].AgentPID
		Expect(run(labArgs(name, "kill", "h2", "--signal", "KILL")...).code).To(Equal(0))
		rs = concurrently(labArgs(name, "start", "h2"), labArgs(name, "host", "add", "--containers", "1"))
		for _, r := range rs {
			Expect(r.code).To(Equal(0), r.String())
		}
		st = status(name)
		Expect(st.Hosts).To(HaveLen(5))
		h2 := st.Hosts[1]
		Expect(h2.AgentPID).NotTo(Equal(old))
		Expect(syscallAlive(h2.AgentPID)).To(BeTrue(), "status names a dead agent for h2")
		// No second agent: starting a running one is refused.
		r = run(labArgs(name, "start", "h2")...)
		Expect(r.code).NotTo(Equal(0))
		Expect(r.stderr).To(ContainSubstring("is still running"))
		checkMatrixAndWire(st, 4)
	})

	It("makes `down` during `up` wait for it: up reports a whole lab, down then removes it", func() {
		const name = "e2elk3"
		up := make(chan result, 1)
		go func() { up <- run(labArgs(name, "up", "--hosts", "3", "--containers", "2")...) }()
		waitForState(name)
		down := run(labArgs(name, "down")...)
		u := <-up
		Expect(u.code).To(Equal(0), u.String())
		Expect(u.stdout).To(ContainSubstring("ping matrix: 30/30 pairs answered"))
		Expect(u.stdout).To(ContainSubstring(`lab "` + name + `" is up: 3 hosts`))
		Expect(down.code).To(Equal(0), down.String())
		Expect(down.stderr).To(ContainSubstring("is busy"))
		Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
		_, err := os.Stat(plan.StateDir(stateRoot, name))
		Expect(os.IsNotExist(err)).To(BeTrue())
	})
})

var _ = Describe("a running lab", Ordered, func() {
	const name = "e2elife"
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "3", "--containers", "1")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dumpLab(name)
		}
	})

	It("never gives a removed host's name or address to a new host", func() {
		r := run(labArgs(name, "host", "remove", "h3")...)
		Expect(r.code).To(Equal(0), r.String())
		r = run(labArgs(name, "host", "add", "--containers", "1")...)
		Expect(r.code).To(Equal(0), r.String())
		st := status(name)
		names := []string{}
		for _, h := range st.Hosts {
			names = append(names, h.Name+"@"+h.UnderlayIP)
		}
		Expect(names).To(Equal([]string{"h1@192.168.77.1", "h2@192.168.77.2", "h4@192.168.77.4"}))
		checkMatrixAndWire(st, 2)
	})

	It("stops and starts etcd from the CLI (`etcd stop|start`, `kill etcd`, `start etcd`)", func() {
		st := status(name)
		pid := st.Etcd.Members[0].PID
		r := run(labArgs(name, "etcd", "stop")...)
		Expect(r.code).To(Equal(0), r.String())
		Eventually(func() bool { return gone(pid) }).Should(BeTrue())
		r = run(labArgs(name, "etcd", "start")...)
		Expect(r.code).To(Equal(0), r.String())
		pid = status(name).Etcd.Members[0].PID
		Expect(syscallAlive(pid)).To(BeTrue())
		Expect(run(labArgs(name, "kill", "etcd")...).code).To(Equal(0))
		Eventually(func() bool { return gone(pid) }).Should(BeTrue())
		r = run(labArgs(name, "start", "etcd")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(etcdKeys(status(name))).To(HaveKey("/coreos.com/network/config"))
	})

	It("ends what users started inside its namespaces when it goes down", func() {
		r := run("exec", "--name", name, "--state-dir", stateRoot, "h2/c1", "--", "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 &")
		Expect(r.code).To(Equal(0), r.String())
		ns := status(name).Hosts[1].Containers[0].Netns
		var pid int
		Eventually(func() int {
			pid = sleeperIn(ns)
			return pid
		}).Should(BeNumerically(">", 0))
		r = run(labArgs(name, "down")...)
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(ContainSubstring(strconv.Itoa(pid) + " (sleep in " + ns + ")"))
		Eventually(func() bool { return gone(pid) }).Should(BeTrue(), "the sleep survived down")
		Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
	})
})

// sleeperIn finds a `sleep` process inside the named namespace.
func sleeperIn(ns string) int {
	target, err := os.Stat("/run/netns/" + ns)
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		if strings.TrimSpace(string(comm)) != "sleep" {
			continue
		}
		if fi, err := os.Stat("/proc/" + e.Name() + "/ns/net"); err == nil && os.SameFile(fi, target) {
			return pid
		}
	}
	return 0
}
