package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// An agent whose subnet.env cannot be rewritten keeps its datapath: the
// udp backend's flannel0 lives only as long as the agent, so an agent that
// exited over the file would take the host's overlay traffic with it.
var _ = Describe("an agent whose subnet.env cannot be written", Ordered, func() {
	const name = "e2eag5"
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1", "--backend", "udp")...)
		if r.code != 0 {
			dumpLab(name)
		}
		Expect(r.code).To(Equal(0), r.String())
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dumpLab(name)
		}
	})
	AfterAll(func() { run(labArgs(name, "down")...) })

	It("keeps flannel0 and the traffic across a same-subnet re-acquire", func() {
		st := status(name)
		h1 := hostByName(st, "h1")
		// A directory where subnet.env was: every rewrite fails.
		Expect(os.Remove(h1.SubnetFile)).To(Succeed())
		Expect(os.Mkdir(h1.SubnetFile, 0o755)).To(Succeed())
		DeferCleanup(func() { os.Remove(h1.SubnetFile) })

		// Deleting h1's lease key makes its agent re-acquire the same subnet.
		key := subnet.DefaultPrefix + "/subnets/" + subnet.SubnetKey(netip.MustParsePrefix(h1.Subnet))
		r := run("exec", "--name", name, "--state-dir", stateRoot, "h1", "--",
			"etcdctl", "--endpoints", strings.Join(st.Etcd.Endpoints, ","), "del", key)
		Expect(r.code).To(Equal(0), r.String())
		Expect(r.stdout).To(ContainSubstring("1"), "etcdctl deleted nothing: %s", r.String())
		Eventually(func() string {
			log, _ := os.ReadFile(h1.AgentLog)
			return string(log)
		}, 15*time.Second, 200*time.Millisecond).Should(ContainSubstring(`msg="lease re-acquired" subnet=` + h1.Subnet))

		// Give an agent that would exit over the file the time to do so.
		Consistently(func() bool { return syscallAlive(h1.AgentPID) }, 2*time.Second, 200*time.Millisecond).Should(BeTrue(), "h1's agent exited")
		Expect(inNetns(h1.Netns, 5*time.Second, "ip", "link", "show", "flannel0").code).To(Equal(0), "flannel0 is gone from h1")
		c1, c2 := h1.Containers[0], hostByName(st, "h2").Containers[0]
		r = inNetns(c1.Netns, 5*time.Second, "ping", "-c", "1", "-W", "2", c2.IP)
		Expect(r.code).To(Equal(0), fmt.Sprintf("h1 → h2: %s", r.String()))
	})
})
