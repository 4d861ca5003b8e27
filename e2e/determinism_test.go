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
