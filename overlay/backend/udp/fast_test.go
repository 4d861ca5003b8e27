package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// The fast loops run here against real UDP sockets on loopback and, in place
// of flannel0, one end of a SOCK_SEQPACKET socket pair: it keeps packet
// boundaries as a TUN descriptor does, so the datapath's own read and writev
// code runs unchanged (no root needed). The test plays the kernel at the
// other end: it writes what a TUN read would return (virtio-net header,
// large TSO/USO segments) and reads what the datapath writes.

// fakeKernel is the test's end of the pair.
type fakeKernel struct {
	fd   int
	vnet bool
}

func newFakeKernel(t testing.TB, vnet bool) (*fakeKernel, *tunDev) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		// Room for a queue of 64 KiB packets in both directions.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	dev, err := newTunDev(fds[1], vnet)
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKernel{fd: fds[0], vnet: vnet}
	t.Cleanup(func() { unix.Close(k.fd) })
	return k, dev
}

// feed queues one "TUN read": h (when the device has headers) and pkt.
func (k *fakeKernel) feed(t *testing.T, h vnetHdr, pkt []byte) {
	t.Helper()
	var b []byte
	if k.vnet {
		b = make([]byte, vnetHdrLen)
		h.encode(b)
	}
	if _, err := unix.Write(k.fd, append(b, pkt...)); err != nil {
		t.Fatalf("feed: %v", err)
	}
}

// written is one write the datapath made to the device.
type written struct {
	h   vnetHdr
	pkt []byte
}

// read returns the next n writes the datapath made.
func (k *fakeKernel) read(t *testing.T, n int) []written {
	t.Helper()
	var out []written
	buf := make([]byte, 1<<17)
	for len(out) < n {
		pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
		if c, err := unix.Poll(pfd, 3000); err != nil || c == 0 {
			t.Fatalf("after %d of %d writes: nothing more (%v)", len(out), n, err)
		}
		m, err := unix.Read(k.fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		w := written{pkt: bytes.Clone(buf[:m])}
		if k.vnet {
			h, err := decodeVnetHdr(w.pkt)
			if err != nil {
				t.Fatal(err)
			}
			w.h, w.pkt = h, w.pkt[vnetHdrLen:]
		}
		out = append(out, w)
	}
	return out
}

// quiet checks that the datapath wrote nothing more.
func (k *fakeKernel) quiet(t *testing.T) {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
	if c, _ := unix.Poll(pfd, 100); c != 0 {
		t.Fatalf("unexpected write: %v", k.read(t, 1)[0])
	}
}

// inner builds an IPv4/UDP packet of total length n from src to dst whose
// payload encodes seq, so reordering or corruption shows.
func inner(src, dst string, n int, seq int) []byte {
	payload := make([]byte, n-28)
	for i := range payload {
		payload[i] = byte(seq*7 + i)
	}
	p := fuzzIPv4(netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4(), 17, append(make([]byte, 8), payload...), 0)
	binary.BigEndian.PutUint16(p[20+4:], uint16(n-20))
	return p
}

// fastFixture is a fast datapath on loopback: our socket(s), a table in
// which the peer subnet 10.10.2.0/24 lives at peerConn's address. With
// several queues each has its own fake kernel (ks) and worker (ws); k and w
// are the first.
type fastFixture struct {
	b        *UDP
	k        *fakeKernel
	w        *worker
	ks       []*fakeKernel
	ws       []*worker
	m        *backend.Metrics
	peerConn *net.UDPConn
}

func newFastFixture(t *testing.T, vnet, gso, gro bool) *fastFixture {
	t.Helper()
	return newFastFixtureN(t, 1, vnet, gso, gro)
}

func newFastFixtureN(t testing.TB, n int, vnet, gso, gro bool) *fastFixture {
	t.Helper()
	f := &fastPath{}
	var ks []*fakeKernel
	for range n {
		k, dev := newFakeKernel(t, vnet)
		ks = append(ks, k)
		f.queues = append(f.queues, &fastQueue{dev: dev})
	}
	t.Cleanup(func() { f.close() })
	if err := f.openSockets(0, offloads{gso: gso, gro: gro}); err != nil {
		t.Fatal(err)
	}
	if gro && !f.feat.gro {
		t.Skip("UDP_GRO not supported by this kernel")
	}
	if n > 1 {
		if err := f.openEpollSets(); err != nil {
			t.Fatal(err)
		}
	}
	f.feat.vnetHdr = vnet
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m := &backend.Metrics{}
	b := &UDP{metrics: m, log: slog.New(slog.DiscardHandler), fast: f, mode: "fast", mtu: 1472, workers: n}
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	peerAddr = netip.AddrPortFrom(peerAddr.Addr().Unmap(), peerAddr.Port())
	ps := netip.MustParsePrefix("10.10.2.0/24")
	b.tab.Store(&table{subnetLen: 24, own: netip.MustParsePrefix("10.10.1.0/24"),
		bySubnet: map[netip.Prefix]route{ps: {subnet: ps, dst: peerAddr}},
		byPublic: map[netip.Addr]netip.Prefix{peerAddr.Addr(): ps}})
	t.Cleanup(func() { peer.Close() })
	var ws []*worker
	for i, q := range f.queues {
		ws = append(ws, &worker{b: b, id: i, q: q})
	}
	return &fastFixture{b: b, k: ks[0], w: ws[0], ks: ks, ws: ws, m: m, peerConn: peer}
}

// addr is our socket's address, to send to.
func (x *fastFixture) addr() netip.AddrPort {
	a := x.b.fast.queues[0].conn.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), a.Port())
}

