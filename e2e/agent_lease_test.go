package e2e

import (
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// A short lease TTL must survive an etcd outage: the agents notice etcd's
// return and renew before the TTL etcd restarted runs out. The scenario
// checks the data path and the leases' subnets; a lease lost and re-acquired
// would keep its subnet, so the agents' own logs are the proof that no key
// was deleted and re-created.
var _ = Describe("leases with a 10 s TTL across a 45 s etcd outage", func() {
	It("are renewed, never lost", func() {
		f := filepath.Join(repoRoot(), "e2e", "testdata", "etcd-outage-short-ttl.yaml")
		out := filepath.Join(GinkgoT().TempDir(), "out")
		r := run("run", f, "--out", out, "--state-dir", stateRoot)
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(ContainSubstring("PASSED etcd-outage-short-ttl"))

		logs, err := filepath.Glob(filepath.Join(out, "dumps", "*.log"))
		Expect(err).NotTo(HaveOccurred())
		agents := 0
		for _, l := range logs {
			data, err := os.ReadFile(l)
			Expect(err).NotTo(HaveOccurred())
			log := string(data)
			if !strings.Contains(log, "lease acquired") {
				continue // etcd's own log
			}
			agents++
			Expect(log).To(ContainSubstring("keeping subnet lease failed"), "%s: the outage did not reach this agent", filepath.Base(l))
			Expect(log).NotTo(ContainSubstring("subnet lease lost"), "%s lost its lease", filepath.Base(l))
			Expect(log).NotTo(ContainSubstring("lease re-acquired"), "%s re-created its lease", filepath.Base(l))
		}
		Expect(agents).To(Equal(3), "agent logs in %s", filepath.Join(out, "dumps"))
	})
})
