package e2e

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("a seeded lab", func() {
	It("gets the same names, addresses and subnets every time", func() {
		type host struct{ Name, Netns, UnderlayIP, Subnet string }
		var runs [2][]host
		for i := range runs {
			r := run(labArgs("e2eseed", "up", "--hosts", "4", "--containers", "1", "--seed", "1234", "--verify=false")...)
			Expect(r.code).To(Equal(0), r.String())
			for _, h := range status("e2eseed").Hosts {
				runs[i] = append(runs[i], host{h.Name, h.Netns, h.UnderlayIP, h.Subnet})
			}
			r = run(labArgs("e2eseed", "down")...)
			Expect(r.code).To(Equal(0), r.String())
		}
		Expect(runs[0]).To(HaveLen(4))
		Expect(runs[1]).To(Equal(runs[0]))
	})
})

var _ = Describe("a large lab", func() {
	It("comes up with 50 hosts × 2 containers, every lease held and every host pair answering", func() {
		r := run(labArgs("e2ebig", "up", "--hosts", "50", "--containers", "2")...)
		DeferCleanup(func() { run(labArgs("e2ebig", "down")...) })
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(ContainSubstring("ping matrix: 1325/1325 sampled pairs (a container pair for every pair of hosts, and every same-host pair) answered"))
		Expect(r.stdout).To(MatchRegexp(`hosts \d+ms, agents \d`)) // the time per phase
		st := status("e2ebig")
		Expect(st.Hosts).To(HaveLen(50))
		subnets := map[string]bool{}
		for _, h := range st.Hosts {
			Expect(h.Subnet).NotTo(BeEmpty())
			subnets[h.Subnet] = true
		}
		Expect(subnets).To(HaveLen(50))
	})
})
