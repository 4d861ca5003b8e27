package e2e

// The agent side of tenant networks (issue 14), before the lab builds
// them: a single-network lab gives hosts and etcd, the specs write two
// network configs with the same CIDR, replace each host's agent with one
// multi-network agent (overlaylab agent --networks red,blue) and build one
// container per network per host by hand, with the bridge side the
// container runtime owes the agent (bridge br-NAME, its connected route in
// the network's table, ip rule iif br-NAME, ct zone set). Then: traffic
// within a network crosses hosts, across networks nothing does, on the
// wire each network has its own VNI or port, in the kernel its own
// conntrack zone, and a datagram injected on red's VNI or port never
// reaches a blue container.

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
	"github.com/overlaylab/overlaylab/pcapcheck"
)

// tenantCase is one backend's run of the specs.
type tenantCase struct {
	lab     string
	backend string
	cfg     map[string]string // network → config
	port    map[string]uint16 // network → its UDP port on the wire
	vni     map[string]uint32 // vxlan: network → its VNI
}

var tenantNetworks = []string{"red", "blue"}

// tenantHost is a lab host running the multi-network agent.
type tenantHost struct {
	name, netns string
	underlay    netip.Addr
	pid         int
	log         string
	env         map[string]subnetenv.Env // network → its env file
}

// addr is host address n (1 = the bridge, 2 = the container, 3 = the
// blue container's second address, which no red container has) in the
// network's subnet here.
func (h tenantHost) addr(network string, n int) netip.Addr {
	a := h.env[network].LeaseSubnet().Addr().As4()
	a[3] += byte(n)
	return netip.AddrFrom4(a)
}

func (h tenantHost) container(network string) string { return h.netns + "-" + network + "-c1" }

// sh runs a command and fails the spec when it fails.
func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}

// httpIn fetches http://127.0.0.1:9285/path from inside ns.
func httpIn(ns, path string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: nsutil.DialContext(ns), DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:9285" + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startTenantAgent replaces the host's agent with a multi-network one and
// waits until it is ready. The seed makes both networks of a host lease the
// same subnet (the same random choice among the same free subnets, as long
// as the hosts start one after the other), so that addresses exist in both.
func startTenantAgent(labName, endpoint string, h *tenantHost, dir string) {
	r := run(labArgs(labName, "kill", h.name)...)
	Expect(r.code).To(Equal(0), r.String())
	subnetDir := filepath.Join(dir, h.name)
	h.log = filepath.Join(dir, h.name+"-tenants-agent.log")
	logf, err := os.Create(h.log)
	Expect(err).NotTo(HaveOccurred())
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", h.netns, bin, "agent", "--networks", strings.Join(tenantNetworks, ","),
		"--etcd-endpoints", endpoint, "--iface", "eth0", "--subnet-dir", subnetDir,
		"--healthz-port", "9285", "--subnet-seed", "14")
	// The lab's mark: `down` ends it should the spec not get to.
	cmd.Env = append(os.Environ(), "OVERLAYLAB_LAB="+labName)
	cmd.Stdout, cmd.Stderr = logf, logf
	Expect(cmd.Start()).To(Succeed())
	h.pid = cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reaped whenever it ends
	DeferCleanup(func() {
		_ = syscall.Kill(h.pid, syscall.SIGTERM)
		Eventually(func() bool { return gone(h.pid) }).WithTimeout(10 * time.Second).Should(BeTrue())
	})
	Eventually(func() int { code, _ := httpIn(h.netns, "/readyz"); return code }).WithTimeout(30*time.Second).
		Should(Equal(200), "the multi-network agent on %s never became ready; log %s", h.name, h.log)
	h.env = map[string]subnetenv.Env{}
	for _, n := range tenantNetworks {
		env, err := subnetenv.Read(filepath.Join(subnetDir, n+".env"))
		Expect(err).NotTo(HaveOccurred())
		h.env[n] = env
	}
}

