package e2e

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/scenarios/report"
)

// readResult reads a run's result.json.
func readResult(dir string) *report.Result {
	data, err := os.ReadFile(filepath.Join(dir, "result.json"))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	var res report.Result
	ExpectWithOffset(1, json.Unmarshal(data, &res)).To(Succeed())
	return &res
}

var _ = Describe("the same scenario against another agent", func() {
	It("runs a library scenario with --agent flanneld and names flanneld and its version in every report", func() {
		flanneld := needFlanneld()
		out := filepath.Join(GinkgoT().TempDir(), "out")
		f := filepath.Join(repoRoot(), "scenarios", "library", "host-churn.yaml")
		r := run("run", f, "--agent", flanneld, "--out", out, "--state-dir", stateRoot)
		Expect(r.code).To(Equal(0), r.String())
		res := readResult(out)
		Expect(res.Passed).To(BeTrue())
		abs, _ := filepath.Abs(flanneld)
		for _, h := range res.Topology.Hosts {
			Expect(h.Agent.Path).To(Equal(abs))
			Expect(h.Agent.Version).To(HavePrefix("v0.28"))
			Expect(h.Agent.Ours).To(BeFalse())
		}
		junit, err := os.ReadFile(filepath.Join(out, "junit.xml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(junit)).To(ContainSubstring(`name="agent.h1" value="` + abs + ` (v0.28`))
		html, err := os.ReadFile(filepath.Join(out, "report.html"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(html)).To(ContainSubstring("flanneld v0.28"))
	})

	It("plays a directory against two agents, twice each, two at a time: one JUnit and an index grid", func() {
		flanneld := needFlanneld()
		out := filepath.Join(GinkgoT().TempDir(), "suite")
		dir := filepath.Join(repoRoot(), "e2e", "testdata", "suite")
		r := run("run", dir, "--agent", bin, "--agent", flanneld, "--parallel", "2", "--repeat", "2", "--out", out, "--state-dir", stateRoot)
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(ContainSubstring("suite: 8/8 runs passed"))
		var doc struct {
			Suites []struct {
				Name  string `xml:"name,attr"`
				Tests int    `xml:"tests,attr"`
				Cases []struct {
					Name    string    `xml:"name,attr"`
					Failure *struct{} `xml:"failure"`
				} `xml:"testcase"`
			} `xml:"testsuite"`
		}
		data, err := os.ReadFile(filepath.Join(out, "junit.xml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(xml.Unmarshal(data, &doc)).To(Succeed())
		var names []string
		for _, s := range doc.Suites {
			names = append(names, s.Name)
			Expect(s.Cases).NotTo(BeEmpty())
			Expect(s.Cases[0].Name).To(HavePrefix("#1 "), "repetitions are told apart")
		}
		Expect(names).To(ConsistOf("mesh-vxlan [overlaylab]", "mesh-vxlan [flanneld]", "restart-udp [overlaylab]", "restart-udp [flanneld]"))
		index, err := os.ReadFile(filepath.Join(out, "index.html"))
		Expect(err).NotTo(HaveOccurred())
		for _, want := range []string{"<th>overlaylab</th>", "<th>flanneld</th>", "<th>mesh-vxlan</th>", "2/2", "report.html"} {
			Expect(string(index)).To(ContainSubstring(want))
		}
		// Every run's own report is where the grid links.
		links := strings.Count(string(index), `href="`)
		Expect(links).To(BeNumerically(">=", 8))
		Expect(netnsWithPrefix("ol-smesh")).To(BeEmpty())
		Expect(netnsWithPrefix("ol-srst")).To(BeEmpty())
	})
})
