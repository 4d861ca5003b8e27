package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/pcapcheck"
)

// The udp backend's datapaths under real traffic: TCP and UDP payloads of
// every awkward size pushed between containers and echoed back byte-exact,
// while the wire is checked datagram by datagram. "fast" (TUN GSO/GRO, UDP
// GSO/GRO, batched syscalls), "simple" (one packet per syscall) and fast with
// every offload turned off (OVERLAYLAB_UDP_OFFLOADS=none) must all put the
// same thing on the wire: UDP to port 8285 carrying exactly one bare inner
// IPv4 packet of at most the overlay MTU, with valid IP and TCP/UDP
// checksums. Then a fast host and a simple host talk to each other.

type ufVariant struct {
	name     string
	lab      string
	mode     string
	env      []string
	features string // expected in the agent's "fast udp datapath" log line
	gso      bool   // UDP GSO sends: the capture sees frames before the kernel cuts them
}

var ufVariants = []ufVariant{
	{name: "fast", lab: "e2efast", mode: "fast", gso: true,
		features: "tun_vnet_hdr=true tun_tso=true"},
	{name: "simple", lab: "e2esimp", mode: "simple"},
	{name: "fast without offloads", lab: "e2enoof", mode: "fast", env: []string{"OVERLAYLAB_UDP_OFFLOADS=none"},
		features: "tun_vnet_hdr=false tun_tso=false tun_uso=false udp_gso=false udp_gro=false"},
}

// TCP payload sizes: around the MSS (MTU − 40) and the MTU, odd ones, and
// sizes that need many TSO batches.
func ufTCPSizes(mtu int) []int {
	mss := mtu - 40
	return []int{1, 2, 3, 7, 100, 536, 1000, 1399, 1400, 1401, mss - 1, mss, mss + 1, mtu - 1, mtu, mtu + 1,
		2*mss + 1, 9000, 12345, 65535, 65536, 65537, 99999, 1 << 20, 4<<20 + 3}
}

// UDP payload sizes: up to what fits the overlay MTU unfragmented (MTU − 28),
// then some that the containers' kernels fragment.
func ufUDPSizes(mtu int) []int {
	max := mtu - 28
	return []int{1, 2, 3, 17, 100, 512, 1000, 1399, 1400, 1401, max - 1, max, max + 1, 2000, 2*max + 1, 9000, 30001, 65507}
}