// run starts loop and returns a function that stops it (and every other
// loop of the fixture) and checks that it ended cleanly.
func (x *fastFixture) run(t *testing.T, loop func() error) func() {
	done := make(chan error, 1)
	go func() { done <- loop() }()
	return func() {
		t.Helper()
		x.b.fast.stop()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("loop: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("loop did not stop")
		}
	}
}

func readDatagrams(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	var got [][]byte
	buf := make([]byte, 65536)
	for len(got) < n {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		got = append(got, bytes.Clone(buf[:m]))
	}
	return got
}

// tcpFlow describes TCP segments of one flow for the tests.
type tcpFlow struct {
	src, dst string
	sport    uint16
	seq      uint32
	id       uint16
	ipOpts   int // 32-bit words of IPv4 options
	tcpOpts  int // 32-bit words of TCP options
}

// segment builds one IPv4/TCP segment of the flow with payload at offset
// off (relative to seq) and valid checksums; the IPv4 ID is id+idx.
func (f tcpFlow) segment(payload []byte, off, idx int, flags byte) []byte {
	ihl := 20 + 4*f.ipOpts
	doff := 20 + 4*f.tcpOpts
	p := make([]byte, ihl+doff+len(payload))
	p[0] = 0x40 | byte(ihl/4)
	p[1] = 0x10
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:6], f.id+uint16(idx))
	p[6] = 0x40 // DF
	p[8], p[9] = 64, protoTCP
	copy(p[12:16], netip.MustParseAddr(f.src).AsSlice())
	copy(p[16:20], netip.MustParseAddr(f.dst).AsSlice())
	for i := 20; i < ihl; i++ {
		p[i] = 1 // IPv4 NOP options
	}
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:ihl]))
	tcp := p[ihl:]
	binary.BigEndian.PutUint16(tcp[0:2], f.sport)
	binary.BigEndian.PutUint16(tcp[2:4], 5001)
	binary.BigEndian.PutUint32(tcp[4:8], f.seq+uint32(off))
	binary.BigEndian.PutUint32(tcp[8:12], 0x01020304)
	tcp[12] = byte(doff/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:16], 502)
	for i := 20; i < doff; i++ {
		tcp[i] = byte(0x01 + i) // options: arbitrary but fixed per flow
	}
	copy(tcp[doff:], payload)
	binary.BigEndian.PutUint16(tcp[16:18], refTransportChecksum(p, ihl))
	return p
}

