package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/pcapcheck"
	"github.com/overlaylab/overlaylab/topo"
)

// innerEcho is an IPv4 ICMP echo carrying marker.
func innerEcho(src, dst string, marker []byte) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 4242, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	Expect(gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, ic, gopacket.Payload(marker))).To(Succeed())
	return buf.Bytes()
}

// vxlanFrame wraps an IPv4 packet in VXLAN (VNI) and an inner Ethernet
// header addressed to dstMAC.
func vxlanFrame(vni uint32, dstMAC, srcMAC net.HardwareAddr, inner []byte) []byte {
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	eth := append(append(append([]byte{}, dstMAC...), srcMAC...), 0x08, 0x00)
	return append(append(hdr, eth...), inner...)
}

// sendUDP sends one datagram from inside a namespace.
func sendUDP(ns string, dst netip.AddrPort, payload []byte) {
	err := nsutil.DoNamed(ns, func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 { // a few copies: one lost packet must not pass for a drop
			if _, err := c.Write(payload); err != nil {
				return err
			}
		}
		return nil
	})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

func marker(tag string) []byte {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return []byte("overlaylab-" + tag + "-" + hex.EncodeToString(b))
}

// arrives sends with send() while capturing in the target container and
// reports whether a frame carrying m reached it.
func arrives(target lab.ContainerState, m []byte, send func()) bool {
	capt, err := pcapcheck.Start(context.Background(), target.Netns, "eth0")
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

func dropCount(ns, reason string) int {
	re := regexp.MustCompile(`(?m)^overlaylab_dropped_packets_total\{reason="` + reason + `"\} (\d+)$`)
	m := re.FindStringSubmatch(metrics(ns))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// attacker attaches a namespace to the underlay that is not a peer (and is
// not the lab's: the spec removes it).
func attacker(st *lab.State) string {
	ns := plan.Names{Lab: st.Name}.Prefix() + "atk"
	Expect(topo.CreateNS(ns)).To(Succeed())
	DeferCleanup(func() { _ = nsutil.Delete(ns) })
	Expect(topo.Attach(topo.Attachment{NodeNS: ns, NodeIf: "eth0", Addr: netip.MustParsePrefix("192.168.77.200/24"),
		BridgeNS: st.Underlay.Netns, Bridge: st.Underlay.Bridge, Port: "atk"})).To(Succeed())
	return ns
}

var _ = Describe("untrusted packets", func() {
	Describe("on the udp port", Ordered, func() {
		const name = "e2espu"
		var st *lab.State
		var atk string
		BeforeAll(func() {
			r := run(labArgs(name, "up", "--hosts", "3", "--containers", "1")...)
			Expect(r.code).To(Equal(0), r.String())
			DeferCleanup(func() { run(labArgs(name, "down")...) })
			st = status(name)
			atk = attacker(st)
		})
		AfterEach(func() {
			if CurrentSpecReport().Failed() {
				dumpLab(name)
			}
		})

		It("reach a container from a real peer with its own inner source (the control)", func() {
			h1, h2 := st.Hosts[0], st.Hosts[1]
			m := marker("ctl")
			pkt := innerEcho(h2.Containers[0].IP, h1.Containers[0].IP, m)
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(h2.Netns, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8285), pkt)
			})).To(BeTrue(), "the injection method itself does not work: the other specs would prove nothing")
		})

		It("never reach a container from a namespace that is not a peer", func() {
			h1, h2 := st.Hosts[0], st.Hosts[1]
			before := dropCount(h1.Netns, "not_peer")
			m := marker("atk")
			pkt := innerEcho(h2.Containers[0].IP, h1.Containers[0].IP, m)
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(atk, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8285), pkt)
			})).To(BeFalse())
			Eventually(func() int { return dropCount(h1.Netns, "not_peer") }).Should(BeNumerically(">=", before+3))
		})

		It("never reach a container from a peer forging another host's inner source", func() {
			h1, h2, h3 := st.Hosts[0], st.Hosts[1], st.Hosts[2]
			before := dropCount(h1.Netns, "spoofed")
			m := marker("forged")
			pkt := innerEcho(h3.Containers[0].IP, h1.Containers[0].IP, m)
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(h2.Netns, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8285), pkt)
			})).To(BeFalse())
			Eventually(func() int { return dropCount(h1.Netns, "spoofed") }).Should(BeNumerically(">=", before+3))
		})

		It("survive garbage on the port", func() {
			h1 := st.Hosts[0]
			before := dropCount(h1.Netns, "malformed") + dropCount(h1.Netns, "not_ipv4")
			for _, g := range [][]byte{{}, {0x45}, bytes.Repeat([]byte{0xff}, 1400), {0x60, 0, 0, 0}} {
				sendUDP(st.Hosts[1].Netns, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8285), g)
			}
			Eventually(func() int { return dropCount(h1.Netns, "malformed") + dropCount(h1.Netns, "not_ipv4") }).Should(BeNumerically(">", before))
			Expect(syscallAlive(h1.AgentPID)).To(BeTrue())
			checkMatrixAndWire(st, 0)
		})
	})

	Describe("on the vxlan port", Ordered, func() {
		const name = "e2espv"
		var st *lab.State
		var atk string
		var macs map[string]net.HardwareAddr
		BeforeAll(func() {
			r := run(labArgs(name, "up", "--hosts", "3", "--containers", "1", "--backend", "vxlan")...)
			Expect(r.code).To(Equal(0), r.String())
			DeferCleanup(func() { run(labArgs(name, "down")...) })
			st = status(name)
			atk = attacker(st)
			var err error
			macs, err = st.WireMACs(context.Background(), "")
			Expect(err).NotTo(HaveOccurred())
		})

		frame := func(src, dst lab.HostState, m []byte) []byte {
			return vxlanFrame(1, macs[dst.Name], macs[src.Name], innerEcho(src.Containers[0].IP, dst.Containers[0].IP, m))
		}

		It("reach a container from a real peer (the control)", func() {
			h1, h2 := st.Hosts[0], st.Hosts[1]
			m := marker("ctl")
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(h2.Netns, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8472), frame(h2, h1, m))
			})).To(BeTrue(), "the injection method itself does not work: the other spec would prove nothing")
		})

		It("never reach a container from a namespace that is not a peer", func() {
			h1, h2 := st.Hosts[0], st.Hosts[1]
			m := marker("atk")
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(atk, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8472), frame(h2, h1, m))
			})).To(BeFalse())
		})

		It("are refused from a host whose lease went away", func() {
			h1, h3 := st.Hosts[0], st.Hosts[2]
			// Kill first: a live agent would take its lease straight back.
			r := run(labArgs(name, "kill", h3.Name, "--signal", "KILL")...)
			Expect(r.code).To(Equal(0), r.String())
			deleteLease(st, h3.Subnet)
			Eventually(func() int { return peersGauge(h1.Netns) }).WithTimeout(3 * time.Second).Should(Equal(1))
			m := marker("gone")
			Expect(arrives(h1.Containers[0], m, func() {
				sendUDP(h3.Netns, netip.AddrPortFrom(netip.MustParseAddr(h1.UnderlayIP), 8472), frame(h3, h1, m))
			})).To(BeFalse())
		})
	})
})
