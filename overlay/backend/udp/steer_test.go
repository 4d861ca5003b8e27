package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// flowPacket builds an IPv4 packet of protocol proto between src and dst
// whose transport header starts with the two ports.
func flowPacket(src, dst string, proto byte, sport, dport uint16, ipOpts int) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	return fuzzIPv4(netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4(), proto, l4, ipOpts)
}

// TestSteeringProgramMatchesFlowHash: the classic BPF program the kernel
// runs and flowHash, which the send side uses, agree on every packet, and
// the program reads the ports only where they are.
func TestSteeringProgramMatchesFlowHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var pkts [][]byte
	for range 3000 {
		proto := []byte{protoTCP, protoUDP, 1, 47}[rng.IntN(4)]
		p := flowPacket(fmt.Sprintf("10.10.%d.%d", rng.IntN(256), rng.IntN(256)), fmt.Sprintf("10.10.%d.%d", rng.IntN(256), rng.IntN(256)),
			proto, uint16(rng.Uint32()), uint16(rng.Uint32()), rng.IntN(3))
		if rng.IntN(5) == 0 {
			binary.BigEndian.PutUint16(p[6:8], uint16(rng.IntN(0x4000))) // fragments, DF
		}
		if rng.IntN(10) == 0 {
			p = p[:rng.IntN(len(p))] // short
		}
		pkts = append(pkts, p)
	}
	for _, n := range []int{1, 2, 3, 4, 7, 16, 256} {
		vm, err := bpf.NewVM(steeringProgram(n))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		for _, p := range pkts {
			got, err := vm.Run(p)
			if err != nil {
				t.Fatal(err)
			}
			h, ok := flowHash(p)
			want := 0
			if ok {
				want = int(h % uint32(n))
			}
			if got != want {
				t.Fatalf("n=%d: program %d, flowHash %d (ok %v) for % x", n, got, want, ok, p)
			}
		}
	}
	if _, err := bpf.Assemble(steeringProgram(4)); err != nil {
		t.Fatal(err)
	}

	// The key: ports count for unfragmented TCP and UDP only; the IPv4
	// header length is honoured.
	a, _ := flowHash(flowPacket("10.10.1.2", "10.10.2.3", protoTCP, 1000, 80, 0))
	b, _ := flowHash(flowPacket("10.10.1.2", "10.10.2.3", protoTCP, 1001, 80, 0))
	c, _ := flowHash(flowPacket("10.10.1.2", "10.10.2.3", protoTCP, 1000, 80, 2))
	if a == b || a != c {
		t.Errorf("TCP ports: %#x %#x %#x", a, b, c)
	}
	i1, _ := flowHash(flowPacket("10.10.1.2", "10.10.2.3", 1, 1000, 80, 0))
	i2, _ := flowHash(flowPacket("10.10.1.2", "10.10.2.3", 1, 1001, 81, 0))
	frag := flowPacket("10.10.1.2", "10.10.2.3", protoUDP, 1000, 80, 0)
	binary.BigEndian.PutUint16(frag[6:8], 0x2000) // MF: the first fragment
	f1, _ := flowHash(frag)
	binary.BigEndian.PutUint16(frag[6:8], 185) // a later one (its "ports" are payload)
	f2, _ := flowHash(frag)
	if i1 != i2 || f1 != f2 || f1 != i1 {
		t.Errorf("no ports for ICMP and fragments: %#x %#x %#x %#x", i1, i2, f1, f2)
	}
}

// TestReuseportSteersByInnerFlow: with several sockets on the port, every
// datagram of an inner flow reaches the socket the program picks for it,
// although all come from one sender address and port; and flows spread.
func TestReuseportSteersByInnerFlow(t *testing.T) {
	const n = 4
	x := newFastFixtureN(t, n, false, false, false)
	if !x.b.fast.steer {
		t.Fatal("steering not attached")
	}
	var sent [][]byte
	for i := range 64 {
		for rep := range 3 {
			p := flowPacket("10.10.2.9", "10.10.1.5", protoTCP, uint16(40000+i), 5201, 0)
			p[len(p)-1] = byte(rep)
			sent = append(sent, p)
		}
	}
	for _, p := range sent {
		if _, err := x.peerConn.WriteToUDPAddrPort(p, x.addr()); err != nil {
			t.Fatal(err)
		}
	}
	used := map[int]int{}
	got := 0
	buf := make([]byte, 2048)
	for i, q := range x.b.fast.queues {
		for {
			q.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			m, _, err := q.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			h, _ := flowHash(buf[:m])
			if int(h%n) != i {
				t.Fatalf("flow with hash %#x (worker %d) read on socket %d", h, h%n, i)
			}
			used[i]++
			got++
		}
	}
	if got != len(sent) {
		t.Fatalf("%d of %d datagrams received", got, len(sent))
	}
	if len(used) < n {
		t.Fatalf("64 flows used only sockets %v", used)
	}
}