// refTransportChecksum is the TCP/UDP checksum of an IPv4 packet computed
// the plain way (refSum), independent of the datapath's csumAdd.
func refTransportChecksum(p []byte, ihl int) uint16 {
	seg := bytes.Clone(p[ihl:])
	off := 16
	if p[9] == protoUDP {
		off = 6
	}
	seg[off], seg[off+1] = 0, 0
	pseudo := make([]byte, 12, 12+len(seg))
	copy(pseudo, p[12:20])
	pseudo[9] = p[9]
	binary.BigEndian.PutUint16(pseudo[10:12], uint16(len(seg)))
	c := ^refSum(append(pseudo, seg...))
	if c == 0 && p[9] == protoUDP {
		c = 0xffff
	}
	return c
}

// checkPacket verifies the IPv4 header checksum and length and the
// transport checksum of p.
func checkPacket(t *testing.T, what string, p []byte) {
	t.Helper()
	ihl := int(p[0]&0x0f) * 4
	if int(binary.BigEndian.Uint16(p[2:4])) != len(p) {
		t.Fatalf("%s: IPv4 length %d, packet %d", what, binary.BigEndian.Uint16(p[2:4]), len(p))
	}
	if refSum(p[:ihl]) != 0xffff {
		t.Fatalf("%s: bad IPv4 header checksum", what)
	}
	off := ihl + 16
	if p[9] == protoUDP {
		off = ihl + 6
	}
	if p[9] == protoUDP && p[off] == 0 && p[off+1] == 0 {
		return // UDP without a checksum
	}
	if got, want := binary.BigEndian.Uint16(p[off:]), refTransportChecksum(p, ihl); got != want {
		t.Fatalf("%s: transport checksum %#04x, want %#04x\n% x", what, got, want, p[:min(80, len(p))])
	}
}

func testPayload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13) ^ seed
	}
	return b
}

// tsoHeader is what the kernel puts in front of a TSO segment: checksum to
// be completed at the TCP checksum field, cut at mss.
func tsoHeader(ihl, hl, mss int) vnetHdr {
	return vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(hl), gsoSize: uint16(mss),
		csumStart: uint16(ihl), csumOffset: 16}
}

