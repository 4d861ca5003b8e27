package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// Every scenario of the library runs as its own spec, so CI reports each by
// name.
var _ = Describe("scenario library", func() {
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "scenarios", "library", "*.yaml"))
	It("has at least 8 scenarios", func() {
		Expect(len(files)).To(BeNumerically(">=", 8))
	})
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		It(name, func() {
			out := filepath.Join(GinkgoT().TempDir(), name)
			r := run("run", f, "--out", out, "--state-dir", stateRoot)
			Expect(r.code).To(Equal(0), r.String())
			Expect(r.stdout).To(ContainSubstring("PASSED " + name))
			var res report.Result
			data, err := os.ReadFile(filepath.Join(out, "result.json"))
			Expect(err).NotTo(HaveOccurred())
			Expect(json.Unmarshal(data, &res)).To(Succeed())
			Expect(res.Passed).To(BeTrue())
			Expect(res.Expectations).NotTo(BeEmpty())
			for _, p := range []string{"junit.xml", "report.html"} {
				Expect(filepath.Join(out, p)).To(BeARegularFile())
			}
			// Hosts that join or leave are drawn with the moment they did.
			for _, step := range res.Timeline {
				if step.Action != string(scenarios.ActionHostAdd) && step.Action != string(scenarios.ActionHostRemove) {
					continue
				}
				var found bool
				for _, h := range res.Topology.Hosts {
					at := h.AddedAt
					if step.Action == string(scenarios.ActionHostRemove) {
						at = h.RemovedAt
					}
					if h.Name == step.Host && at != nil {
						found = true
						Expect(*at).To(BeNumerically(">=", step.At), "%s %s", step.Action, h.Name)
					}
				}
				Expect(found).To(BeTrue(), "%s of %s is not in the topology", step.Action, step.Host)
			}
		})
	}
})

