package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// cniDir is where `make cni-plugins` puts the plugins.
func cniDir() string {
	d := filepath.Join(repoRoot(), "bin", "cni")
	if _, err := os.Stat(filepath.Join(d, "flannel")); err != nil {
		missing("no CNI plugins in bin/cni: run `make cni-plugins`")
	}
	return d
}

var _ = Describe("containers attached by the real CNI plugins (--runtime cni)", func() {
	for _, c := range []struct{ backend, agent string }{{"udp", ""}, {"vxlan", ""}, {"vxlan", "flanneld"}} {
		label := c.backend
		if c.agent != "" {
			label += " with upstream flanneld (the Kubernetes node path)"
		}
		It("builds and verifies a "+label+" lab, and leaves nothing of CNI behind", func() {
			name := "e2ecni" + c.backend[:2] + c.agent
			args := []string{"up", "--runtime", "cni", "--cni-dir", cniDir(), "--backend", c.backend, "--hosts", "2", "--containers", "2"}
			if c.agent != "" {
				args = append(args, "--agent", needFlanneld())
			}
			r := run(labArgs(name, args...)...)
			DeferCleanup(func() { run(labArgs(name, "down")...) })
			if r.code != 0 {
				dumpLab(name)
			}
			Expect(r.code).To(Equal(0), r.String())
			Expect(r.stdout).To(ContainSubstring("runtime cni"))
			st := status(name)
			Expect(string(st.Runtime)).To(Equal("cni"))
			for _, h := range st.Hosts {
				env, err := subnetenv.Read(h.SubnetFile)
				Expect(err).NotTo(HaveOccurred())
				br := inNetns(h.Netns, 5*time.Second, "ip", "-o", "-4", "addr", "show", "dev", plan.CNIBridge)
				Expect(br.code).To(Equal(0), "%s has no %s: %s", h.Name, plan.CNIBridge, br)
				Expect(br.stdout).To(ContainSubstring(env.Subnet.String()), "cni0 carries FLANNEL_SUBNET's first address")
				mtu := inNetns(h.Netns, 5*time.Second, "cat", "/sys/class/net/"+plan.CNIBridge+"/mtu")
				Expect(strings.TrimSpace(mtu.stdout)).To(Equal(strconv.Itoa(env.MTU)))
				for _, ct := range h.Containers {
					m := inNetns(ct.Netns, 5*time.Second, "cat", "/sys/class/net/eth0/mtu")
					Expect(strings.TrimSpace(m.stdout)).To(Equal(strconv.Itoa(env.MTU)), "%s/%s's MTU is FLANNEL_MTU", h.Name, ct.Name)
					Expect(ct.Prefix).To(HavePrefix(ct.IP + "/"))
					Expect(ct.Gateway).To(Equal(env.Subnet.Addr().String()))
				}
			}
			hostLocal := filepath.Join(st.StateDir, st.Hosts[0].Name, "cni")
			Expect(hostLocal).To(BeADirectory())
			r = run(labArgs(name, "down")...)
			Expect(r.code).To(Equal(0), r.String())
			Expect(netnsWithPrefix(plan.Names{Lab: name}.Prefix())).To(BeEmpty())
			_, err := os.Stat(st.StateDir)
			Expect(os.IsNotExist(err)).To(BeTrue(), "the CNI data dirs went with the state dir")
			_, err = os.Stat("/var/lib/cni/networks/cbr0")
			Expect(os.IsNotExist(err)).To(BeTrue(), "nothing under /var/lib/cni")
		})
	}
})

var _ = Describe("tenant networks on the same hosts", func() {
	for _, backend := range []string{"vxlan", "udp"} {
		It("verifies both matrices, the isolation between them and each one's encapsulation ("+backend+")", func() {
			name := "e2etl" + backend[:2]
			r := run(labArgs(name, "up", "--network", "red=10.10.0.0/16", "--network", "blue=10.10.0.0/16", "--backend", backend,
				"--hosts", "3", "--containers", "1", "--seed", "5")...)
			DeferCleanup(func() { run(labArgs(name, "down")...) })
			if r.code != 0 {
				dumpLab(name)
			}
			Expect(r.code).To(Equal(0), r.String())
			for _, want := range []string{"red: ping matrix 6/6", "blue: ping matrix 6/6", "an address in both networks: answered by red's", "an address only in blue: no reply, nothing reached"} {
				Expect(r.stdout).To(ContainSubstring(want))
			}
			if backend == "vxlan" {
				Expect(r.stdout).To(ContainSubstring("blue: wire: 2 cross-host echoes from h1 seen encapsulated (vxlan port 8472, VNI 2)"))
			} else {
				Expect(r.stdout).To(ContainSubstring("blue: wire: 2 cross-host echoes from h1 seen encapsulated (udp port 8286)"))
			}
			st := status(name)
			Expect(st.Networks).To(HaveLen(2))
			Expect(st.Networks[0].Name).To(Equal("red"))
			Expect(st.Networks[1].Network).To(Equal("10.10.0.0/16"))
			ips := map[string]int{}
			for _, h := range st.Hosts {
				Expect(h.Containers).To(HaveLen(2))
				for _, c := range h.Containers {
					Expect(c.Network).To(BeElementOf("red", "blue"))
					Expect(c.Name).To(HavePrefix(c.Network + "-c"))
					ips[c.IP]++
				}
			}
			Expect(ips).To(ContainElement(2), "with the seed, red and blue share addresses")
			r = run("exec", "--name", name, "--state-dir", stateRoot, "h1/red-c1", "--", "ip", "-o", "-4", "addr", "show", "eth0")
			Expect(r.code).To(Equal(0), r.String())
			Expect(r.stdout).To(ContainSubstring(st.Hosts[0].Containers[0].IP))
		})
	}

	It("refuses overlapping host-gw tenants, naming both", func() {
		r := run(labArgs("e2etlhg", "up", "--network", "red=10.10.0.0/16", "--network", "blue=10.10.0.0/16", "--backend", "host-gw")...)
		Expect(r.code).NotTo(Equal(0))
		Expect(r.stderr).To(ContainSubstring("overlaps network red"))
		Expect(r.stderr).To(ContainSubstring("blue"))
		Expect(netnsWithPrefix("ol-e2etlhg-")).To(BeEmpty())
	})
})
