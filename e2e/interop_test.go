package e2e

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// flanneldPath is the upstream flanneld the suite runs: $FLANNELD, or the
// one `make flanneld` builds into bin/. Specs that need it skip without it
// (CI builds it before the suite).
func flanneldPath() string {
	if p := os.Getenv("FLANNELD"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(filepath.Dir(file)), "bin", "flanneld")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func needFlanneld() string {
	p := flanneldPath()
	if p == "" {
		missing("no upstream flanneld: run `make flanneld` (or set FLANNELD)")
	}
	return p
}

// exeOf is the binary a process runs.
func exeOf(pid int) string {
	p, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return p
}

// expectFlanneldHost checks that a host runs upstream flanneld, by its
// process and by what status says.
func expectFlanneldHost(h lab.HostState, flanneld string) {
	abs, _ := filepath.Abs(flanneld)
	ExpectWithOffset(1, exeOf(h.AgentPID)).To(Equal(abs), "%s's agentPID %d runs another binary", h.Name, h.AgentPID)
	ExpectWithOffset(1, h.Agent.Path).To(Equal(abs))
	ExpectWithOffset(1, h.Agent.Ours).To(BeFalse())
	ExpectWithOffset(1, h.Agent.Version).To(HavePrefix("v0.28"))
}

// expectFlanneldLease checks that flanneld's lease is in the schema
// overlaylab's agents read.
func expectFlanneldLease(st *lab.State, h lab.HostState, backend string) {
	v := etcdKeys(st)["/coreos.com/network/subnets/"+subnet.SubnetKey(netip.MustParsePrefix(h.Subnet))]
	var attrs subnet.LeaseAttrs
	ExpectWithOffset(1, json.Unmarshal([]byte(v), &attrs)).To(Succeed(), v)
	ExpectWithOffset(1, attrs.PublicIP.String()).To(Equal(h.UnderlayIP))
	if backend == "udp" {
		// Upstream's udp backend publishes no BackendType at all;
		// overlaylab's udp peers must (and do) accept that.
		ExpectWithOffset(1, attrs.BackendType).To(BeElementOf("udp", ""))
	} else {
		ExpectWithOffset(1, attrs.BackendType).To(Equal(backend))
	}
}

var _ = Describe("upstream flanneld as the lab's agent", func() {
	for _, backend := range []string{"udp", "vxlan", "host-gw"} {
		Describe("an all-flanneld "+backend+" lab", Ordered, func() {
			name := "e2efl" + map[string]string{"vxlan": "vx", "udp": "ud", "host-gw": "hg"}[backend]
			var flanneld string
			BeforeAll(func() {
				flanneld = needFlanneld()
				r := run(labArgs(name, "up", "--agent", flanneld, "--backend", backend, "--hosts", "3", "--containers", "1")...)
				DeferCleanup(func() { run(labArgs(name, "down")...) })
				if r.code != 0 {
					dumpLab(name)
				}
				Expect(r.code).To(Equal(0), r.String())
				Expect(r.stdout).To(ContainSubstring("ping matrix: 6/6 pairs answered"))
			})
			AfterEach(func() {
				if CurrentSpecReport().Failed() {
					dumpLab(name)
				}
			})

			It("runs flanneld on every host and says so in status", func() {
				st := status(name)
				for _, h := range st.Hosts {
					expectFlanneldHost(h, flanneld)
					expectFlanneldLease(st, h, backend)
				}
			})

			It("restarts a flanneld agent with kill and start, keeping its subnet", func() {
				st := status(name)
				h := st.Hosts[1]
				Expect(run(labArgs(name, "kill", h.Name, "--signal", "KILL")...).code).To(Equal(0))
				r := run(labArgs(name, "start", h.Name)...)
				Expect(r.code).To(Equal(0), r.String())
				after := status(name).Hosts[1]
				Expect(after.AgentPID).NotTo(Equal(h.AgentPID))
				expectFlanneldHost(after, flanneld)
				Expect(after.Subnet).To(Equal(h.Subnet))
				checkMatrixAndWire(status(name), 1)
			})

			It("adds a flanneld host (the lab's agent, without saying so) and removes it", func() {
				r := run(labArgs(name, "host", "add", "--containers", "1")...)
				Expect(r.code).To(Equal(0), r.String())
				st := status(name)
				Expect(st.Hosts).To(HaveLen(4))
				expectFlanneldHost(st.Hosts[3], flanneld)
				checkMatrixAndWire(st, 3)
				r = run(labArgs(name, "host", "remove", st.Hosts[3].Name)...)
				Expect(r.code).To(Equal(0), r.String())
			})
		})
	}

	for _, backend := range []string{"udp", "vxlan"} {
		Describe("a mixed "+backend+" lab (h1 overlaylab, h2 flanneld)", Ordered, func() {
			name := "e2emx" + backend[:2]
			var flanneld string
			BeforeAll(func() {
				flanneld = needFlanneld()
				r := run(labArgs(name, "up", "--agent", "h2="+flanneld, "--backend", backend, "--hosts", "2", "--containers", "1")...)
				DeferCleanup(func() { run(labArgs(name, "down")...) })
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

			It("runs overlaylab on h1 and flanneld on h2, encapsulated alike on both wires", func() {
				st := status(name)
				Expect(st.Hosts[0].Agent.Ours).To(BeTrue())
				Expect(st.Hosts[0].Agent.Version).To(HavePrefix("overlaylab "))
				expectFlanneldHost(st.Hosts[1], flanneld)
				checkMatrixAndWire(st, 0)
				checkMatrixAndWire(st, 1)
			})

			if backend == "udp" {
				// flanneld sends one datagram per packet and reads one at a
				// time: the fast datapath's merging (of flanneld's datagrams)
				// and cutting (of TSO batches into datagrams flanneld reads
				// one by one) must carry bulk data byte-exact both ways.
				It("carries TCP and UDP byte-exact between flanneld's host and a fast one", func() {
					st := status(name)
					Expect(readFile(st.Hosts[0].AgentLog)).To(ContainSubstring("fast udp datapath"))
					ufBulkBothWays(st, st.Hosts[0], st.Hosts[1], "flanneld interop")
				})
			}
		})
	}
})