func ufPayload(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

var _ = Describe("fast udp datapath", Ordered, func() {
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			for _, v := range ufVariants {
				if _, err := os.Stat(plan.StateDir(stateRoot, v.lab)); err == nil {
					dumpLab(v.lab)
				}
			}
		}
	})

	It("has a wire check that catches what it is meant to catch", func() {
		nw := netip.MustParsePrefix("10.10.0.0/16")
		tcp := func(n int) []byte { return ufInnerTCP("10.10.1.2", "10.10.2.3", n) }
		good := tcp(1472)
		corrupt := bytes.Clone(good)
		corrupt[len(corrupt)-1] ^= 1
		short := tcp(700)
		cases := []struct {
			name    string
			frame   []byte
			problem string
			gso     int
		}{
			{"a good datagram", ufFrame(8285, good), "", 0},
			{"a corrupt inner TCP checksum", ufFrame(8285, corrupt), "inner TCP checksum invalid", 0},
			{"two packets in one datagram", ufFrame(8285, append(tcp(100), tcp(100)...)), "200-byte UDP payload carries a 100-byte inner packet", 0},
			{"an inner packet over the MTU", ufFrame(8285, tcp(1473)), "1501-byte datagram > MTU 1472 + 28", 0},
			{"container traffic outside the tunnel", ufEth(good), "outside the tunnel", 0},
			{"a UDP GSO send", ufFrame(8285, append(append(bytes.Clone(good), good...), short...)), "", 1},
			{"a UDP GSO send with a short packet inside", ufFrame(8285, append(append(bytes.Clone(good), short...), good...)), "only the last may be shorter", 1},
			{"another port", ufFrame(8472, good), "", 0},
		}
		for _, c := range cases {
			w := ufCheckWire([]pcapcheck.Frame{{Data: c.frame}}, 1472, nw)
			if c.problem == "" {
				Expect(w.problems).To(BeEmpty(), c.name)
			} else {
				Expect(strings.Join(w.problems, "\n")).To(ContainSubstring(c.problem), c.name)
			}
			Expect(w.gsoFrames).To(Equal(c.gso), c.name)
		}
	})

	for _, v := range ufVariants {
		Describe(v.name+" mode", func() {
			BeforeAll(func() {
				cmd := exec.Command(bin, labArgs(v.lab, "up", "--hosts", "2", "--containers", "1", "--agent-arg=--udp-mode="+v.mode)...)
				cmd.Env = append(os.Environ(), v.env...)
				r := runCmd(cmd)
				DeferCleanup(func() { run(labArgs(v.lab, "down")...) })
				if r.code != 0 {
					dumpLab(v.lab)
				}
				Expect(r.code).To(Equal(0), r.String())
				Expect(r.stdout).To(ContainSubstring("ping matrix: 2/2 pairs answered"))
			})

			It("runs the datapath it was asked for", func() {
				for _, h := range status(v.lab).Hosts {
					log := readFile(h.AgentLog)
					if v.mode == "simple" {
						Expect(log).NotTo(ContainSubstring("fast udp datapath"), h.Name)
						Expect(log).To(ContainSubstring("mode=simple"), h.Name)
						continue
					}
					Expect(log).To(MatchRegexp(`msg="fast udp datapath".*`+regexp.QuoteMeta(v.features)), h.Name)
				}
			})

			It("delivers TCP payloads of every size byte-exact both ways, one valid packet per datagram on the wire", func() {
				st := status(v.lab)
				h1, h2 := st.Hosts[0], st.Hosts[1]
				frames := ufCapture(h1.Netns, func() {
					ufTCPExchange(h1.Containers[0], h2.Containers[0], ufTCPSizes(h1.MTU))
					ufTCPExchange(h2.Containers[0], h1.Containers[0], []int{1, 1401, h1.MTU + 1, 65537, 1 << 20})
				})
				w := ufCheckWire(frames, h1.MTU, netip.MustParsePrefix(st.Network))
				GinkgoWriter.Printf("%s: %s\n", v.name, w)
				Expect(w.problems).To(BeEmpty(), w.String())
				Expect(w.innerTCP).To(BeNumerically(">", 1000), w.String())
				Expect(w.maxInner).To(Equal(h1.MTU), "full-size TCP segments should fill the MTU: %s", w)
				if v.gso {
					Expect(w.gsoFrames).To(BeNumerically(">", 0), "no UDP GSO send seen: %s", w)
				} else {
					Expect(w.gsoFrames).To(BeZero(), w.String())
				}
				ufExpectNoDrops(st)
			})

			It("delivers UDP datagrams of every size byte-exact both ways, fragmented ones too, and a UDP GSO send", func() {
				st := status(v.lab)
				h1, h2 := st.Hosts[0], st.Hosts[1]
				frames := ufCapture(h1.Netns, func() {
					ufUDPExchange(h1.Containers[0], h2.Containers[0], ufUDPSizes(h1.MTU))
					ufUDPExchange(h2.Containers[0], h1.Containers[0], []int{1, h1.MTU - 28, h1.MTU - 27, 9000})
					ufUDPGSOSend(h1.Containers[0], h2.Containers[0], 1000, 20)
				})
				w := ufCheckWire(frames, h1.MTU, netip.MustParsePrefix(st.Network))
				GinkgoWriter.Printf("%s: %s\n", v.name, w)
				Expect(w.problems).To(BeEmpty(), w.String())
				Expect(w.innerUDP).To(BeNumerically(">", 2*len(ufUDPSizes(h1.MTU))), w.String())
				Expect(w.innerFrags).To(BeNumerically(">", 0), "no fragments seen: %s", w)
				ufExpectNoDrops(st)
			})
		})
	}

	Describe("a fast host and a simple host", func() {
		const name = "e2emix"
		BeforeAll(func() {
			r := run(labArgs(name, "up", "--hosts", "2", "--containers", "1", "--agent-arg=--udp-mode=fast")...)
			DeferCleanup(func() { run(labArgs(name, "down")...) })
			Expect(r.code).To(Equal(0), r.String())
			r = run(labArgs(name, "host", "add", "--containers", "1", "--agent-arg=--udp-mode=simple")...)
			Expect(r.code).To(Equal(0), r.String())
		})

		It("pass the full ping matrix and carry TCP and UDP both ways byte-exact", func() {
			st := status(name)
			Expect(st.Hosts).To(HaveLen(3))
			Expect(readFile(st.Hosts[0].AgentLog)).To(ContainSubstring("fast udp datapath"))
			Expect(readFile(st.Hosts[2].AgentLog)).To(ContainSubstring("mode=simple"))
			Expect(readFile(st.Hosts[2].AgentLog)).NotTo(ContainSubstring("fast udp datapath"))

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, err := pingMatrix(ctx, st.Endpoints(""), nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(m.OK()).To(BeTrue(), "ping matrix:\n%s", m)

			ufBulkBothWays(st, st.Hosts[0], st.Hosts[2], "interop")
			ufExpectNoDrops(st)
		})
	})
})

