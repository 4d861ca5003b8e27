package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
)

// hostByName finds a host in a status snapshot.
func hostByName(st *lab.State, name string) lab.HostState {
	for _, h := range st.Hosts {
		if h.Name == name {
			return h
		}
	}
	Fail("no host " + name + " in the lab")
	return lab.HostState{}
}

// kernelLines runs an iproute2 command inside a namespace and returns its
// output lines.
func kernelLines(ns string, args ...string) []string {
	r := inNetns(ns, 5*time.Second, args[0], args[1:]...)
	ExpectWithOffset(1, r.code).To(Equal(0), r.String())
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// withPrefix keeps the lines that start with one of the words.
func withPrefix(lines []string, word string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, word+" ") {
			out = append(out, l)
		}
	}
	return out
}

// containing keeps the lines that contain s as a whole word.
func containing(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		for _, f := range strings.Fields(l) {
			if f == s {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// A peer that leaves while a host's agent is down must not stay in that
// host's kernel once the agent is back (upstream flannel #2554): the agent
// reconciles on start and removes what it owns and no lease justifies,
// and nothing else.
func staleAfterDowntimeSpecs(backend, name string) {
	Describe("a peer that left while an agent was down ("+backend+")", Ordered, func() {
		var h1, h2, h3 lab.HostState
		var h3MAC string // vxlan: h3's VTEP MAC as h1's FDB knew it

		BeforeAll(func() {
			r := run(labArgs(name, "up", "--hosts", "3", "--containers", "1", "--backend", backend)...)
			if r.code != 0 {
				dumpLab(name)
			}
			Expect(r.code).To(Equal(0), r.String())
			st := status(name)
			h1, h2, h3 = hostByName(st, "h1"), hostByName(st, "h2"), hostByName(st, "h3")
		})
		AfterEach(func() {
			if CurrentSpecReport().Failed() {
				dumpLab(name)
			}
		})
		AfterAll(func() { run(labArgs(name, "down")...) })

		It("is programmed on h1 before anything happens", func() {
			routes := kernelLines(h1.Netns, "ip", "-4", "route", "show")
			Expect(withPrefix(routes, h3.Subnet)).NotTo(BeEmpty(), "no route to h3 on h1: the spec would prove nothing")
			Expect(withPrefix(routes, h2.Subnet)).NotTo(BeEmpty())
			if backend == "vxlan" {
				fdb := containing(kernelLines(h1.Netns, "bridge", "fdb", "show", "dev", "flannel.1"), h3.UnderlayIP)
				Expect(fdb).To(HaveLen(1), "h1's FDB entry for h3")
				h3MAC = strings.Fields(fdb[0])[0]
				Expect(containing(kernelLines(h1.Netns, "ip", "-4", "neigh", "show", "dev", "flannel.1"), h3MAC)).NotTo(BeEmpty())
			}
		})

		It("is gone from h1 after h1's agent restarts, and only it", func() {
			// Routes the agent does not own, one on the external device and
			// one inside the Network, must survive the reconcile.
			foreign := []string{"10.99.0.0/24 via " + h2.UnderlayIP + " dev eth0", "10.10.254.0/24 via " + h2.UnderlayIP + " dev eth0 proto static"}
			for _, rt := range foreign {
				r := inNetns(h1.Netns, 5*time.Second, "ip", append([]string{"route", "add"}, strings.Fields(rt)...)...)
				Expect(r.code).To(Equal(0), r.String())
			}

			r := run(labArgs(name, "kill", "h1", "--signal", "KILL")...)
			Expect(r.code).To(Equal(0), r.String())
			r = run(labArgs(name, "host", "remove", "h3")...)
			Expect(r.code).To(Equal(0), r.String())
			r = run(labArgs(name, "start", "h1")...)
			Expect(r.code).To(Equal(0), r.String())

			// start returns once the agent is ready, and it reconciles
			// before it says so.
			routes := kernelLines(h1.Netns, "ip", "-4", "route", "show")
			Expect(withPrefix(routes, h3.Subnet)).To(BeEmpty(), "h1 still routes the removed h3")
			Expect(withPrefix(routes, h2.Subnet)).NotTo(BeEmpty(), "h1 lost its route to h2")
			Expect(withPrefix(routes, "10.99.0.0/24")).NotTo(BeEmpty(), "a route the agent does not own was removed")
			Expect(withPrefix(routes, "10.10.254.0/24")).NotTo(BeEmpty(), "a route the agent does not own was removed")
			if backend == "vxlan" {
				Expect(h3MAC).NotTo(BeEmpty())
				Expect(containing(kernelLines(h1.Netns, "bridge", "fdb", "show", "dev", "flannel.1"), h3MAC)).To(BeEmpty(), "FDB entry for h3")
				Expect(containing(kernelLines(h1.Netns, "bridge", "fdb", "show", "dev", "flannel.1"), h2.UnderlayIP)).NotTo(BeEmpty(), "FDB entry for h2")
				vtep := netip.MustParsePrefix(h3.Subnet).Addr().String()
				Expect(containing(kernelLines(h1.Netns, "ip", "-4", "neigh", "show", "dev", "flannel.1"), vtep)).To(BeEmpty(), "neighbour for h3's gateway")
			}

			// And the overlay between the remaining hosts works.
			st := status(name)
			c1, c2 := hostByName(st, "h1").Containers[0], hostByName(st, "h2").Containers[0]
			r = inNetns(c1.Netns, 5*time.Second, "ping", "-c", "1", "-W", "2", c2.IP)
			Expect(r.code).To(Equal(0), fmt.Sprintf("h1 → h2 after the restart: %s", r.String()))
		})

		It("marks the routes it installs as its own (proto 77), and only those", func() {
			routes := kernelLines(h1.Netns, "ip", "-4", "route", "show")
			Expect(withPrefix(routes, h2.Subnet)).To(ConsistOf(ContainSubstring("proto 77")))
			Expect(withPrefix(routes, "10.99.0.0/24")).To(ConsistOf(Not(ContainSubstring("proto 77"))))
		})
	})
}

var _ = Describe("stale peers after agent downtime", func() {
	staleAfterDowntimeSpecs("host-gw", "e2eag1")
	staleAfterDowntimeSpecs("vxlan", "e2eag2")

	// The udp backend keeps peers in its own table, not in the kernel: its
	// one owned route is the Network's through flannel0, and a restart
	// after a peer left leaves exactly that.
	Describe("a peer that left while an agent was down (udp)", Ordered, func() {
		const name = "e2eag4"
		BeforeAll(func() {
			r := run(labArgs(name, "up", "--hosts", "3", "--containers", "1", "--backend", "udp")...)
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

		It("leaves h1 with the Network route through flannel0 as its only route", func() {
			for _, args := range [][]string{{"kill", "h1", "--signal", "KILL"}, {"host", "remove", "h3"}, {"start", "h1"}} {
				r := run(labArgs(name, args...)...)
				Expect(r.code).To(Equal(0), r.String())
			}
			st := status(name)
			h1 := hostByName(st, "h1")
			owned := containing(kernelLines(h1.Netns, "ip", "-4", "route", "show"), "77")
			Expect(owned).To(ConsistOf(HavePrefix(st.Network + " dev flannel0 proto 77")))
			c1, c2 := h1.Containers[0], hostByName(st, "h2").Containers[0]
			r := inNetns(c1.Netns, 5*time.Second, "ping", "-c", "1", "-W", "2", c2.IP)
			Expect(r.code).To(Equal(0), fmt.Sprintf("h1 → h2 after the restart: %s", r.String()))
		})
	})
})