// TestWorkersKeepFlowsApart: several workers (each one goroutine, as with
// more than one worker) receive the interleaved segments of many TCP flows,
// sent with UDP GSO as the send side plans them; each flow arrives whole
// and in order on the queue of the worker the steering picks, and nowhere
// else.
func TestWorkersKeepFlowsApart(t *testing.T) {
	const n, flows, segs = 3, 12, 20
	x := newFastFixtureN(t, n, true, true, true)
	var pkts [][]byte
	fls := make([]tcpFlow, flows)
	for f := range fls {
		fls[f] = tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: uint16(3000 + f), seq: uint32(f) << 20, id: uint16(f * 100)}
	}
	for s := range segs {
		for f, fl := range fls {
			// Runs of 3 segments per flow, the flows interleaved.
			if s%3 == 0 || f%2 == 0 {
				pkts = append(pkts, fl.segment(testPayload(1000, byte(f)), s*1000, s, tcpACK))
			}
		}
	}
	want := map[uint16][][]byte{}
	for _, p := range pkts {
		sport := binary.BigEndian.Uint16(p[20:22])
		want[sport] = append(want[sport], p)
	}
	x.sendSegments(t, pkts)
	var stops []func()
	for _, w := range x.ws {
		stops = append(stops, x.run(t, w.serve))
	}
	got := map[uint16][][]byte{}
	for total := 0; total < len(pkts); {
		progress := false
		for i, k := range x.ks {
			for _, w := range k.readAvailable(t) {
				for _, seg := range resegment(t, w) {
					h, _ := flowHash(seg)
					if int(h%n) != i {
						t.Fatalf("a segment of flow hash %#x (worker %d) written to queue %d", h, h%n, i)
					}
					sport := binary.BigEndian.Uint16(seg[20:22])
					got[sport] = append(got[sport], seg)
					total++
					progress = true
				}
			}
		}
		if !progress {
			t.Fatalf("%d of %d segments written", total, len(pkts))
		}
	}
	for sport, segs := range want {
		if len(got[sport]) != len(segs) {
			t.Fatalf("flow %d: %d of %d segments", sport, len(got[sport]), len(segs))
		}
		for i := range segs {
			if !bytes.Equal(got[sport][i], segs[i]) {
				t.Fatalf("flow %d: segment %d differs or is out of order", sport, i)
			}
		}
	}
	for _, stop := range stops {
		stop()
	}
	if x.m.DecapPackets.Load() != uint64(len(pkts)) {
		t.Fatalf("decap %d, want %d", x.m.DecapPackets.Load(), len(pkts))
	}
}

// readAvailable returns what the datapath wrote within a short wait.
func (k *fakeKernel) readAvailable(t *testing.T) []written {
	t.Helper()
	var out []written
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if !k.pending(50) {
			if len(out) > 0 {
				break
			}
			continue
		}
		out = append(out, k.read(t, 1)...)
	}
	return out
}

// TestServeBothWays: one goroutine per worker carries both directions:
// what its queue holds goes out of its socket, what its socket receives
// goes into its queue, however the two interleave; and it stops when told.
func TestServeBothWays(t *testing.T) {
	const n = 2
	x := newFastFixtureN(t, n, true, true, true)
	done := make(chan error, n)
	for _, w := range x.ws {
		go func() { done <- w.serve() }()
	}
	// Find a flow of each worker.
	var in [n][]byte
	for port := uint16(1000); in[0] == nil || in[1] == nil; port++ {
		p := tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: port, seq: 1, id: 1}.segment(testPayload(500, 1), 0, 0, tcpACK|tcpPSH)
		h, _ := flowHash(p)
		if in[h%n] == nil {
			in[h%n] = p
		}
	}
	for round := range 20 {
		for i := range n {
			// Out: a packet on worker i's queue leaves its socket for the
			// peer. In: a datagram of worker i's flow reaches its queue.
			out := inner("10.10.1.5", "10.10.2.9", 200+round, round)
			x.ks[i].feed(t, vnetHdr{}, out)
			if got := readDatagrams(t, x.peerConn, 1)[0]; !bytes.Equal(got, out) {
				t.Fatalf("round %d worker %d: sent % x", round, i, got[:20])
			}
			if _, err := x.peerConn.WriteToUDPAddrPort(in[i], x.addr()); err != nil {
				t.Fatal(err)
			}
			if w := x.ks[i].read(t, 1)[0]; !bytes.Equal(w.pkt, in[i]) {
				t.Fatalf("round %d worker %d: wrote % x", round, i, w.pkt[:20])
			}
		}
	}
	x.b.fast.stop()
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("serve did not stop")
		}
	}
	if x.m.EncapPackets.Load() != 2*20 || x.m.DecapPackets.Load() != 2*20 {
		t.Fatalf("encap %d, decap %d; want 40 each", x.m.EncapPackets.Load(), x.m.DecapPackets.Load())
	}
}

