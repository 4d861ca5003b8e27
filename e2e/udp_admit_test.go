package e2e

import (
	"bytes"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Issue 10 item 8: the udp backend looks at who sent a datagram before it
// looks at what the datagram holds (docs/SECURITY.md), so whatever a
// machine that is not a peer sends counts as not_peer, never as malformed
// or not_ipv4. The sender here is the lab's etcd namespace: on the
// underlay, and not a peer.
var _ = Describe("udp admission", Ordered, func() {
	const name = "e2eud2"
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1")...)
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		Expect(r.code).To(Equal(0), r.String())
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dumpLab(name)
		}
	})

	It("counts everything a non-peer sends as not_peer, garbage included", func() {
		st := status(name)
		h1, h2 := st.Hosts[0], st.Hosts[1]
		Expect(st.Etcd.Netns).NotTo(BeEmpty())
		to := netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8285)
		notPeer := dropCount(h1.Netns, "not_peer")
		bad := dropCount(h1.Netns, "malformed") + dropCount(h1.Netns, "not_ipv4")
		garbage := [][]byte{{}, {0x45}, bytes.Repeat([]byte{0xff}, 1400), {0x60, 0, 0, 0},
			innerEcho(h2.Containers[0].IP, h1.Containers[0].IP, marker("np"))}
		for _, g := range garbage {
			sendUDP(st.Etcd.Netns, to, g) // three copies each
		}
		Eventually(func() int { return dropCount(h1.Netns, "not_peer") }).WithTimeout(3*time.Second).
			Should(Equal(notPeer+3*len(garbage)), "every datagram from the non-peer counted as not_peer")
		Consistently(func() int { return dropCount(h1.Netns, "malformed") + dropCount(h1.Netns, "not_ipv4") }).
			WithTimeout(300*time.Millisecond).Should(Equal(bad), "a non-peer's garbage counted as malformed or not_ipv4")

		// The same garbage from a peer is malformed (the control).
		for _, g := range garbage[:4] {
			sendUDP(h2.Netns, to, g)
		}
		Eventually(func() int { return dropCount(h1.Netns, "malformed") + dropCount(h1.Netns, "not_ipv4") }).
			WithTimeout(3*time.Second).Should(Equal(bad+3*4), "a peer's garbage")
		Expect(syscallAlive(h1.AgentPID)).To(BeTrue())
	})
})