// TestFastTunToUDPSegments: large TCP and UDP segments read from the device
// leave as the datagrams the kernel's own segmentation would have made, each
// with valid checksums, and small ones with a checksum left to us get it
// completed. With UDP GSO on or off the wire is the same.
func TestFastTunToUDPSegments(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			x := newFastFixture(t, true, gso, false)
			stop := x.run(t, x.w.tunToUDP)
			var want [][]byte
			// The peer reads plainly (no GRO): one datagram per packet. It
			// reads after each group, so that its socket buffer (not raised
			// without root) never overflows.
			var sent uint64
			var bytesWant uint64
			expect := func() {
				t.Helper()
				got := readDatagrams(t, x.peerConn, len(want))
				for i := range want {
					checkPacket(t, fmt.Sprintf("datagram %d", i), got[i])
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("datagram %d differs:\n got % x\nwant % x", i, got[i][:min(60, len(got[i]))], want[i][:min(60, len(want[i]))])
					}
					bytesWant += uint64(len(want[i]))
				}
				sent += uint64(len(want))
				want = want[:0]
			}

			for _, c := range []struct {
				mss, n, ipOpts, tcpOpts int
				flags                   byte
			}{
				{1420, 45*1420 + 333, 0, 3, tcpACK | tcpPSH},      // 46 segments, the last short, PSH on it only
				{1420, 44 * 1420, 0, 3, tcpACK | tcpCWR | tcpFIN}, // CWR first only, FIN last only
				{1000, 7777, 2, 0, tcpACK},                        // IPv4 options and no TCP options
				{536, 1, 0, 0, tcpACK | tcpPSH},                   // one byte: one segment
				{100, 12800, 0, 10, tcpACK},                       // 128 segments, 40 bytes of TCP options
			} {
				fl := tcpFlow{src: "10.10.1.5", dst: "10.10.2.9", sport: 40000, seq: 0xfffff000, id: 0xfff0,
					ipOpts: c.ipOpts, tcpOpts: c.tcpOpts}
				payload := testPayload(c.n, byte(c.mss))
				big := fl.segment(payload, 0, 0, c.flags)
				ihl, hl := 20+4*c.ipOpts, 20+4*c.ipOpts+20+4*c.tcpOpts
				// The kernel leaves the pseudo-header sum in the field; the
				// datapath must not depend on it.
				big[ihl+16], big[ihl+17] = 0xde, 0xad
				x.k.feed(t, tsoHeader(ihl, hl, c.mss), big)
				for i, off := 0, 0; off < len(payload) || i == 0; i, off = i+1, off+c.mss {
					p := payload[off:min(off+c.mss, len(payload))]
					f := c.flags
					if off+c.mss < len(payload) {
						f &^= tcpPSH | tcpFIN
					}
					if i > 0 {
						f &^= tcpCWR
					}
					want = append(want, fl.segment(p, off, i, f))
				}
				expect()
			}

			// UDP segmentation offload: datagrams of 1200 bytes of payload.
			udpBig := fuzzIPv4([4]byte{10, 10, 1, 5}, [4]byte{10, 10, 2, 9}, protoUDP, append(make([]byte, 8), testPayload(5000, 3)...), 0)
			binary.BigEndian.PutUint16(udpBig[20:], 5353)
			binary.BigEndian.PutUint16(udpBig[22:], 53)
			x.k.feed(t, vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, hdrLen: 28, gsoSize: 1200, csumStart: 20, csumOffset: 6}, udpBig)
			for i, off := 0, 0; off < 5000; i, off = i+1, off+1200 {
				p := testPayload(5000, 3)[off:min(off+1200, 5000)]
				d := fuzzIPv4([4]byte{10, 10, 1, 5}, [4]byte{10, 10, 2, 9}, protoUDP, append(make([]byte, 8), p...), 0)
				binary.BigEndian.PutUint16(d[4:6], uint16(i))
				binary.BigEndian.PutUint16(d[10:12], 0)
				binary.BigEndian.PutUint16(d[10:12], checksum(d[:20]))
				binary.BigEndian.PutUint16(d[20:], 5353)
				binary.BigEndian.PutUint16(d[22:], 53)
				binary.BigEndian.PutUint16(d[24:], uint16(8+len(p)))
				binary.BigEndian.PutUint16(d[26:], refTransportChecksum(d, 20))
				want = append(want, d)
			}
			expect()

			// Small packets whose checksum the kernel left to us, and one
			// that is complete already.
			fl := tcpFlow{src: "10.10.1.5", dst: "10.10.2.9", sport: 40001, seq: 7}
			small := fl.segment(testPayload(99, 9), 0, 0, tcpACK|tcpPSH)
			want = append(want, bytes.Clone(small))
			// The field holds the pseudo-header sum, as the kernel leaves it.
			binary.BigEndian.PutUint16(small[36:38], csumFold(pseudoSum(small, protoTCP, len(small)-20)))
			x.k.feed(t, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 16}, small)
			plain := inner("10.10.1.5", "10.10.2.9", 333, 4)
			want = append(want, plain)
			x.k.feed(t, vnetHdr{}, plain)

			// Unroutable (answered with ICMP into the device) and malformed
			// reads in between are dropped without disturbing the rest.
			unroutable := inner("10.10.1.5", "10.10.77.1", 100, 0)
			x.k.feed(t, vnetHdr{}, unroutable)
			x.k.feed(t, vnetHdr{}, []byte{0x45, 0, 0})
			x.k.feed(t, vnetHdr{gsoType: 4 /* TCPv6 */, gsoSize: 1000}, fl.segment(testPayload(3000, 1), 0, 0, tcpACK))
			x.k.feed(t, vnetHdr{gsoType: gsoTCPv4, gsoSize: 0}, fl.segment(testPayload(3000, 1), 0, 0, tcpACK))
			x.k.feed(t, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 400}, inner("10.10.1.5", "10.10.2.9", 100, 0))
			last := inner("10.10.1.5", "10.10.2.9", 500, 200)
			want = append(want, last)
			x.k.feed(t, vnetHdr{}, last)

			expect()
			icmp := x.k.read(t, 1)[0]
			if icmp.h != (vnetHdr{}) || icmp.pkt[9] != 1 || icmp.pkt[20] != 3 || !bytes.Equal(icmp.pkt[28:], unroutable[:28]) {
				t.Fatalf("ICMP written back: %+v % x", icmp.h, icmp.pkt)
			}
			stop()
			if x.m.EncapPackets.Load() != sent || x.m.EncapBytes.Load() != bytesWant ||
				x.m.Dropped(backend.DropNoRoute) != 1 || x.m.Dropped(backend.DropMalformed) != 4 {
				t.Fatalf("metrics: encap %d (want %d), bytes %d (want %d), no_route %d, malformed %d",
					x.m.EncapPackets.Load(), sent, x.m.EncapBytes.Load(), bytesWant, x.m.Dropped(backend.DropNoRoute),
					x.m.Dropped(backend.DropMalformed))
			}
		})
	}
}

