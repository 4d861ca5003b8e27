package e2e

import (
	"cmp"
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
// flows at once, with two checks that nothing within a flow was reordered:
// on the wire (every inner TCP segment of a flow leaves in sequence order,
// decoded from the capture) and in the receiving containers' kernels (the
// TCP out-of-order queue counter stays where it was).

type udWorkersVariant struct {
	lab     string
	workers int
}

var udWorkersVariants = []udWorkersVariant{{lab: "e2eud1", workers: 1}, {lab: "e2eud4", workers: 4}}

var _ = Describe("udp workers", Ordered, func() {
	It("has a flow-order check that catches what it is meant to catch", func() {
		seg := func(sport uint16, seq uint32, n int) pcapcheck.Frame {
			return pcapcheck.Frame{Data: ufFrame(8285, udInnerTCP(sport, seq, n))}
		}
		inOrder := []pcapcheck.Frame{seg(1, 0, 100), seg(2, 0, 100), seg(1, 100, 100), seg(2, 100, 100), seg(1, 200, 0)}
		o := udCheckOrder(inOrder)
		Expect(o.flows).To(Equal(2))
		Expect(o.segments).To(Equal(4))
		Expect(o.late).To(BeZero(), o.String())
		Expect(o.dup).To(BeZero(), o.String())

		swapped := []pcapcheck.Frame{seg(1, 0, 100), seg(1, 200, 100), seg(2, 0, 100), seg(1, 100, 100)}
		o = udCheckOrder(swapped)
		Expect(o.late).To(Equal(1), o.String())
		Expect(o.String()).To(ContainSubstring("seq 100"))

		// Bytes seen before are a retransmission, however they are cut.
		resent := []pcapcheck.Frame{seg(1, 0, 100), seg(1, 100, 100), seg(1, 100, 100), seg(1, 200, 100), seg(1, 50, 200)}
		o = udCheckOrder(resent)
		Expect(o.late).To(BeZero(), o.String())
		Expect(o.dup).To(Equal(2), o.String())
		// Bytes never seen before, behind the end: overtaken (or sent again
		// after a loss before the capture, which the spec rules out).
		gap := []pcapcheck.Frame{seg(1, 0, 100), seg(1, 200, 100), seg(1, 100, 150)}
		o = udCheckOrder(gap)
		Expect(o.late).To(Equal(1), o.String())

		// A UDP GSO send is cut as the kernel cuts it.
		gso := append(append(udInnerTCP(3, 1000, 100), udInnerTCP(3, 0, 100)...), udInnerTCP(3, 1100, 50)...)
		o = udCheckOrder([]pcapcheck.Frame{{Data: ufFrame(8285, gso)}})
		Expect(o.segments).To(Equal(3))
		Expect(o.late).To(Equal(1), o.String())
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
				before := udTCPCounters(h1.Containers[0], h2.Containers[0])
				frames := ufCapture(h1.Netns, func() {
					ufTCPExchange(h1.Containers[0], h2.Containers[0], ufTCPSizes(h1.MTU))
					ufTCPExchange(h2.Containers[0], h1.Containers[0], []int{1, 1401, h1.MTU + 1, 65537, 1 << 20})
				})
				d := udTCPCounters(h1.Containers[0], h2.Containers[0]).minus(before)
				w := ufCheckWire(frames, h1.MTU, netip.MustParsePrefix(st.Network))
				o := udCheckOrder(frames)
				GinkgoWriter.Printf("%d workers: %s; %s; counters: %s\n", v.workers, w, o, d)
				Expect(w.problems).To(BeEmpty(), w.String())
				Expect(w.innerTCP).To(BeNumerically(">", 1000), w.String())
				if d.retrans == 0 {
					Expect(o.late).To(BeZero(), o.String())
				}
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

			It("carries 4 TCP flows at once byte-exact both ways, every flow in order on the wire and at the receivers", func() {
				st := status(v.lab)
				h1, h2 := st.Hosts[0], st.Hosts[1]
				c1, c2 := h1.Containers[0], h2.Containers[0]
				// A loss (a retransmission) puts segments out of order at the
				// receiver, and a retransmitted segment can show as overtaken
				// on the wire if the original was lost before the capture:
				// judge order on a run without one (up to 3 tries).
				var clean bool
				for try := 1; try <= 3 && !clean; try++ {
					before := udTCPCounters(c1, c2)
					frames := ufCapture(h1.Netns, func() { udParallelEcho(c1, c2, 4, 6<<20) })
					d := udTCPCounters(c1, c2).minus(before)
					o := udCheckOrder(frames)
					GinkgoWriter.Printf("%d workers, 4 flows, try %d: %s; counters: %s\n", v.workers, try, o, d)
					w := ufCheckWire(frames, h1.MTU, netip.MustParsePrefix(st.Network))
					Expect(w.problems).To(BeEmpty(), w.String())
					Expect(o.flows).To(BeNumerically(">=", 8), "4 flows each way: %s", o)
					if d.retrans > 0 {
						continue
					}
					clean = true
					Expect(o.late).To(BeZero(), "segments overtaken within a flow on the wire: %s", o)
					Expect(d.ofo).To(BeZero(), "segments queued out of order at the receivers, without a loss: %s", d)
				}
				Expect(clean).To(BeTrue(), "every try had retransmissions: order could not be judged")
				ufExpectNoDrops(st)
			})
		})
	}
})

