package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// labSpecs is the life of one lab of a backend: up, inspect, break, recover, down.
func labSpecs(backend, name string) {
	Describe("a 3-host × 2-container "+backend+" lab", Ordered, func() {
		var linksBefore string

		BeforeAll(func() {
			linksBefore = rootLinks()
			r := run(labArgs(name, "up", "--hosts", "3", "--containers", "2", "--backend", backend)...)
			if r.code != 0 {
				dumpLab(name)
			}
			Expect(r.code).To(Equal(0), r.String())
			Expect(r.stdout).To(ContainSubstring("ping matrix: 30/30 pairs answered"))
			if backend == "host-gw" {
				Expect(r.stdout).To(ContainSubstring("routed bare between the hosts"))
			} else {
				Expect(r.stdout).To(ContainSubstring("no bare container traffic"))
			}
		})

		AfterEach(func() {
			if CurrentSpecReport().Failed() {
				dumpLab(name)
			}
		})

		AfterAll(func() {
			// Whatever happened, leave nothing behind.
			run(labArgs(name, "down")...)
		})

		It("reports itself through status -o json as the contract says", func() {
			r := run(labArgs(name, "status", "-o", "json")...)
			Expect(r.code).To(Equal(0), r.String())
			var raw map[string]any
			Expect(json.Unmarshal([]byte(r.stdout), &raw)).To(Succeed())
			for _, k := range []string{"name", "backend", "network", "etcd", "underlay", "hosts"} {
				Expect(raw).To(HaveKey(k))
			}
			st := status(name)
			Expect(st.Name).To(Equal(name))
			Expect(st.Backend).To(Equal(backend))
			Expect(st.Network).To(Equal("10.10.0.0/16"))
			Expect(st.Etcd.Endpoints).To(ConsistOf("http://192.168.77.250:2379"))
			Expect(netnsWithPrefix(st.Etcd.Netns)).To(ContainElement(st.Etcd.Netns))
			Expect(st.Underlay.CIDR).To(Equal("192.168.77.0/24"))
			Expect(netnsWithPrefix(st.Underlay.Netns)).To(ContainElement(st.Underlay.Netns))
			Expect(st.Hosts).To(HaveLen(3))
			seen := map[string]bool{}
			for i, h := range st.Hosts {
				Expect(h.UnderlayIP).To(Equal(netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)}).String()))
				p := netip.MustParsePrefix(h.Subnet)
				Expect(p.Bits()).To(Equal(24))
				Expect(netip.MustParsePrefix("10.10.0.0/16").Contains(p.Addr())).To(BeTrue())
				Expect(seen[h.Subnet]).To(BeFalse(), "subnet %s leased twice", h.Subnet)
				seen[h.Subnet] = true
				Expect(h.AgentPID).To(BeNumerically(">", 0))
				Expect(syscall.Kill(h.AgentPID, 0)).To(Succeed())
				Expect(h.Containers).To(HaveLen(2))
				for j, c := range h.Containers {
					Expect(p.Contains(netip.MustParseAddr(c.IP))).To(BeTrue())
					Expect(c.IP).To(Equal(nthHost(p, j+2).String()))
					Expect(netnsWithPrefix(c.Netns)).To(ContainElement(c.Netns))
				}
			}
		})

		It("holds one etcd lease key per host with flannel's JSON", func() {
			st := status(name)
			keys := etcdKeys(st)
			Expect(keys).To(HaveKey("/coreos.com/network/config"))
			for _, h := range st.Hosts {
				key := "/coreos.com/network/subnets/" + subnet.SubnetKey(netip.MustParsePrefix(h.Subnet))
				Expect(keys).To(HaveKey(key))
				var v map[string]any
				Expect(json.Unmarshal([]byte(keys[key]), &v)).To(Succeed())
				Expect(v["PublicIP"]).To(Equal(h.UnderlayIP))
				Expect(v["BackendType"]).To(Equal(backend))
				Expect(v).To(HaveKey("BackendData"))
			}
		})

		It("answers ping from outside the tool (ip netns exec … ping)", func() {
			if _, err := exec.LookPath("ping"); err != nil {
				missing("ping is not installed (.ci/run installs iputils-ping)")
			}
			st := status(name)
			from := st.Hosts[0].Containers[0]
			to := st.Hosts[2].Containers[1]
			r := inNetns(from.Netns, 10*time.Second, "ping", "-c", "2", "-W", "2", to.IP)
			Expect(r.code).To(Equal(0), r.String())
			Expect(r.stdout).To(ContainSubstring("2 received"))
		})

		It("passes the full ping matrix with encapsulated traffic on h2's wire", func() {
			st := status(name)
			checkMatrixAndWire(st, 1)
		})

		if backend == "vxlan" {
			It("rebuilds flannel.1 with every peer entry after someone deletes it", func() {
				st := status(name)
				h := st.Hosts[0]
				before := entriesOn(h.Netns)
				Expect(before.fdb).To(HaveLen(2))
				r := inNetns(h.Netns, 5*time.Second, "ip", "link", "del", "flannel.1")
				Expect(r.code).To(Equal(0), r.String())
				Eventually(func() peerEntries { return entriesOn(h.Netns) }).WithTimeout(5 * time.Second).Should(Equal(before))
				checkMatrixAndWire(st, 0)
			})
		}

		if backend == "host-gw" {
			It("reports a peer off the L2 segment and skips it", func() {
				st := status(name)
				// A lease whose PublicIP no host can reach directly. Nothing
				// is ever sent to it: the agent only looks its route up.
				putKey(st, "/coreos.com/network/subnets/10.10.250.0-24",
					`{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}`)
				DeferCleanup(func() { deleteLease(st, "10.10.250.0/24") })
				for _, h := range st.Hosts {
					Eventually(func() string { return readFile(h.AgentLog) }).WithTimeout(5*time.Second).
						Should(ContainSubstring("PublicIP 10.99.0.1 is not on the same L2 segment as eth0"), h.Name)
					Expect(entriesOn(h.Netns).routes).NotTo(ContainElement("10.10.250.0/24"))
				}
				checkMatrixAndWire(st, 0)
			})
		}

		if backend == "udp" {
			It("reports an invalid network config written to etcd and keeps the network working", func() {
				st := status(name)
				putConfig(st, `{"Network": "10.99.0.0/16", "Backend": {"Type": "udp"`)
				for _, h := range st.Hosts {
					Eventually(func() string { return readFile(h.AgentLog) }).WithTimeout(5*time.Second).
						Should(ContainSubstring("network config in etcd is now invalid; keeping the running network"), h.Name)
				}
				checkMatrixAndWire(st, 2)
				putConfig(st, `{"Network":"10.20.0.0/16","Backend":{"Type":"vxlan"}}`)
				for _, h := range st.Hosts {
					Eventually(func() string { return readFile(h.AgentLog) }).WithTimeout(5*time.Second).
						Should(ContainSubstring("network config in etcd changed; restart the agent to apply it"), h.Name)
				}
				putConfig(st, `{"Network":"10.10.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`)
				checkMatrixAndWire(st, 0)
			})

			It("counts encapsulated and decapsulated packets in /metrics", func() {
				st := status(name)
				m := metrics(st.Hosts[0].Netns)
				Expect(m).To(MatchRegexp(`(?m)^overlaylab_encap_packets_total [1-9]\d*$`))
				Expect(m).To(MatchRegexp(`(?m)^overlaylab_decap_packets_total [1-9]\d*$`))
				Expect(m).To(MatchRegexp(`(?m)^overlaylab_ready 1$`))
				Expect(m).To(MatchRegexp(`(?m)^overlaylab_peers 2$`))
			})
		}

		It("brings a SIGKILLed agent back with the same subnet, and the matrix passes again", func() {
			st := status(name)
			h := st.Hosts[1]
			oldPID := h.AgentPID
			r := run(labArgs(name, "kill", h.Name, "--signal", "KILL")...)
			Expect(r.code).To(Equal(0), r.String())
			Eventually(func() bool { return gone(oldPID) }).Should(BeTrue())

			r = run(labArgs(name, "start", h.Name)...)
			Expect(r.code).To(Equal(0), r.String())
			st = status(name)
			Expect(st.Hosts[1].AgentPID).NotTo(Equal(oldPID))
			Expect(st.Hosts[1].Subnet).To(Equal(h.Subnet))
			// Exactly one lease key for this host's address.
			n := 0
			for k, v := range etcdKeys(st) {
				var attrs struct{ PublicIP string }
				if k != "/coreos.com/network/config" && json.Unmarshal([]byte(v), &attrs) == nil && attrs.PublicIP == h.UnderlayIP {
					n++
				}
			}
			Expect(n).To(Equal(1))
			checkMatrixAndWire(st, 0)
		})

		It("removes exactly a leaving host's entries on the other hosts within 2 s", func() {
			st := status(name)
			leaving := st.Hosts[2]
			// udp keeps its peers in the agent (one kernel route covers the
			// Network); vxlan and host-gw program the kernel per peer.
			kernel := backend != "udp"
			before := map[string]peerEntries{}
			for _, h := range st.Hosts[:2] {
				before[h.Name] = entriesOn(h.Netns)
				if kernel {
					Expect(before[h.Name].mentions(leaving)).NotTo(BeEmpty(), "%s has no entry for %s before it leaves", h.Name, leaving.Name)
				}
				Expect(peersGauge(h.Netns)).To(Equal(2))
			}
			r := run(labArgs(name, "kill", leaving.Name, "--signal", "TERM")...)
			Expect(r.code).To(Equal(0), r.String())
			deleteLease(st, leaving.Subnet)
			// Both hosts together must be clean within 2 s of the deletion.
			left := func() []string {
				var out []string
				for _, h := range st.Hosts[:2] {
					for _, e := range entriesOn(h.Netns).mentions(leaving) {
						out = append(out, h.Name+": "+e)
					}
					if n := peersGauge(h.Netns); n != 1 {
						out = append(out, fmt.Sprintf("%s: agent counts %d peers", h.Name, n))
					}
				}
				return out
			}
			Eventually(left).WithTimeout(2*time.Second).WithPolling(20*time.Millisecond).
				Should(BeEmpty(), "what still refers to %s", leaving.Name)
			// Exactly that peer: everything else each host had is still there.
			for _, h := range st.Hosts[:2] {
				Expect(entriesOn(h.Netns).without(leaving)).To(Equal(before[h.Name].without(leaving)), "%s lost more than %s's entries", h.Name, leaving.Name)
			}
			if backend == "udp" {
				if _, err := exec.LookPath("ping"); err == nil {
					// The agent answers for a subnet nobody leases any more.
					r := inNetns(st.Hosts[0].Containers[0].Netns, 5*time.Second, "ping", "-c", "1", "-W", "1", leaving.Containers[0].IP)
					Expect(r.stdout).To(ContainSubstring("Destination Net Unreachable"), r.String())
				}
			}
			// And the remaining two hosts still talk.
			var eps []lab.Endpoint
			for _, e := range st.Endpoints("") {
				if e.Name[:2] != leaving.Name {
					eps = append(eps, e)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m, err := pingMatrix(ctx, eps, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(m.OK()).To(BeTrue(), "matrix without %s:\n%s", leaving.Name, m)
		})

		It("goes down completely and idempotently", func() {
			st := status(name)
			var pids []int
			for _, m := range st.Etcd.Members {
				pids = append(pids, m.PID)
			}
			for _, h := range st.Hosts {
				pids = append(pids, h.AgentPID)
			}
			r := run(labArgs(name, "down")...)
			Expect(r.code).To(Equal(0), r.String())
			Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
			for _, pid := range pids {
				Eventually(func() bool { return gone(pid) }).Should(BeTrue(), "pid %d still runs", pid)
			}
			_, err := os.Stat(plan.StateDir(stateRoot, name))
			Expect(os.IsNotExist(err)).To(BeTrue())
			Expect(rootLinks()).To(Equal(linksBefore))
			r = run(labArgs(name, "down")...)
			Expect(r.code).To(Equal(0), "second down: "+r.String())
		})
	})
}