// ufBulkBothWays carries TCP (up to 4 MiB) and UDP payloads byte-exact both
// ways between the first containers of ours and theirs, capturing on ours'
// underlay, and checks every datagram of the capture.
func ufBulkBothWays(st *lab.State, ours, theirs lab.HostState, label string) {
	GinkgoHelper()
	frames := ufCapture(ours.Netns, func() {
		sizes := []int{1, 1400, ours.MTU + 1, 65537, 1 << 20, 4 << 20}
		ufTCPExchange(ours.Containers[0], theirs.Containers[0], sizes)
		ufTCPExchange(theirs.Containers[0], ours.Containers[0], sizes)
		ufUDPExchange(ours.Containers[0], theirs.Containers[0], []int{1, ours.MTU - 28, 9000})
		ufUDPExchange(theirs.Containers[0], ours.Containers[0], []int{1, ours.MTU - 28, 9000})
	})
	w := ufCheckWire(frames, ours.MTU, netip.MustParsePrefix(st.Network))
	GinkgoWriter.Printf("%s: %s\n", label, w)
	Expect(w.problems).To(BeEmpty(), w.String())
	Expect(w.innerTCP).To(BeNumerically(">", 1000), w.String())
}

// ufCapture captures on a host's eth0 while traffic runs.
func ufCapture(ns string, traffic func()) []pcapcheck.Frame {
	GinkgoHelper()
	capt, err := pcapcheck.Start(context.Background(), ns, "eth0")
	Expect(err).NotTo(HaveOccurred())
	defer capt.Stop()
	traffic()
	time.Sleep(100 * time.Millisecond)
	frames, err := capt.Stop()
	Expect(err).NotTo(HaveOccurred())
	s := capt.Stats()
	Expect(s.OverLimit).To(BeZero(), "capture over its memory limit: %+v", s)
	if s.KernelDrops > 0 {
		GinkgoWriter.Printf("capture on %s: kernel dropped %d frames (checked what was kept)\n", ns, s.KernelDrops)
	}
	return frames
}

// ufTCPExchange sends each payload over its own connection from one
// container to an echo server in another and expects it back exactly.
func ufTCPExchange(from, to lab.ContainerState, sizes []int) {
	GinkgoHelper()
	var l net.Listener
	Expect(nsutil.DoNamed(to.Netns, func() (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(to.IP, "0"))
		return err
	})).To(Succeed())
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	dial := nsutil.DialContext(from.Netns)
	for _, n := range sizes {
		payload := ufPayload(n, 1)
		got, err := ufTCPRoundTrip(dial, l.Addr().String(), payload)
		Expect(err).NotTo(HaveOccurred(), "TCP %d bytes %s → %s", n, from.Name, to.Name)
		Expect(len(got)).To(Equal(n), "TCP %d bytes %s → %s came back as %d", n, from.Name, to.Name, len(got))
		Expect(bytes.Equal(got, payload)).To(BeTrue(), "TCP %d bytes %s → %s came back different at byte %d", n, from.Name, to.Name, ufFirstDiff(got, payload))
	}
}

func ufTCPRoundTrip(dial func(context.Context, string, string) (net.Conn, error), addr string, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	return got, errors.Join(err, <-werr)
}

func ufFirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// ufUDPEcho starts a UDP echo server in a container.
func ufUDPEcho(c lab.ContainerState) *net.UDPConn {
	GinkgoHelper()
	conn := ufUDPClient(c)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return conn
}