// udInnerTCP is an IPv4/TCP data segment of flow 10.10.1.2:sport →
// 10.10.2.3:5201 at seq with n payload bytes.
func udInnerTCP(sport uint16, seq uint32, n int) []byte {
	p := ufInnerTCP("10.10.1.2", "10.10.2.3", 40+n)
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint32(p[24:28], seq)
	return p
}

// udOrder is what udCheckOrder found.
type udOrder struct {
	flows    int // TCP flows (one direction each) with data
	segments int // data segments
	late     int // data segments that arrived after a later one of their flow and were not seen before
	dup      int // data segments seen before (retransmissions the capture saw twice)
	examples []string
}

func (o udOrder) String() string {
	s := fmt.Sprintf("%d TCP flows, %d data segments, %d overtaken, %d seen twice", o.flows, o.segments, o.late, o.dup)
	if len(o.examples) > 0 {
		s += ": " + strings.Join(o.examples, "; ")
	}
	return s
}

// udCheckOrder follows every inner TCP flow (one direction) in the tunnel
// datagrams of a capture and counts data segments that came after a later
// segment of their flow, carrying bytes the capture had not seen yet
// (bytes seen before are a retransmission, however TCP cut them). A UDP
// GSO send is cut as the kernel will cut it.
func udCheckOrder(frames []pcapcheck.Frame) udOrder {
	type flowKey struct {
		src, dst     netip.Addr
		sport, dport uint16
	}
	type flowState struct {
		isn  uint32      // first sequence number seen: offsets count from it
		have [][2]uint64 // byte ranges seen, sorted, merged
	}
	var o udOrder
	flows := map[flowKey]*flowState{}
	check := func(p []byte) {
		if len(p) < 40 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP || binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 {
			return
		}
		ihl := int(p[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if total > len(p) || ihl+20 > total {
			return
		}
		tcp := p[ihl:total]
		doff := int(tcp[12]>>4) * 4
		n := len(tcp) - doff
		if doff < 20 || n <= 0 {
			return
		}
		k := flowKey{netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])}
		seq := binary.BigEndian.Uint32(tcp[4:8])
		o.segments++
		f := flows[k]
		if f == nil {
			f = &flowState{isn: seq}
			flows[k] = f
		}
		lo := uint64(seq - f.isn)
		hi := lo + uint64(n)
		var end uint64
		if len(f.have) > 0 {
			end = f.have[len(f.have)-1][1]
		}
		switch {
		case udCovered(f.have, lo, hi):
			o.dup++
		case lo < end:
			o.late++
			if len(o.examples) < 5 {
				o.examples = append(o.examples, fmt.Sprintf("%s:%d → %s:%d seq %d after %d", k.src, k.sport, k.dst, k.dport, seq, f.isn+uint32(end)))
			}
		}
		f.have = udAddRange(f.have, lo, hi)
	}
	for _, fr := range frames {
		d := fr.Data
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
			check(rest[:n])
			rest = rest[n:]
		}
	}
	o.flows = len(flows)
	return o
}

// udCovered says whether [lo, hi) lies within one of the ranges.
func udCovered(have [][2]uint64, lo, hi uint64) bool {
	for _, r := range have {
		if r[0] <= lo && hi <= r[1] {
			return true
		}
	}
	return false
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