// TestFastTunToUDPNoVnet: without the virtio-net header (offloads refused)
// every read is one packet, sent as it is.
func TestFastTunToUDPNoVnet(t *testing.T) {
	x := newFastFixture(t, false, true, false)
	stop := x.run(t, x.w.tunToUDP)
	var want [][]byte
	for i, n := range []int{28, 29, 1471, 1472, 1000, 1000, 1000} {
		p := inner("10.10.1.5", "10.10.2.9", n, i)
		want = append(want, p)
		x.k.feed(t, vnetHdr{}, p)
	}
	got := readDatagrams(t, x.peerConn, len(want))
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
	stop()
}

// sendSegments sends pkts from the peer to our socket with UDP GSO where
// sizes allow, so that a GRO socket gets them in few buffers.
func (x *fastFixture) sendSegments(t testing.TB, pkts [][]byte) {
	t.Helper()
	rc, err := x.peerConn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	batch := newSendBatch(len(pkts))
	s := newSender(rc, len(pkts))
	var p gsoPlanner
	for i, pk := range pkts {
		batch.addSegment(pk, nil, x.addr())
		fl, _ := flowHash(pk)
		p.add(i, len(pk), x.addr(), fl, true)
	}
	s.build(p.msgs, batch)
	for i := 0; i < len(p.msgs); {
		sent, errno, err := s.send(i, len(p.msgs))
		if err != nil || errno != 0 {
			t.Fatalf("send: %v %v", err, errno)
		}
		i += sent
	}
}

// resegment cuts a merged write back into segments as the kernel would
// (with the datapath's splitTCP, itself checked against independently built
// segments in TestFastTunToUDPSegments).
func resegment(t *testing.T, w written) [][]byte {
	t.Helper()
	if w.h.gsoType == gsoNone {
		return [][]byte{w.pkt}
	}
	ihl := int(w.pkt[0]&0x0f) * 4
	if w.h != tsoHeader(ihl, int(w.h.hdrLen), int(w.h.gsoSize)) {
		t.Fatalf("merged packet header %+v", w.h)
	}
	// The checksum field holds the pseudo-header sum, as the kernel's TSO
	// expects.
	total := len(w.pkt) - ihl
	if got, want := binary.BigEndian.Uint16(w.pkt[ihl+16:]), csumFold(pseudoSum(w.pkt, protoTCP, total)); got != want {
		t.Fatalf("merged TCP checksum field %#04x, want the pseudo-header sum %#04x", got, want)
	}
	if refSum(w.pkt[:ihl]) != 0xffff {
		t.Fatal("merged packet: bad IPv4 header checksum")
	}
	b := newSendBatch(256)
	if _, err := b.splitTCP(bytes.Clone(w.pkt), int(w.h.gsoSize), netip.AddrPort{}); err != nil {
		t.Fatal(err)
	}
	return b.datagrams()
}