// ufUDPClient opens a UDP socket on a container's address.
func ufUDPClient(c lab.ContainerState) *net.UDPConn {
	GinkgoHelper()
	var conn *net.UDPConn
	Expect(nsutil.DoNamed(c.Netns, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(c.IP)})
		return err
	})).To(Succeed())
	_ = conn.SetReadBuffer(4 << 20)
	return conn
}

// ufUDPExchange sends each payload as one datagram and expects the echo
// back exactly (a lost datagram is sent again, up to 3 times).
func ufUDPExchange(from, to lab.ContainerState, sizes []int) {
	GinkgoHelper()
	srv := ufUDPEcho(to)
	defer srv.Close()
	cli := ufUDPClient(from)
	defer cli.Close()
	dst := srv.LocalAddr().(*net.UDPAddr)
	buf := make([]byte, 65536)
	for _, n := range sizes {
		payload := ufPayload(n, 2)
		ok := false
		for attempt := 0; attempt < 3 && !ok; attempt++ {
			_, err := cli.WriteToUDP(payload, dst)
			Expect(err).NotTo(HaveOccurred(), "UDP %d bytes", n)
			cli.SetReadDeadline(time.Now().Add(2 * time.Second))
			for !ok {
				m, err := cli.Read(buf)
				if err != nil {
					break
				}
				ok = bytes.Equal(buf[:m], payload) // anything else is a late echo of an earlier size
			}
		}
		Expect(ok).To(BeTrue(), "UDP %d bytes %s → %s: no exact echo", n, from.Name, to.Name)
	}
}

// ufUDPGSOSend sends count datagrams of size bytes in one sendmsg with
// UDP_SEGMENT from a container (the TUN device gets them as one UDP GSO
// batch when it offers USO) and expects every one echoed back.
func ufUDPGSOSend(from, to lab.ContainerState, size, count int) {
	GinkgoHelper()
	srv := ufUDPEcho(to)
	defer srv.Close()
	cli := ufUDPClient(from)
	defer cli.Close()
	rc, err := cli.SyscallConn()
	Expect(err).NotTo(HaveOccurred())
	var serr error
	Expect(rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, size) })).To(Succeed())
	if serr != nil {
		Skip("UDP_SEGMENT not supported: " + serr.Error())
	}
	payload := ufPayload(size*count-1, 3) // the last datagram one byte short
	want := map[string]bool{}
	for off := 0; off < len(payload); off += size {
		want[string(payload[off:min(off+size, len(payload))])] = true
	}
	Expect(want).To(HaveLen(count))
	buf := make([]byte, 65536)
	for attempt := 0; attempt < 3 && len(want) > 0; attempt++ {
		_, err := cli.WriteToUDP(payload, srv.LocalAddr().(*net.UDPAddr))
		Expect(err).NotTo(HaveOccurred())
		cli.SetReadDeadline(time.Now().Add(2 * time.Second))
		for len(want) > 0 {
			m, err := cli.Read(buf)
			if err != nil {
				break
			}
			delete(want, string(buf[:m]))
		}
	}
	Expect(want).To(BeEmpty(), "%d of %d datagrams of a UDP GSO send were not echoed back exactly", len(want), count)
}

// ufWire is what ufCheckWire saw.
type ufWire struct {
	frames, tunnel     int // frames captured; UDP 8285 frames among them
	gsoFrames          int // UDP GSO sends seen before segmentation
	datagrams          int // datagrams on the wire (a GSO send counts as its segments)
	innerTCP           int
	innerUDP           int
	innerFrags         int
	innerOther         int
	maxInner           int // largest inner packet
	maxDatagram        int // largest outer IP datagram (after segmentation)
	truncated          int
	problems           []string
	problemsSuppressed int
}

func (w ufWire) String() string {
	s := fmt.Sprintf("%d frames, %d on udp 8285 (%d UDP GSO sends), %d datagrams: inner TCP %d, UDP %d, fragments %d, other %d; largest inner packet %d, largest datagram %d, truncated frames %d",
		w.frames, w.tunnel, w.gsoFrames, w.datagrams, w.innerTCP, w.innerUDP, w.innerFrags, w.innerOther, w.maxInner, w.maxDatagram, w.truncated)
	if len(w.problems) > 0 {
		s += fmt.Sprintf("\n%d problems (%d more not listed):\n  %s", len(w.problems)+w.problemsSuppressed, w.problemsSuppressed, strings.Join(w.problems, "\n  "))
	}
	return s
}