// buildContainer does the container runtime's part for one container of
// network n on host h: bridge br-NAME with the subnet's first address and
// no route in main, its connected route in the network's table, the rule
// and the conntrack zone for what arrives on the bridge, and a container
// namespace (named so that the lab's down removes it) on a veth.
func buildContainer(h tenantHost, n string) {
	env := h.env[n]
	table, zone := fmt.Sprint(env.RouteTable), fmt.Sprint(env.CTZone)
	br, c := "br-"+n, h.container(n)
	sub := env.LeaseSubnet()
	mtu := fmt.Sprint(env.MTU)
	sh("ip", "netns", "add", c)
	sh("ip", "-n", h.netns, "link", "add", br, "type", "bridge")
	sh("ip", "-n", h.netns, "addr", "add", env.Subnet.String(), "dev", br, "noprefixroute")
	sh("ip", "-n", h.netns, "link", "set", br, "up")
	sh("ip", "-n", h.netns, "route", "add", sub.String(), "dev", br, "table", table, "proto", "kernel", "scope", "link", "src", env.Subnet.Addr().String())
	sh("ip", "-n", h.netns, "rule", "add", "iif", br, "lookup", table, "priority", "1000")
	sh("ip", "netns", "exec", h.netns, "nft", "add table inet e2e-bridges; add chain inet e2e-bridges prerouting { type filter hook prerouting priority raw; }; add rule inet e2e-bridges prerouting iifname "+br+" ct zone set "+zone)
	sh("ip", "-n", h.netns, "link", "add", "v"+n, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", c)
	sh("ip", "-n", h.netns, "link", "set", "v"+n, "master", br, "up")
	sh("ip", "-n", c, "link", "set", "lo", "up")
	sh("ip", "-n", c, "link", "set", "eth0", "up")
	sh("ip", "-n", c, "addr", "add", netip.PrefixFrom(h.addr(n, 2), sub.Bits()).String(), "dev", "eth0")
	if n == "blue" {
		sh("ip", "-n", c, "addr", "add", netip.PrefixFrom(h.addr(n, 3), sub.Bits()).String(), "dev", "eth0")
	}
	sh("ip", "-n", c, "route", "add", "default", "via", env.Subnet.Addr().String())
}

// pattern is a ping payload pattern that names the network on the wire.
func pattern(n string) string { return hex.EncodeToString([]byte(strings.Repeat(n, 16))[:16]) }

// pingFrom pings dst from a container, with the network's pattern.
func pingFrom(ns, n string, dst netip.Addr, count int) result {
	return inNetns(ns, 10*time.Second, "ping", "-c", fmt.Sprint(count), "-W", "1", "-i", "0.2", "-p", pattern(n), dst.String())
}

// seenIn captures on eth0 inside ns while send runs and reports whether a
// frame carrying m went by.
func seenIn(ns string, m []byte, send func()) bool {
	capt, err := pcapcheck.Start(context.Background(), ns, "eth0")
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	send()
	time.Sleep(300 * time.Millisecond)
	frames, err := capt.Stop()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	for _, f := range frames {
		if bytes.Contains(f.Data, m) {
			return true
		}
	}
	return false
}

func dumpTenants(hosts []tenantHost) {
	for _, h := range hosts {
		for _, c := range [][]string{{"ip", "rule"}, {"ip", "route", "show", "table", "all"}, {"ip", "neigh"}, {"bridge", "fdb", "show"}, {"nft", "list", "ruleset"}, {"cat", "/proc/net/nf_conntrack"}} {
			r := inNetns(h.netns, 5*time.Second, c[0], c[1:]...)
			GinkgoWriter.Printf("--- %s: %s ---\n%s%s\n", h.name, strings.Join(c, " "), r.stdout, r.stderr)
		}
		log, _ := os.ReadFile(h.log)
		GinkgoWriter.Printf("--- %s multi-network agent log ---\n%s\n", h.name, log)
	}
}

var _ = Describe("tenant networks in one agent", func() {
	for _, tc := range []tenantCase{{
		lab: "e2etn1", backend: "vxlan",
		cfg: map[string]string{
			"red":  `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`,
			"blue": `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`,
		},
		port: map[string]uint16{"red": 8472, "blue": 8472},
		vni:  map[string]uint32{"red": 1, "blue": 2},
	}, {
		lab: "e2etn2", backend: "udp",
		cfg: map[string]string{
			"red":  `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":8285}}`,
			"blue": `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":8286}}`,
		},
		port: map[string]uint16{"red": 8285, "blue": 8286},
	}} {
		Describe(tc.backend, Ordered, func() {
			var hosts []tenantHost
			BeforeAll(func() {
				r := run(labArgs(tc.lab, "up", "--hosts", "2", "--containers", "0", "--backend", tc.backend)...)
				Expect(r.code).To(Equal(0), r.String())
				DeferCleanup(func() { run(labArgs(tc.lab, "down")...) })
				st := status(tc.lab)
				for _, n := range tenantNetworks {
					putKey(st, "/coreos.com/network/"+n+"/config", tc.cfg[n])
				}
				dir := GinkgoT().TempDir()
				hosts = nil
				for _, h := range st.Hosts {
					th := tenantHost{name: h.Name, netns: h.Netns, underlay: netip.MustParseAddr(h.UnderlayIP)}
					startTenantAgent(tc.lab, st.Etcd.Endpoints[0], &th, dir)
					hosts = append(hosts, th)
				}
				for _, h := range hosts {
					Expect(h.env["red"].LeaseSubnet()).To(Equal(h.env["blue"].LeaseSubnet()),
						"%s: red and blue leased different subnets; the specs need an address that exists in both", h.name)
					for _, n := range tenantNetworks {
						buildContainer(h, n)
					}
				}
			})
			AfterEach(func() {
				if CurrentSpecReport().Failed() {
					dumpTenants(hosts)
				}
			})

			It("writes each network's env file with its own routing table and conntrack zone", func() {
				for _, h := range hosts {
					red, blue := h.env["red"], h.env["blue"]
					Expect([]uint32{red.RouteTable, blue.RouteTable}).To(Equal([]uint32{1001, 1002}), h.name)
					Expect([]uint16{red.CTZone, blue.CTZone}).To(Equal([]uint16{1001, 1002}), h.name)
					Expect(red.Network).To(Equal(netip.MustParsePrefix("10.10.0.0/16")))
					Expect(blue.Network).To(Equal(red.Network))
				}
				keys := etcdKeys(status(tc.lab))
				for _, n := range tenantNetworks {
					for _, h := range hosts {
						Expect(keys).To(HaveKey("/coreos.com/network/"+n+"/subnets/"+strings.ReplaceAll(h.env[n].LeaseSubnet().String(), "/", "-")), n)
					}
				}
				code, body := httpIn(hosts[0].netns, "/metrics")
				Expect(code).To(Equal(200))
				Expect(body).To(ContainSubstring(`overlaylab_peers{network="red"} 1`))
				Expect(body).To(ContainSubstring(`overlaylab_peers{network="blue"} 1`))
			})

			It("routes each network in its own table only: rule on its device, unreachable default, nothing in main", func() {
				for _, h := range hosts {
					devs := map[string]string{"red": "flannel.1", "blue": "flannel.2"}
					if tc.backend == "udp" {
						devs = map[string]string{"red": "fl-red", "blue": "fl-blue"}
					}
					rules := sh("ip", "-n", h.netns, "rule")
					main := sh("ip", "-n", h.netns, "route", "show", "table", "main")
					Expect(main).NotTo(ContainSubstring("proto 77"), h.name)
					Expect(main).NotTo(ContainSubstring("flannel."), h.name)
					Expect(main).NotTo(ContainSubstring("fl-"), h.name)
					nft := sh("ip", "netns", "exec", h.netns, "nft", "list", "table", "inet", "overlaylab-tenants")
					for _, n := range tenantNetworks {
						table := fmt.Sprint(h.env[n].RouteTable)
						Expect(rules).To(ContainSubstring("1000:\tfrom all iif "+devs[n]+" lookup "+table+" proto 77"), h.name)
						rt := sh("ip", "-n", h.netns, "route", "show", "table", table)
						Expect(rt).To(ContainSubstring("unreachable default proto 77"), h.name)
						Expect(rt).To(ContainSubstring("10.10.0.0/16 dev "+devs[n]+" proto 77"), h.name)
						Expect(nft).To(ContainSubstring(fmt.Sprintf(`iifname "%s" ct zone set %d`, devs[n], h.env[n].CTZone)), h.name)
					}
				}
			})

			It("answers within each network across hosts", func() {
				h1, h2 := hosts[0], hosts[1]
				for _, n := range tenantNetworks {
					r := pingFrom(h1.container(n), n, h2.addr(n, 2), 2)
					Expect(r.code).To(Equal(0), "%s: %s", n, r.String())
					r = pingFrom(h2.container(n), n, h1.addr(n, 2), 2)
					Expect(r.code).To(Equal(0), "%s: %s", n, r.String())
				}
				r := pingFrom(h1.container("blue"), "blue", h2.addr("blue", 3), 2)
				Expect(r.code).To(Equal(0), "blue's second address: %s", r.String())
			})

			It("gives a red container no reply from an address that exists only in blue, which sees nothing", func() {
				h1, h2 := hosts[0], hosts[1]
				blueOnly := h2.addr("blue", 3)
				// The address is live: blue reaches it.
				r := pingFrom(h1.container("blue"), "blue", blueOnly, 2)
				Expect(r.code).To(Equal(0), "blue cannot reach its own %s, so red's failure would prove nothing: %s", blueOnly, r.String())
				seen := seenIn(h2.container("blue"), []byte(strings.Repeat("red", 5)), func() {
					r = pingFrom(h1.container("red"), "red", blueOnly, 3)
				})
				Expect(r.code).NotTo(Equal(0), "red reached blue's %s: %s", blueOnly, r.String())
				Expect(r.stdout).To(ContainSubstring("0 received"))
				Expect(seen).To(BeFalse(), "red's echo reached the blue container")
			})

			It("delivers a ping to an address in both networks to red's container only", func() {
				h1, h2 := hosts[0], hosts[1]
				both := h2.addr("red", 2)
				Expect(h2.addr("blue", 2)).To(Equal(both))
				mark := []byte(strings.Repeat("red", 5))
				var r result
				var inRed bool
				inBlue := seenIn(h2.container("blue"), mark, func() {
					inRed = seenIn(h2.container("red"), mark, func() { r = pingFrom(h1.container("red"), "red", both, 3) })
				})
				Expect(r.code).To(Equal(0), r.String())
				Expect(inRed).To(BeTrue(), "the echo never reached red's container")
				Expect(inBlue).To(BeFalse(), "red's echo reached the blue container with the same address")
			})

			It("keeps each network's flows in its own conntrack zone", func() {
				h1, h2 := hosts[0], hosts[1]
				for _, n := range tenantNetworks {
					Expect(pingFrom(h1.container(n), n, h2.addr(n, 2), 1).code).To(Equal(0))
				}
				// red and blue containers have the same addresses: the same
				// flow twice, once per zone, on both hosts.
				flow := fmt.Sprintf("src=%s dst=%s type=8 ", h1.addr("red", 2), h2.addr("red", 2))
				for _, h := range hosts {
					ct := inNetns(h.netns, 5*time.Second, "cat", "/proc/net/nf_conntrack").stdout
					zones := map[string]bool{}
					for _, line := range strings.Split(ct, "\n") {
						if strings.Contains(line, flow) {
							f := strings.Fields(line)
							for _, x := range f {
								if z, ok := strings.CutPrefix(x, "zone="); ok {
									zones[z] = true
								}
							}
						}
					}
					Expect(zones).To(Equal(map[string]bool{"1001": true, "1002": true}), "%s: zones of %q\n%s", h.name, flow, ct)
				}
			})

			It("carries each network on its own VNI or port on the wire", func() {
				h1, h2 := hosts[0], hosts[1]
				capt, err := pcapcheck.Start(context.Background(), h2.netns, "eth0")
				Expect(err).NotTo(HaveOccurred())
				for _, n := range tenantNetworks {
					Expect(pingFrom(h1.container(n), n, h2.addr(n, 2), 3).code).To(Equal(0))
				}
				frames, err := capt.Stop()
				Expect(err).NotTo(HaveOccurred())
				kind := pcapcheck.KindUDP
				if tc.backend == "vxlan" {
					kind = pcapcheck.KindVXLAN
				}
				pat := map[string][]byte{}
				for _, n := range tenantNetworks {
					pat[n], _ = hex.DecodeString(pattern(n))
				}
				counts := map[string]int{}
				for _, f := range frames {
					for _, n := range tenantNetworks {
						if !bytes.Contains(f.Data, pat[n]) {
							continue
						}
						pkts := pcapcheck.Decode([]pcapcheck.Frame{f}, pcapcheck.Encap{Kind: kind, Port: tc.port[n], Network: netip.MustParsePrefix("10.10.0.0/16")})
						Expect(pkts).To(HaveLen(1), "%s frame not decoded", n)
						p := pkts[0]
						Expect(p.Encapsulated).To(Equal(kind), "%s frame not encapsulated: %s", n, p)
						Expect(p.UDPDst).To(Equal(tc.port[n]), "%s frame on the wrong port: %s", n, p)
						if kind == pcapcheck.KindVXLAN {
							Expect(p.VNI).To(Equal(tc.vni[n]), "%s frame with the wrong VNI: %s", n, p)
						}
						counts[n]++
					}
				}
				// Three requests and three replies each.
				Expect(counts["red"]).To(BeNumerically(">=", 6))
				Expect(counts["blue"]).To(BeNumerically(">=", 6))
			})

			It("never delivers a datagram injected on red's VNI or port to a blue container (spoofing), and delivers the control", func() {
				h1, h2 := hosts[0], hosts[1]
				blueOnly, both := h1.addr("blue", 3), h1.addr("red", 2)
				datagram := func(dst netip.Addr, m []byte) []byte {
					inner := innerEcho(h2.addr("red", 2).String(), dst.String(), m)
					if tc.backend != "vxlan" {
						return inner
					}
					mac := func(h tenantHost) net.HardwareAddr {
						hw, err := net.ParseMAC(strings.TrimSpace(inNetns(h.netns, 5*time.Second, "cat", "/sys/class/net/flannel.1/address").stdout))
						Expect(err).NotTo(HaveOccurred())
						return hw
					}
					return vxlanFrame(tc.vni["red"], mac(h1), mac(h2), inner)
				}
				to := netip.AddrPortFrom(h1.underlay, tc.port["red"])

				// The control: from a real peer, on red's VNI (port), to red's
				// container, whose address blue's container has too.
				ctl := marker("tn-ctl")
				var inRed bool
				inBlue := seenIn(h1.container("blue"), ctl, func() {
					inRed = seenIn(h1.container("red"), ctl, func() { sendUDP(h2.netns, to, datagram(both, ctl)) })
				})
				Expect(inRed).To(BeTrue(), "the injection method itself does not work: the spec would prove nothing")
				Expect(inBlue).To(BeFalse(), "a datagram on red's VNI (port) reached blue's container")

				// The attack: the same datagram to an address only blue has.
				atk := marker("tn-atk")
				Expect(seenIn(h1.container("blue"), atk, func() { sendUDP(h2.netns, to, datagram(blueOnly, atk)) })).
					To(BeFalse(), "a datagram on red's VNI (port) addressed to blue-only %s reached blue's container", blueOnly)
			})
		})
	}
})