// TestFastUDPToTunMerges: consecutive segments of a TCP flow from a peer
// are written as one large segment that cuts back into exactly what was
// sent; anything the kernel's GRO would not merge is written on its own.
func TestFastUDPToTunMerges(t *testing.T) {
	for _, gro := range []bool{true, false} {
		t.Run(fmt.Sprintf("gro=%v", gro), func(t *testing.T) {
			x := newFastFixture(t, true, false, gro)
			a := tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: 1111, seq: 0xffffff00, id: 65530, tcpOpts: 3}
			b := tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: 2222, seq: 5, id: 1}
			var pkts [][]byte
			seg := func(f tcpFlow, n, off, idx int, flags byte) []byte {
				p := f.segment(testPayload(n, byte(off)), off, idx, flags)
				pkts = append(pkts, p)
				return p
			}
			// Flow a: 30 full segments and a short one with PSH: one write.
			for i := range 30 {
				seg(a, 1400, i*1400, i, tcpACK)
			}
			seg(a, 700, 30*1400, 30, tcpACK|tcpPSH)
			// Flow a again: a segment with a bad checksum in the middle of
			// a run ends it and is written alone, as received.
			seg(a, 1400, 30*1400+700, 31, tcpACK)
			bad := seg(a, 1400, 31*1400+700, 32, tcpACK)
			bad[len(bad)-1] ^= 0xff
			seg(a, 1400, 32*1400+700, 33, tcpACK)
			seg(a, 1400, 33*1400+700, 34, tcpACK)
			// Flow b interleaves: runs of a and b do not mix.
			seg(b, 1000, 0, 0, tcpACK)
			seg(b, 1000, 1000, 1, tcpACK)
			// A gap in the sequence, a pure ACK, a SYN and a UDP packet:
			// each alone.
			seg(b, 1000, 5000, 2, tcpACK)
			seg(b, 0, 6000, 3, tcpACK)
			seg(b, 10, 6000, 4, tcpSYN|tcpACK)
			pkts = append(pkts, inner("10.10.2.9", "10.10.1.5", 300, 1))
			// Forged inner source and foreign inner destination: dropped.
			pkts = append(pkts, inner("10.10.3.9", "10.10.1.5", 300, 0), inner("10.10.2.9", "10.10.4.5", 300, 0))
			want := pkts[:len(pkts)-2]
			// Queued before the loop starts, so that one recvmmsg takes
			// them all and the writes do not depend on timing.
			x.sendSegments(t, pkts)
			stop := x.run(t, x.w.udpToTun)

			// What each write carries, in order, and how many writes: the
			// merges (31 a, 1 a, bad, 2 a, 2 b) and the singles.
			var got [][]byte
			var writes []written
			for len(got) < len(want) {
				w := x.k.read(t, 1)[0]
				writes = append(writes, w)
				got = append(got, resegment(t, w)...)
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("segment %d differs after resegmenting:\n got % x\nwant % x", i, got[i][:60], want[i][:60])
				}
			}
			var sizes []int
			for _, w := range writes {
				n := 1
				if w.h.gsoType != gsoNone {
					n = (len(w.pkt) - int(w.h.hdrLen) + int(w.h.gsoSize) - 1) / int(w.h.gsoSize)
				}
				sizes = append(sizes, n)
			}
			if fmt.Sprint(sizes) != "[31 1 1 2 2 1 1 1 1]" {
				t.Fatalf("segments per write %v, want [31 1 1 2 2 1 1 1 1]", sizes)
			}
			if writes[2].h != (vnetHdr{}) || !bytes.Equal(writes[2].pkt, bad) {
				t.Fatal("the segment with a bad checksum was not written alone and unchanged")
			}
			x.k.quiet(t)
			// A datagram from a stranger.
			stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			defer stranger.Close()
			if _, err := stranger.WriteToUDPAddrPort(inner("10.10.2.9", "10.10.1.5", 100, 0), x.addr()); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for x.m.Dropped(backend.DropNotPeer) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			stop()
			if x.m.DecapPackets.Load() != uint64(len(want)) || x.m.Dropped(backend.DropSpoofed) != 2 || x.m.Dropped(backend.DropNotPeer) != 1 {
				t.Fatalf("metrics: decap %d (want %d), spoofed %d, not_peer %d", x.m.DecapPackets.Load(), len(want),
					x.m.Dropped(backend.DropSpoofed), x.m.Dropped(backend.DropNotPeer))
			}
		})
	}
}