func (w *ufWire) problem(format string, args ...any) {
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	} else {
		w.problemsSuppressed++
	}
}

// ufCheckWire checks every frame of a host's underlay: container traffic
// only inside UDP to 8285, and every datagram there exactly one inner IPv4
// packet of at most mtu bytes with valid IPv4 header and TCP/UDP checksums.
//
// A UDP GSO send is seen by the capture before the kernel cuts it into
// datagrams (veth hands GSO frames on as they are, the receiving socket
// gets them cut or, with UDP_GRO, whole): such a frame's payload must be
// equal-size inner packets, the last possibly shorter, each one of the
// datagrams the wire carries. The outer UDP checksum is not checked: on veth
// it is left for the (virtual) hardware, as CHECKSUM_PARTIAL, in every mode.
func ufCheckWire(frames []pcapcheck.Frame, mtu int, network netip.Prefix) ufWire {
	w := ufWire{frames: len(frames)}
	for i, f := range frames {
		d := f.Data
		if len(d) < 14+20 || binary.BigEndian.Uint16(d[12:14]) != 0x0800 {
			continue
		}
		if f.Length > len(d) {
			w.truncated++
		}
		ip := d[14:]
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ihl < 20 || len(ip) < ihl {
			w.problem("frame %d: bad outer IPv4 header", i)
			continue
		}
		src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		if network.Contains(src) || network.Contains(dst) {
			w.problem("frame %d: container traffic outside the tunnel: %s → %s proto %d", i, src, dst, ip[9])
			continue
		}
		if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 {
			continue
		}
		udp := ip[ihl:]
		sport, dport := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
		if sport != 8285 && dport != 8285 {
			continue
		}
		w.tunnel++
		if dport != 8285 || sport != 8285 {
			w.problem("frame %d: udp %d → %d, want 8285 → 8285", i, sport, dport)
		}
		if ufSum(ip[:ihl], 0) != 0xffff {
			w.problem("frame %d: outer IPv4 header checksum invalid", i)
		}
		if total > len(ip) && f.Length <= len(d) {
			w.problem("frame %d: outer IPv4 length %d > %d bytes captured", i, total, len(ip))
			continue
		}
		payload := udp[8 : min(total, len(ip))-ihl]
		if total <= mtu+28 {
			// One datagram: exactly one inner packet.
			w.datagrams++
			w.maxDatagram = max(w.maxDatagram, total)
			n := ufInner(&w, i, payload, mtu)
			if n != len(payload) {
				w.problem("frame %d: %d-byte UDP payload carries a %d-byte inner packet", i, len(payload), n)
			}
			continue
		}
		if len(payload) >= 4 && int(binary.BigEndian.Uint16(payload[2:4])) >= len(payload) {
			// One packet, and too big for one datagram.
			w.datagrams++
			w.maxDatagram = max(w.maxDatagram, total)
			w.problem("frame %d: a %d-byte datagram > MTU %d + 28", i, total, mtu)
			ufInner(&w, i, payload, mtu)
			continue
		}
		// A UDP GSO send: cut it as the kernel will.
		w.gsoFrames++
		seg := 0
		for off := 0; off < len(payload); {
			rest := payload[off:]
			if len(rest) < 20 {
				if f.Length <= len(d) {
					w.problem("frame %d: %d stray bytes at the end of a GSO send", i, len(rest))
				}
				break
			}
			n := int(binary.BigEndian.Uint16(rest[2:4]))
			if seg == 0 {
				seg = n
			}
			if n > seg || (n < seg && off+n != len(payload)) {
				w.problem("frame %d: GSO send of %d-byte segments holds a %d-byte packet at %d (only the last may be shorter)", i, seg, n, off)
				break
			}
			if n > len(rest) {
				if f.Length <= len(d) {
					w.problem("frame %d: inner packet of %d bytes cut at %d", i, n, len(rest))
				}
				break
			}
			w.datagrams++
			w.maxDatagram = max(w.maxDatagram, n+28)
			ufInner(&w, i, rest[:n], mtu)
			off += n
		}
	}
	return w
}