// checkMatrixAndWire runs the full ping matrix while capturing on host
// index hi's underlay and checks that host's cross-host echoes, with the
// lab's own wire check (which also pins each echo's destination MAC).
func checkMatrixAndWire(st *lab.State, hi int) {
	l, err := lab.Open(context.Background(), stateRoot, st.Name, lab.Options{Binary: bin, Command: "e2e wire check"})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer l.Close()
	st = l.Snapshot()
	h := st.Hosts[hi]
	eps := st.Endpoints("")
	if st.Backend != "udp" {
		// The wire check pins a destination MAC only for the peers it has
		// one for: without every host's, a wrong MAC would go unnoticed.
		macs, err := st.WireMACs(context.Background(), "")
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		ExpectWithOffset(1, macs).To(HaveLen(len(st.Hosts)), "a wire MAC for every host")
	}
	res, err := l.CheckWire(context.Background(), lab.WireCheck{Host: h.Name, CheckMACs: true,
		Traffic: func(ctx context.Context) ([]lab.Endpoint, *lab.Matrix, error) {
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			m, err := pingMatrix(ctx, eps, nil)
			return eps, m, err
		}})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	ExpectWithOffset(1, res.Matrix.OK()).To(BeTrue(), "ping matrix:\n%s", res.Matrix)
	ExpectWithOffset(1, res.OK).To(BeTrue(), res.Summary)
	ExpectWithOffset(1, res.Echoes).To(Equal(len(h.Containers)*(len(eps)-len(h.Containers))), "every cross-host echo from %s checked", h.Name)
}

func nthHost(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

var _ = Describe("lab", func() {
	labSpecs("udp", "e2eudp")
	labSpecs("vxlan", "e2evx")
	labSpecs("host-gw", "e2ehg")
})