// TestFastUDPToTunNoVnet: without the virtio-net header nothing is merged:
// each datagram is written as it came.
func TestFastUDPToTunNoVnet(t *testing.T) {
	x := newFastFixture(t, false, false, true)
	stop := x.run(t, x.w.udpToTun)
	a := tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: 1111, seq: 1}
	var pkts [][]byte
	for i := range 10 {
		pkts = append(pkts, a.segment(testPayload(1400, byte(i)), i*1400, i, tcpACK))
	}
	x.sendSegments(t, pkts)
	for i, w := range x.k.read(t, len(pkts)) {
		if !bytes.Equal(w.pkt, pkts[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
	stop()
}

// TestFastUDPToTunManyGRO fills more than one batch of writes in one
// receive, so the batch is written in several parts, in order.
func TestFastUDPToTunManyGRO(t *testing.T) {
	x := newFastFixture(t, true, false, true)
	var want [][]byte
	// Queue everything before the loop starts so one recvmmsg sees it all:
	// 32 buffers of 64 small packets, more than the coalescer's room.
	for i := range 32 * 64 {
		want = append(want, inner("10.10.2.9", "10.10.1.5", 100, i))
	}
	x.sendSegments(t, want)
	stop := x.run(t, x.w.udpToTun)
	got := x.k.read(t, len(want))
	for i := range want {
		if !bytes.Equal(got[i].pkt, want[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
	stop()
}

func TestNewMode(t *testing.T) {
	cfg := &config.Config{Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24, Backend: config.Backend{Type: "udp", Port: 8285}}
	for mode, want := range map[string]string{"": "fast", "fast": "fast", "simple": "simple"} {
		be, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{UDPMode: mode})
		if err != nil || be.(*UDP).mode != want {
			t.Errorf("mode %q: %v, %v", mode, be, err)
		}
	}
	if _, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{UDPMode: "turbo"}); err == nil ||
		!strings.Contains(err.Error(), `--udp-mode "turbo": must be fast or simple`) {
		t.Errorf("unknown mode: %v", err)
	}
	t.Setenv(OffloadsEnv, "tso")
	if _, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{}); err == nil || !strings.Contains(err.Error(), OffloadsEnv) {
		t.Errorf("bad %s accepted: %v", OffloadsEnv, err)
	}
}

// TestTunDevStops: a loop waiting on an empty device returns when told to
// stop.
func TestTunDevStops(t *testing.T) {
	_, dev := newFakeKernel(t, true)
	done := make(chan error, 1)
	go func() {
		_, err := dev.read(make([]byte, 100), false)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	dev.file.SetDeadline(immediate)
	select {
	case err := <-done:
		if !stopped(err) {
			t.Fatalf("read ended with %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("read did not stop")
	}
	if n, err := dev.read(make([]byte, 100), true); !stopped(err) && n != -1 {
		t.Fatalf("non-blocking read on an empty device: %d, %v", n, err)
	}
	dev.close()
	if _, err := dev.read(make([]byte, 100), false); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// TestFastTunToUDPTableAfterWait: a packet that arrives while the worker
// waits for the TUN device is routed by the table of when it arrived, not
// of when the wait began: a peer that left meanwhile gets no datagram, the
// sender an ICMP net unreachable.
func TestFastTunToUDPTableAfterWait(t *testing.T) {
	x := newFastFixture(t, false, true, false)
	stop := x.run(t, x.w.tunToUDP)
	time.Sleep(100 * time.Millisecond) // the worker is now blocked in its first read
	x.b.tab.Store(&table{subnetLen: 24, own: netip.MustParsePrefix("10.10.1.0/24"),
		bySubnet: map[netip.Prefix]route{}, byPublic: map[netip.Addr]netip.Prefix{}})
	x.k.feed(t, vnetHdr{}, inner("10.10.1.5", "10.10.2.9", 100, 0))
	reply := x.k.read(t, 1)[0].pkt
	if len(reply) < 22 || reply[9] != 1 || reply[20] != 3 || reply[21] != 0 {
		t.Fatalf("want an ICMP net unreachable back, got % x", reply[:min(len(reply), 24)])
	}
	x.peerConn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := x.peerConn.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Fatalf("a %d-byte datagram went to the peer that left", n)
	}
	if x.m.Dropped(backend.DropNoRoute) != 1 {
		t.Fatalf("no_route %d, want 1", x.m.Dropped(backend.DropNoRoute))
	}
	stop()
}