var _ = Describe("a scenario written to fail", func() {
	It("fails with a clear matrix and leaves the pcap and the HTML report", func() {
		out := filepath.Join(GinkgoT().TempDir(), "out")
		r := run("run", filepath.Join(repoRoot(), "e2e", "testdata", "link-down-expects-all.yaml"), "--out", out, "--state-dir", stateRoot)
		Expect(r.code).To(Equal(1), r.String())
		Expect(r.stdout).To(ContainSubstring("FAILED link-down-expects-all"))
		Expect(r.stdout).To(ContainSubstring("✗ expect all-across-link-down"))
		var res report.Result
		data, err := os.ReadFile(filepath.Join(out, "result.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(data, &res)).To(Succeed())
		Expect(res.Passed).To(BeFalse())
		Expect(res.Expectations).To(HaveLen(1))
		e := res.Expectations[0]
		Expect(e.Passed).To(BeFalse())
		Expect(e.Matrix).NotTo(BeNil())
		bad := 0
		for _, row := range e.Matrix.Bad {
			for _, b := range row {
				if b {
					bad++
				}
			}
		}
		Expect(bad).To(Equal(2), "both directions across the downed link should be marked bad:\n%s", e.Message)
		Expect(e.Message).To(ContainSubstring("from\\to"))
		Expect(e.Pcap).NotTo(BeEmpty())
		Expect(filepath.Join(out, e.Pcap)).To(BeARegularFile())
		html, err := os.ReadFile(filepath.Join(out, "report.html"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(html)).To(ContainSubstring("FAILED"))
		Expect(strings.Count(string(html), `class="cell-bad"`)).To(Equal(2))
		Expect(filepath.Join(out, "dumps", "h1.txt")).To(BeARegularFile())
		Expect(netnsWithPrefix("ol-mustfl-")).To(BeEmpty(), "the failed run left its lab behind")
	})
})

var _ = Describe("the checks of the second vocabulary", func() {
	It("each fail when what they check does not hold", func() {
		out := filepath.Join(GinkgoT().TempDir(), "out")
		r := run("run", filepath.Join(repoRoot(), "e2e", "testdata", "new-checks-fail.yaml"), "--out", out, "--state-dir", stateRoot)
		Expect(r.code).To(Equal(1), r.String())
		var res report.Result
		data, err := os.ReadFile(filepath.Join(out, "result.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(data, &res)).To(Succeed())
		// Each fails for its own reason, not because the check broke: the
		// message names what was measured against what was wanted.
		why := map[string]string{
			"pmtu-of-the-wide-path":       "the largest DF packet that crossed is",
			"big-df-ping-across":          "want all",
			"flow-faster-than-paced":      "< minRate",
			"timeout-but-answered":        "connect, want timeout",
			"no-peer-ever-added":          "want ==0",
			"rss-of-a-megabyte":           "rss must be",
			"five-peers":                  "want >=5",
			"neighbour-that-is-not":       "has no neighbour",
			"fdb-entry-that-is-not":       "has no fdb entry",
			"route-via-a-stranger":        "no route to",
			"h2-never-restarted-nor-died": "alive=false",
			"flow-across-the-outage":      "> maxStall",
			"connect-through-a-down-link": "timeout, want connect",
			"refused-through-a-down-link": "timeout, want refused",
			"a-busy-agent":                "cpu must be >=90%",
			"no-info-lines":               "want <=0",
			"h1-not-ready":                "ready=true",
			"not-peer-drops":              `{reason="not_peer"} = 0, want >=1`,
			"route-to-h2-gone":            "still has",
			"neighbour-of-h2-gone":        "still has",
			"fdb-of-h2-gone":              "still has",
		}
		kinds := map[string]bool{}
		for _, e := range res.Expectations {
			Expect(e.Passed).To(BeFalse(), "%s (%s) passed: %s", e.Name, e.Kind, e.Message)
			Expect(why).To(HaveKey(e.Name), "an expectation the spec does not know")
			Expect(e.Message).To(ContainSubstring(why[e.Name]), "%s failed for another reason", e.Name)
			kinds[e.Kind] = true
		}
		Expect(res.Expectations).To(HaveLen(len(why)))
		for _, k := range []string{"pmtu", "ping", "flow", "tcp", "log", "resources", "metric", "neigh", "fdb", "route", "agent"} {
			Expect(kinds).To(HaveKey(k), "no failing %s check", k)
		}
		Expect(netnsWithPrefix("ol-mustfl2-")).To(BeEmpty())
	})
})

var _ = Describe("the agent check's restarts", func() {
	It("counts an agent process the lab did not start, and not the lab's own starts", func() {
		out := filepath.Join(GinkgoT().TempDir(), "out")
		play := exec.Command(bin, "run", filepath.Join(repoRoot(), "e2e", "testdata", "agent-not-ours.yaml"), "--out", out, "--state-dir", stateRoot)
		var stdout strings.Builder
		play.Stdout = &stdout
		Expect(play.Start()).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- play.Wait() }()
		// Once the lab is up, someone else starts a second agent in h2: it
		// waits for a config under a prefix nobody writes, so it only runs.
		var st *lab.State
		Eventually(func() string {
			r := run(labArgs("mustfl3", "status", "-o", "json")...)
			if r.code != 0 {
				return ""
			}
			st = &lab.State{}
			if json.Unmarshal([]byte(r.stdout), st) != nil {
				return ""
			}
			return st.Phase
		}, 60*time.Second, 200*time.Millisecond).Should(Equal("up"))
		h2 := st.Hosts[1]
		extra := exec.Command("ip", "netns", "exec", h2.Netns, bin, "agent", "--etcd-endpoints", st.Etcd.Endpoints[0],
			"--etcd-prefix", "/e2e-not-ours", "--iface", "eth0", "--subnet-file", filepath.Join(GinkgoT().TempDir(), "subnet.env"))
		var extraOut strings.Builder
		extra.Stdout, extra.Stderr = &extraOut, &extraOut
		Expect(extra.Start()).To(Succeed())
		Consistently(func() bool { return gone(extra.Process.Pid) }, 2*time.Second, 100*time.Millisecond).Should(BeFalse(),
			"the second agent did not keep running: %s", extraOut.String())
		defer func() {
			if extra.ProcessState == nil {
				_ = extra.Process.Kill()
				_ = extra.Wait()
			}
		}()
		var err error
		Eventually(done, 90*time.Second).Should(Receive(&err))
		Expect(err).To(HaveOccurred(), "the run passed; the second agent said: %s\n%s", extraOut.String(), stdout.String())
		Expect(stdout.String()).To(MatchRegexp(`✗ expect h2-runs-only-the-labs-agent .*restarts=1 `), stdout.String())
		// The lab's teardown ended the stranger too: it ran in the lab's namespace.
		Eventually(func() bool { return gone(extra.Process.Pid) }, 10*time.Second).Should(BeTrue())
	})
})

var _ = Describe("overlaylab validate", func() {
	It("reports every error as file:line:column", func() {
		f := filepath.Join(repoRoot(), "e2e", "testdata", "broken.yaml")
		r := run("validate", f)
		Expect(r.code).To(Equal(1))
		Expect(r.stderr).To(ContainSubstring(f + ":4:12: "))
		Expect(r.stderr).To(ContainSubstring(f + ":10:11: "))
		Expect(r.stderr).To(ContainSubstring(`unknown host "h9"`))
	})
})
