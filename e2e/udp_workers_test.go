package e2e

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/pcapcheck"
)

// The fast udp datapath with several workers (--udp-workers): flannel0 with
// one queue per worker, a socket per worker on port 8285, flows steered to
// workers by their inner addresses and ports. The byte-exact TCP and UDP
// exchanges of udpfast_test.go run with 1 and with 4 workers, then 4 TCP
// flows at once, checking that no agent reordered a flow: every inner TCP
// segment of a flow leaves each agent in the order it went in (decoded from
// captures on flannel0 and eth0). The receivers' TCP out-of-order counters
// are printed, not judged: the kernel can reorder a flow before any agent
// sees it.

type udWorkersVariant struct {
	lab     string
	workers int
}

var udWorkersVariants = []udWorkersVariant{{lab: "e2eud1", workers: 1}, {lab: "e2eud4", workers: 4}}

var _ = Describe("udp workers", Ordered, func() {
	It("has a flow-order check that catches what it is meant to catch", func() {
		bare := func(sport uint16, seq uint32, n int) pcapcheck.Frame {
			return pcapcheck.Frame{Data: udInnerTCP(sport, seq, n), Outgoing: true}
		}
		wire := func(pkts ...[]byte) pcapcheck.Frame {
			var payload []byte
			for _, p := range pkts {
				payload = append(payload, p...)
			}
			return pcapcheck.Frame{Data: ufFrame(8285, payload), Outgoing: true}
		}
		// Into the sending agent: two large segments of flow 1, one of flow 2.
		in := udSegments([]pcapcheck.Frame{bare(1, 0, 300), bare(2, 0, 300), bare(1, 300, 300)}, false, true)
		Expect(in).To(HaveLen(2))
		seg := udInnerTCP
		// Out, in order: cut into datagrams, a UDP GSO send among them, the
		// flows interleaved (order only counts within a flow).
		o := udPreserved(in, udSegments([]pcapcheck.Frame{
			wire(seg(1, 0, 100), seg(1, 100, 100)), wire(seg(2, 0, 300)), wire(seg(1, 200, 100)), wire(seg(1, 300, 300)),
		}, true, true))
		Expect(o.flows).To(Equal(2))
		Expect(o.segments).To(Equal(5))
		Expect(o.overtook).To(BeZero(), o.String())
		// Out of order: the second large segment's bytes before the end of
		// the first's.
		o = udPreserved(in, udSegments([]pcapcheck.Frame{
			wire(seg(1, 0, 100)), wire(seg(1, 300, 300)), wire(seg(1, 100, 200)),
		}, true, true))
		Expect(o.overtook).To(Equal(1), o.String())
		Expect(o.String()).To(ContainSubstring("seq 100 (in as frame 0) came out after frame 2"))
		// Merged on the way out (the receiving agent): in order, and not.
		in = udSegments([]pcapcheck.Frame{wire(seg(1, 0, 100), seg(1, 100, 100)), wire(seg(1, 200, 100)), wire(seg(1, 300, 100))}, true, true)
		Expect(udPreserved(in, udSegments([]pcapcheck.Frame{bare(1, 0, 300), bare(1, 300, 100)}, false, true)).overtook).To(BeZero())
		Expect(udPreserved(in, udSegments([]pcapcheck.Frame{bare(1, 100, 300), bare(1, 0, 100)}, false, true)).overtook).To(Equal(1))
		// A retransmission is judged by its own copy: the agent dropped the
		// first (its queue was full), the sender sent it again later.
		at := func(f pcapcheck.Frame, ms int) pcapcheck.Frame {
			f.Time = time.Unix(0, int64(ms)*int64(time.Millisecond))
			return f
		}
		in = udSegments([]pcapcheck.Frame{at(bare(1, 0, 100), 1), at(bare(1, 100, 100), 2), at(bare(1, 0, 100), 3)}, false, true)
		o = udPreserved(in, udSegments([]pcapcheck.Frame{at(wire(seg(1, 100, 100)), 4), at(wire(seg(1, 0, 100)), 5)}, true, true))
		Expect(o.segments).To(Equal(2))
		Expect(o.overtook).To(BeZero(), o.String())
		// ... but the first copy coming out after later bytes is out of order.
		o = udPreserved(in, udSegments([]pcapcheck.Frame{at(wire(seg(1, 100, 100)), 2), at(wire(seg(1, 0, 100)), 2)}, true, true))
		Expect(o.overtook).To(Equal(1), o.String())
		// Bytes that came out already are not judged again.
		o = udPreserved(in, udSegments([]pcapcheck.Frame{at(wire(seg(1, 0, 100)), 2), at(wire(seg(1, 100, 100)), 3), at(wire(seg(1, 0, 100)), 4)}, true, true))
		Expect(o.segments).To(Equal(2))
		Expect(o.overtook).To(BeZero(), o.String())
		// Bytes the input capture missed are not judged; the direction
		// counts.
		in = udSegments([]pcapcheck.Frame{wire(seg(1, 0, 100), seg(1, 100, 100)), wire(seg(1, 200, 100)), wire(seg(1, 300, 100))}, true, true)
		o = udPreserved(in, udSegments([]pcapcheck.Frame{bare(1, 400, 100), bare(1, 0, 100)}, false, true))
		Expect(o.segments).To(Equal(1))
		Expect(udSegments([]pcapcheck.Frame{bare(1, 0, 100)}, false, false)).To(BeEmpty())
	})

	for _, v := range udWorkersVariants {
		Describe(fmt.Sprintf("%d worker(s)", v.workers), func() {
			BeforeAll(func() {
				r := run(labArgs(v.lab, "up", "--hosts", "2", "--containers", "1",
					"--agent-arg=--udp-mode=fast", fmt.Sprintf("--agent-arg=--udp-workers=%d", v.workers))...)
				DeferCleanup(func() { run(labArgs(v.lab, "down")...) })
				if r.code != 0 {
					dumpLab(v.lab)
				}
				Expect(r.code).To(Equal(0), r.String())
				Expect(r.stdout).To(ContainSubstring("ping matrix: 2/2 pairs answered"))
			})
			AfterEach(func() {
				if CurrentSpecReport().Failed() {
					dumpLab(v.lab)
				}
			})

			It("runs that many workers: queues of flannel0, sockets on the port, steering when more than one", func() {
				for _, h := range status(v.lab).Hosts {
					Expect(readFile(h.AgentLog)).To(MatchRegexp(`msg="fast udp datapath".* workers=%d .*flow_steering=%v`, v.workers, v.workers > 1), h.Name)
					q, s := udAgentQueuesAndSockets(h.AgentPID)
					Expect(q).To(Equal(v.workers), "%s: descriptors of flannel0", h.Name)
					Expect(s).To(Equal(v.workers), "%s: sockets on udp 8285", h.Name)
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
				GinkgoWriter.Printf("%d workers: %s\n", v.workers, w)
				Expect(w.problems).To(BeEmpty(), w.String())
				Expect(w.innerTCP).To(BeNumerically(">", 1000), w.String())
				ufExpectNoDrops(st)
			})

			It("delivers UDP datagrams of every size byte-exact both ways", func() {
				st := status(v.lab)
				h1, h2 := st.Hosts[0], st.Hosts[1]
				frames := ufCapture(h1.Netns, func() {
					ufUDPExchange(h1.Containers[0], h2.Containers[0], ufUDPSizes(h1.MTU))
					ufUDPExchange(h2.Containers[0], h1.Containers[0], []int{1, h1.MTU - 28, h1.MTU - 27, 9000})
					ufUDPGSOSend(h1.Containers[0], h2.Containers[0], 1000, 20)
				})
				w := ufCheckWire(frames, h1.MTU, netip.MustParsePrefix(st.Network))
				Expect(w.problems).To(BeEmpty(), w.String())
				Expect(w.innerUDP).To(BeNumerically(">", 2*len(ufUDPSizes(h1.MTU))), w.String())
				ufExpectNoDrops(st)
			})

			It("carries 4 TCP flows at once byte-exact both ways, every agent keeping every flow in order", func() {
				st := status(v.lab)
				h1, h2 := st.Hosts[0], st.Hosts[1]
				c1, c2 := h1.Containers[0], h2.Containers[0]
				// Order is judged per agent, between what went into it and
				// what came out (flannel0 and eth0, both ways): the kernel
				// can reorder a flow before the agent sees it (a veth hands
				// packets to the backlog of the CPU that sent them), so the
				// wire alone, or the receivers' out-of-order counters, would
				// also show what no agent did. They are printed, not judged.
				before := udTCPCounters(c1, c2)
				caps := udCapture([]lab.HostState{h1, h2}, func() { udParallelEcho(c1, c2, 4, 6<<20) })
				d := udTCPCounters(c1, c2).minus(before)
				var o udOrder
				for _, c := range caps {
					o = o.plus(c.agentOrder())
				}
				GinkgoWriter.Printf("%d workers, 4 flows: %s; receivers' counters: %s\n", v.workers, o, d)
				w := ufCheckWire(caps[0].eth, h1.MTU, netip.MustParsePrefix(st.Network))
				Expect(w.problems).To(BeEmpty(), w.String())
				// 4 flows each way, into and out of 2 agents.
				Expect(o.flows).To(BeNumerically(">=", 16), o.String())
				Expect(o.segments).To(BeNumerically(">", 1000), o.String())
				Expect(o.overtook).To(BeZero(), "an agent let a flow's segments overtake each other: %s", o)
				ufExpectNoDrops(st)
			})
		})
	}
})

// Hosts with different worker counts, and the simple datapath, carry each
// other's traffic: steering is each receiver's own business, and a sender
// with one worker (or none) never mixes flows in one send.
var _ = Describe("udp workers between hosts that differ", Ordered, func() {
	const name = "e2eud3"
	BeforeAll(func() {
		r := run(labArgs(name, "up", "--hosts", "1", "--containers", "1", "--agent-arg=--udp-mode=fast", "--agent-arg=--udp-workers=4")...)
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		Expect(r.code).To(Equal(0), r.String())
		for _, args := range [][]string{{"--agent-arg=--udp-mode=fast", "--agent-arg=--udp-workers=1"}, {"--agent-arg=--udp-mode=simple"}} {
			r = run(labArgs(name, append([]string{"host", "add", "--containers", "1"}, args...)...)...)
			Expect(r.code).To(Equal(0), r.String())
		}
	})
	AfterEach(func() {
		if CurrentSpecReport().Failed() {
			dumpLab(name)
		}
	})

	It("carry TCP and UDP byte-exact both ways between 4 workers and 1, and between 4 workers and the simple datapath, in order", func() {
		st := status(name)
		Expect(st.Hosts).To(HaveLen(3))
		four, one, simple := st.Hosts[0], st.Hosts[1], st.Hosts[2]
		Expect(readFile(four.AgentLog)).To(ContainSubstring("workers=4"))
		Expect(readFile(one.AgentLog)).To(ContainSubstring("workers=1"))
		Expect(readFile(simple.AgentLog)).To(ContainSubstring("mode=simple"))
		for _, other := range []lab.HostState{one, simple} {
			ufBulkBothWays(st, four, other, "4 workers ↔ "+other.Name)
			caps := udCapture([]lab.HostState{four}, func() { udParallelEcho(four.Containers[0], other.Containers[0], 4, 2<<20) })
			o := caps[0].agentOrder()
			GinkgoWriter.Printf("4 workers ↔ %s, 4 flows: %s\n", other.Name, o)
			Expect(o.segments).To(BeNumerically(">", 1000), o.String())
			Expect(o.overtook).To(BeZero(), o.String())
		}
		ufExpectNoDrops(st)
	})
})

// udHostCapture is what one host saw on its underlay (eth0) and on
// flannel0 while the traffic ran.
type udHostCapture struct {
	host     string
	eth, tun []pcapcheck.Frame
}

// agentOrder judges the host's agent both ways: what entered flannel0 from
// the host against what it sent on eth0, and what arrived on eth0 against
// what it wrote into flannel0.
func (c udHostCapture) agentOrder() udOrder {
	out := udPreserved(udSegments(c.tun, false, true), udSegments(c.eth, true, true))
	in := udPreserved(udSegments(c.eth, true, false), udSegments(c.tun, false, false))
	o := out.plus(in)
	for i := range o.examples {
		o.examples[i] = c.host + ": " + o.examples[i]
	}
	return o
}

// udCapture captures on every host's eth0 and flannel0 while traffic runs.
func udCapture(hosts []lab.HostState, traffic func()) []udHostCapture {
	GinkgoHelper()
	type running struct {
		c    *pcapcheck.Capture
		into *[]pcapcheck.Frame
	}
	out := make([]udHostCapture, len(hosts))
	var caps []running
	defer func() {
		for _, r := range caps {
			r.c.Stop()
		}
	}()
	for i, h := range hosts {
		out[i].host = h.Name
		for _, dev := range []struct {
			name string
			into *[]pcapcheck.Frame
		}{{"eth0", &out[i].eth}, {"flannel0", &out[i].tun}} {
			c, err := pcapcheck.Start(context.Background(), h.Netns, dev.name)
			Expect(err).NotTo(HaveOccurred())
			caps = append(caps, running{c, dev.into})
		}
	}
	traffic()
	time.Sleep(100 * time.Millisecond)
	for _, r := range caps {
		frames, err := r.c.Stop()
		Expect(err).NotTo(HaveOccurred())
		s := r.c.Stats()
		Expect(s.OverLimit).To(BeZero(), "capture over its memory limit: %+v", s)
		if s.KernelDrops > 0 {
			GinkgoWriter.Printf("a capture lost %d frames in the kernel (judged what was kept)\n", s.KernelDrops)
		}
		*r.into = frames
	}
	return out
}

// udInnerTCP is an IPv4/TCP data segment of flow 10.10.1.2:sport →
// 10.10.2.3:5201 at seq with n payload bytes.
func udInnerTCP(sport uint16, seq uint32, n int) []byte {
	p := ufInnerTCP("10.10.1.2", "10.10.2.3", 40+n)
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint32(p[24:28], seq)
	return p
}

// udFlow is one direction of an inner TCP connection.
type udFlow struct {
	src, dst     netip.Addr
	sport, dport uint16
}

func (f udFlow) String() string {
	return fmt.Sprintf("%s:%d → %s:%d", f.src, f.sport, f.dst, f.dport)
}

// udSeg is a TCP data segment seen at a capture point: its sequence range
// and the index of the frame that carried it (the segments of one UDP GSO
// send, or of one large TSO segment, share the frame).
type udSeg struct {
	seq  uint32
	n    int
	rank int
	at   time.Time // the kernel's capture timestamp
}

// udSegments lists, per flow and in capture order, the TCP data segments
// in the frames of one direction (outgoing or not) of a capture: bare IPv4
// packets (flannel0), or the inner packets of tunnel datagrams on udp 8285
// (eth0), a UDP GSO send cut as the kernel will cut it.
func udSegments(frames []pcapcheck.Frame, tunnel, outgoing bool) map[udFlow][]udSeg {
	out := map[udFlow][]udSeg{}
	add := func(p []byte, rank int, at time.Time) {
		if len(p) < 40 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP || binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 {
			return
		}
		ihl := int(p[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if len(p) < ihl+20 || total < ihl+20 {
			return
		}
		tcp := p[ihl:]
		n := total - ihl - int(tcp[12]>>4)*4
		if n <= 0 {
			return
		}
		k := udFlow{netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])}
		out[k] = append(out[k], udSeg{seq: binary.BigEndian.Uint32(tcp[4:8]), n: n, rank: rank, at: at})
	}
	for i, fr := range frames {
		if fr.Outgoing != outgoing {
			continue
		}
		d := fr.Data
		if !tunnel {
			add(d, i, fr.Time) // a large segment may be cut at the snap length: its headers are enough
			continue
		}
		if len(d) < 14+28 || binary.BigEndian.Uint16(d[12:14]) != 0x0800 {
			continue
		}
		ip := d[14:]
		ihl := int(ip[0]&0xf) * 4
		if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+8 || binary.BigEndian.Uint16(ip[ihl+2:ihl+4]) != 8285 {
			continue
		}
		total := min(int(binary.BigEndian.Uint16(ip[2:4])), len(ip))
		for rest := ip[ihl+8 : total]; len(rest) >= 20; {
			n := int(binary.BigEndian.Uint16(rest[2:4]))
			if n < 20 || n > len(rest) {
				break
			}
			add(rest[:n], i, fr.Time)
			rest = rest[n:]
		}
	}
	return out
}

// udOrder is what udPreserved found.
type udOrder struct {
	flows    int // flows seen on the way out
	segments int // data segments on the way out whose bytes were seen on the way in
	overtook int // of which came out before bytes that went in earlier
	examples []string
}

func (o udOrder) String() string {
	s := fmt.Sprintf("%d TCP flows, %d data segments traced, %d out of order", o.flows, o.segments, o.overtook)
	if len(o.examples) > 0 {
		s += ": " + strings.Join(o.examples, "; ")
	}
	return s
}

func (o udOrder) plus(p udOrder) udOrder {
	return udOrder{o.flows + p.flows, o.segments + p.segments, o.overtook + p.overtook, append(o.examples, p.examples...)}
}

// udPreserved checks that a datapath stage kept every flow in order: each
// segment that came out (out) carries bytes that went in (in) no earlier
// than the bytes of any segment that came out before it. A byte is ranked
// by the frame that last carried it in before the segment came out (by the
// kernel's timestamps), so a retransmission is ranked by its own copy;
// bytes that already came out are not judged again, nor bytes the input
// capture missed.
func udPreserved(in, out map[udFlow][]udSeg) udOrder {
	type span struct {
		lo, hi int64
		udSeg
	}
	var o udOrder
	for k, segs := range out {
		o.flows++
		ins := in[k]
		if len(ins) == 0 {
			continue
		}
		base := ins[0].seq
		off := func(seq uint32) int64 { return int64(int32(seq - base)) }
		copies := make([]span, 0, len(ins))
		longest := int64(0)
		for _, s := range ins {
			copies = append(copies, span{off(s.seq), off(s.seq) + int64(s.n), s})
			longest = max(longest, int64(s.n))
		}
		slices.SortStableFunc(copies, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
		var done [][2]uint64 // bytes that came out already
		maxRank := -1
		var cand []span
		for _, s := range segs {
			lo, hi := off(s.seq), off(s.seq)+int64(s.n)
			if lo < 0 || len(udUncovered(done, uint64(lo), uint64(hi))) == 0 {
				continue
			}
			done = udAddRange(done, uint64(lo), uint64(hi))
			// The copies that went in before it came out, latest first.
			cand = cand[:0]
			i, _ := slices.BinarySearchFunc(copies, lo-longest, func(c span, v int64) int { return cmp.Compare(c.lo, v) })
			for ; i < len(copies) && copies[i].lo < hi; i++ {
				if c := copies[i]; c.hi > lo && !c.at.After(s.at) {
					cand = append(cand, c)
				}
			}
			slices.SortStableFunc(cand, func(a, b span) int { return b.at.Compare(a.at) })
			lowest, highest := -1, -1
			var got [][2]uint64
			for _, c := range cand {
				if len(udUncovered(got, uint64(max(c.lo, lo)), uint64(min(c.hi, hi)))) == 0 {
					continue
				}
				got = udAddRange(got, uint64(max(c.lo, lo)), uint64(min(c.hi, hi)))
				if lowest < 0 || c.rank < lowest {
					lowest = c.rank
				}
				highest = max(highest, c.rank)
			}
			if lowest < 0 {
				continue // not seen going in
			}
			o.segments++
			if lowest < maxRank {
				o.overtook++
				if len(o.examples) < 5 {
					o.examples = append(o.examples, fmt.Sprintf("%s seq %d (in as frame %d) came out after frame %d's bytes", k, s.seq, lowest, maxRank))
				}
			}
			maxRank = max(maxRank, highest)
		}
	}
	return o
}

// udUncovered returns the parts of [lo, hi) outside the sorted, merged
// ranges.
func udUncovered(have [][2]uint64, lo, hi uint64) [][2]uint64 {
	var out [][2]uint64
	for _, r := range have {
		if r[1] <= lo || r[0] >= hi {
			continue
		}
		if r[0] > lo {
			out = append(out, [2]uint64{lo, r[0]})
		}
		lo = max(lo, r[1])
	}
	if lo < hi {
		out = append(out, [2]uint64{lo, hi})
	}
	return out
}

// udAddRange adds [lo, hi) to sorted, merged ranges.
func udAddRange(have [][2]uint64, lo, hi uint64) [][2]uint64 {
	if n := len(have); n > 0 && have[n-1][0] <= lo && lo <= have[n-1][1] {
		have[n-1][1] = max(have[n-1][1], hi) // the common case: at the end
		return have
	}
	have = append(have, [2]uint64{lo, hi})
	slices.SortFunc(have, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	out := have[:1]
	for _, r := range have[1:] {
		if last := &out[len(out)-1]; r[0] <= last[1] {
			last[1] = max(last[1], r[1])
		} else {
			out = append(out, r)
		}
	}
	return out
}

// udParallelEcho runs flows TCP connections at once from one container to
// an echo server in another, each carrying its own payload of size bytes,
// and expects each back exactly.
func udParallelEcho(from, to lab.ContainerState, flows, size int) {
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
	var wg sync.WaitGroup
	errs := make([]error, flows)
	for i := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := ufPayload(size, uint64(100+i))
			got, err := ufTCPRoundTrip(dial, l.Addr().String(), payload)
			switch {
			case err != nil:
				errs[i] = err
			case len(got) != len(payload):
				errs[i] = fmt.Errorf("%d bytes came back as %d", len(payload), len(got))
			case string(got) != string(payload):
				errs[i] = fmt.Errorf("came back different at byte %d", ufFirstDiff(got, payload))
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		Expect(err).NotTo(HaveOccurred(), "flow %d of %d, %s → %s", i+1, flows, from.Name, to.Name)
	}
}

// udCounters are TCP counters of the containers' kernels, summed.
type udCounters struct{ retrans, ofo int }

func (c udCounters) minus(o udCounters) udCounters {
	return udCounters{c.retrans - o.retrans, c.ofo - o.ofo}
}

func (c udCounters) String() string {
	return fmt.Sprintf("%d segments retransmitted, %d queued out of order", c.retrans, c.ofo)
}

// udTCPCounters reads RetransSegs (/proc/net/snmp) and TCPOFOQueue
// (/proc/net/netstat) in each container's namespace and adds them up.
func udTCPCounters(cs ...lab.ContainerState) udCounters {
	GinkgoHelper()
	var sum udCounters
	for _, c := range cs {
		snmp := inNetns(c.Netns, 5*time.Second, "cat", "/proc/net/snmp", "/proc/net/netstat")
		Expect(snmp.code).To(Equal(0), snmp.String())
		sum.retrans += udProcField(snmp.stdout, "Tcp:", "RetransSegs")
		sum.ofo += udProcField(snmp.stdout, "TcpExt:", "TCPOFOQueue")
	}
	return sum
}

// udProcField finds a counter in /proc/net/snmp-style text: a header line
// of names and a line of values, both starting with prefix.
func udProcField(text, prefix, name string) int {
	GinkgoHelper()
	var names []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)[1:]
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				v, err := strconv.Atoi(f[i])
				Expect(err).NotTo(HaveOccurred())
				return v
			}
		}
		names = nil
	}
	Fail(fmt.Sprintf("no %s %s in:\n%s", prefix, name, text))
	return 0
}

var udTunFdinfo = regexp.MustCompile(`(?m)^iff:\s+flannel0$`)

// udAgentQueuesAndSockets counts the agent's descriptors of flannel0 (one
// per queue) and its UDP sockets on port 8285 (from the agent's namespace's
// /proc/net/udp, by inode).
func udAgentQueuesAndSockets(pid int) (queues, sockets int) {
	GinkgoHelper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	Expect(err).NotTo(HaveOccurred())
	inodes := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
			continue
		}
		if link == "/dev/net/tun" {
			info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
			if err == nil && udTunFdinfo.Match(info) {
				queues++
			}
		}
	}
	udp, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", pid))
	Expect(err).NotTo(HaveOccurred())
	for _, l := range strings.Split(string(udp), "\n")[1:] {
		f := strings.Fields(l)
		// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
		if len(f) > 9 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", 8285)) && inodes[f[9]] {
			sockets++
		}
	}
	return queues, sockets
}