// ufInner checks one inner packet and returns its IPv4 total length.
func ufInner(w *ufWire, frame int, p []byte, mtu int) int {
	if len(p) < 20 || p[0]>>4 != 4 {
		w.problem("frame %d: inner packet is not IPv4 (% x)", frame, p[:min(len(p), 4)])
		return -1
	}
	ihl := int(p[0]&0xf) * 4
	n := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < 20 || n < ihl || n > len(p) {
		w.problem("frame %d: inner IPv4 header: ihl %d, length %d, %d bytes", frame, ihl, n, len(p))
		return -1
	}
	if n > mtu {
		w.problem("frame %d: inner packet of %d bytes > MTU %d", frame, n, mtu)
	}
	w.maxInner = max(w.maxInner, n)
	if ufSum(p[:ihl], 0) != 0xffff {
		w.problem("frame %d: inner IPv4 header checksum invalid", frame)
	}
	frag := binary.BigEndian.Uint16(p[6:8])
	if frag&0x3fff != 0 { // MF or an offset: the L4 checksum covers the reassembled datagram
		w.innerFrags++
		return n
	}
	l4 := p[ihl:n]
	switch p[9] {
	case unix.IPPROTO_TCP:
		w.innerTCP++
	case unix.IPPROTO_UDP:
		w.innerUDP++
		if len(l4) >= 8 && binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return n // no checksum
		}
	default:
		w.innerOther++
		return n
	}
	var pseudo [12]byte
	copy(pseudo[0:8], p[12:20])
	pseudo[9] = p[9]
	binary.BigEndian.PutUint16(pseudo[10:12], uint16(len(l4)))
	if ufSum(l4, ufSumRaw(pseudo[:], 0)) != 0xffff {
		w.problem("frame %d: inner %s checksum invalid (%s → %s, %d bytes)", frame, map[byte]string{6: "TCP", 17: "UDP"}[p[9]],
			netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), n)
	}
	return n
}

// ufSumRaw adds b to the one's-complement sum s, unfolded.
func ufSumRaw(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// ufSum is the folded one's-complement sum: 0xffff over data that includes
// a valid checksum.
func ufSum(b []byte, s uint32) uint16 {
	s = ufSumRaw(b, s)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

var ufDropRE = regexp.MustCompile(`(?m)^overlaylab_dropped_packets_total\{reason="(malformed|send_error|write_error)"\} (\d+)$`)

// ufExpectNoDrops: the agents dropped nothing for a datapath reason.
func ufExpectNoDrops(st *lab.State) {
	GinkgoHelper()
	for _, h := range st.Hosts {
		m := metrics(h.Netns)
		Expect(m).To(ContainSubstring("overlaylab_encap_packets_total"), h.Name)
		for _, g := range ufDropRE.FindAllStringSubmatch(m, -1) {
			n, _ := strconv.Atoi(g[2])
			Expect(n).To(BeZero(), "%s dropped %d packets as %s", h.Name, n, g[1])
		}
	}
}

// ufInnerTCP builds an IPv4/TCP packet of n bytes with valid checksums.
func ufInnerTCP(src, dst string, n int) []byte {
	GinkgoHelper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: 1, ACK: true, Window: 100}
	Expect(tcp.SetNetworkLayerForChecksum(ip)).To(Succeed())
	buf := gopacket.NewSerializeBuffer()
	Expect(gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, tcp, gopacket.Payload(ufPayload(n-40, 9)))).To(Succeed())
	return buf.Bytes()
}

// ufFrame wraps payload in Ethernet/IPv4/UDP between two underlay hosts.
func ufFrame(port uint16, payload []byte) []byte {
	GinkgoHelper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(192, 168, 77, 1).To4(), DstIP: net.IPv4(192, 168, 77, 2).To4()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(port), DstPort: layers.UDPPort(port)}
	Expect(udp.SetNetworkLayerForChecksum(ip)).To(Succeed())
	buf := gopacket.NewSerializeBuffer()
	Expect(gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ip, udp, gopacket.Payload(payload))).To(Succeed())
	return ufEth(buf.Bytes())
}

func ufEth(ip []byte) []byte {
	return append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00}, ip...)
}
