package e2e

import (
	"context"
	"net/netip"
	"os"
	"time"

	"github.com/google/nftables"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
)

// masqTables lists the agent's nftables tables inside a namespace.
func masqTable(ns string) (rules int, found bool) {
	h, err := nsutil.Handle(ns)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer c.CloseLasting()
	tables, err := c.ListTables()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	for _, t := range tables {
		if t.Name == "overlaylab-masq" {
			chains, err := c.ListChains()
			ExpectWithOffset(1, err).NotTo(HaveOccurred())
			for _, ch := range chains {
				if ch.Table.Name == t.Name {
					rs, err := c.GetRules(t, ch)
					ExpectWithOffset(1, err).NotTo(HaveOccurred())
					rules += len(rs)
				}
			}
			return rules, true
		}
	}
	return 0, false
}

// pingOnce probes one pair with ICMP from Go.
func pingOnce(from lab.ContainerState, to netip.Addr, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	eps := []lab.Endpoint{{Name: "from", Netns: from.Netns, IP: netip.MustParseAddr(from.IP)}, {Name: "to", IP: to}}
	m, err := pingMatrix(ctx, eps, func(i, j int) bool { return i == 0 && j != 0 })
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	return m.Cells[0][1].Received > 0
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

var _ = Describe("--ip-masq", Ordered, func() {
	const name = "e2emasq"
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1", "--agent-arg=--ip-masq")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dumpLab(name)
		}
	})

	It("installs the rules, masquerades traffic leaving the Network and leaves overlay traffic untouched", func() {
		st := status(name)
		for _, h := range st.Hosts {
			n, ok := masqTable(h.Netns)
			Expect(ok).To(BeTrue(), "no overlaylab-masq table on %s", h.Name)
			Expect(n).To(Equal(3))
			Expect(readFile(h.SubnetFile)).To(ContainSubstring("FLANNEL_IPMASQ=true"))
		}
		// The etcd namespace has no route back to the overlay: a container
		// reaches it only if its source address is masqueraded to h1's.
		etcdIP := netip.MustParseAddr("192.168.77.250")
		Expect(pingOnce(st.Hosts[0].Containers[0], etcdIP, 5*time.Second)).To(BeTrue(), "container could not reach the underlay through masquerade")
		// Overlay to overlay keeps container source addresses on the wire.
		checkMatrixAndWire(st, 1)
	})

	It("removes its rules when the agent stops, and then nothing is masqueraded", func() {
		st := status(name)
		r := run(labArgs(name, "kill", "h1", "--signal", "TERM")...)
		Expect(r.code).To(Equal(0), r.String())
		_, ok := masqTable(st.Hosts[0].Netns)
		Expect(ok).To(BeFalse(), "table left behind after the agent stopped")
		Expect(pingOnce(st.Hosts[0].Containers[0], netip.MustParseAddr("192.168.77.250"), 2*time.Second)).To(BeFalse(),
			"reached the underlay without masquerade: the check above proves nothing")
	})
})