// TestStraysCounted: a GRO batch that mixes flows of two workers (what a
// NIC's GRO may build; our send side never does) is delivered whole to the
// worker of its first datagram, which counts the other worker's datagrams.
func TestStraysCounted(t *testing.T) {
	const n = 2
	x := newFastFixtureN(t, n, true, false, true)
	var fl [n][]byte
	for port := uint16(2000); fl[0] == nil || fl[1] == nil; port++ {
		p := inner("10.10.2.9", "10.10.1.5", 1000, 0)
		binary.BigEndian.PutUint16(p[20:22], port)
		binary.BigEndian.PutUint16(p[26:28], 0) // no UDP checksum
		if h, _ := flowHash(p); fl[h%n] == nil {
			fl[h%n] = p
		}
	}
	// One GSO send: flow 0, flow 1, flow 1: all steered to worker 0.
	rc, err := x.peerConn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	batch := newSendBatch(3)
	for _, p := range [][]byte{fl[0], fl[1], fl[1]} {
		batch.addSegment(p, nil, x.addr())
	}
	s := newSender(rc, 3)
	s.build([]gsoMsg{{dst: x.addr(), first: 0, n: 3, size: len(fl[0]), bytes: 3 * len(fl[0])}}, batch)
	if sent, errno, err := s.send(0, 1); err != nil || errno != 0 || sent != 1 {
		t.Fatalf("send: %d %v %v", sent, errno, err)
	}
	stop := x.run(t, x.ws[0].serve)
	got := x.ks[0].read(t, 3)
	stop()
	if len(got) != 3 || x.ws[0].strays != 2 {
		t.Fatalf("%d packets, %d strays; want 3 and 2", len(got), x.ws[0].strays)
	}
	if m := x.ws[0].b.metrics.GROStrays.Load(); m != 2 {
		t.Fatalf("overlaylab_udp_gro_stray_packets_total %d, want 2", m)
	}
}

// pending says whether the datapath wrote something within ms.
func (k *fakeKernel) pending(ms int) bool {
	pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
	c, _ := unix.Poll(pfd, ms)
	return c > 0
}

// TestWorkerCount: 0 is GOMAXPROCS; the limits are checked; the simple
// datapath takes no workers.
func TestWorkerCount(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	for opt, want := range map[int]int{0: 3, 1: 1, 4: 4, 256: 256} {
		if got, err := workerCount(opt); err != nil || got != want {
			t.Errorf("workerCount(%d) = %d, %v; want %d", opt, got, err, want)
		}
	}
	for _, bad := range []int{-1, 257} {
		if _, err := workerCount(bad); err == nil || !strings.Contains(err.Error(), "--udp-workers") {
			t.Errorf("workerCount(%d): %v", bad, err)
		}
	}
	cfg := &config.Config{Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24, Backend: config.Backend{Type: "udp", Port: 8285}}
	be, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{Workers: 5})
	if err != nil || be.(*UDP).workers != 5 {
		t.Errorf("fast with 5 workers: %v", err)
	}
	if _, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{UDPMode: "simple", Workers: 2}); err == nil ||
		!strings.Contains(err.Error(), "--udp-workers 2") {
		t.Errorf("simple with 2 workers: %v", err)
	}
	if be, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{UDPMode: "simple", Workers: 1}); err != nil || be.(*UDP).workers != 1 {
		t.Errorf("simple with 1 worker: %v", err)
	}
}

// FuzzSteering: on any bytes the kernel might hand the steering program,
// the program and flowHash agree (so the send side's flow grouping matches
// the receiver's steering), and flowHash never reads past the packet.
func FuzzSteering(f *testing.F) {
	f.Add(flowPacket("10.10.1.2", "10.10.2.3", protoTCP, 1000, 80, 0), uint8(4))
	f.Add(flowPacket("10.10.1.2", "10.10.2.3", protoUDP, 53, 5353, 10), uint8(3))
	f.Add([]byte{0x4f, 0, 0, 0, 0, 0, 0, 0, 0, protoTCP, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, uint8(2))
	f.Add([]byte{}, uint8(1))
	vms := map[uint8]*bpf.VM{}
	f.Fuzz(func(t *testing.T, pkt []byte, n uint8) {
		if n == 0 {
			n = 1
		}
		vm := vms[n]
		if vm == nil {
			var err error
			if vm, err = bpf.NewVM(steeringProgram(int(n))); err != nil {
				t.Fatal(err)
			}
			vms[n] = vm
		}
		got, err := vm.Run(pkt)
		if err != nil {
			t.Fatal(err)
		}
		h, ok := flowHash(pkt)
		want := 0
		if ok {
			want = int(h % uint32(n))
		}
		if got != want || got >= int(n) {
			t.Fatalf("n=%d: program %d, flowHash %d (ok %v)", n, got, want, ok)
		}
	})
}
