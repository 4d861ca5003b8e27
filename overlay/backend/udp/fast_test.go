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
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// The fast loops run here against a fake TUN device and real UDP sockets on
// loopback (no root needed): what goes in must come out as the same
// datagrams, one bare packet each, with UDP GSO and GRO on or off.

// fakeTun is a wgtun.Device whose reads are fed by the test and whose writes
// are recorded.
type fakeTun struct {
	in     chan [][]byte
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	written [][]byte
	offsets []int
}

var _ wgtun.Device = (*fakeTun)(nil)

func newFakeTun() *fakeTun {
	return &fakeTun{in: make(chan [][]byte, 16), closed: make(chan struct{})}
}

func (f *fakeTun) File() *os.File { return nil }

func (f *fakeTun) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case pkts := <-f.in:
		if len(pkts) > len(bufs) {
			return 0, wgtun.ErrTooManySegments
		}
		for i, p := range pkts {
			// As the library does: a segment longer than its buffer is cut
			// short, its size still reported in full.
			copy(bufs[i][offset:], p)
			sizes[i] = len(p)
		}
		return len(pkts), nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

func (f *fakeTun) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range bufs {
		if offset < 10 || cap(b)-offset < 65535-1500 && len(b)-offset > 1500 {
			return 0, fmt.Errorf("buffer without headroom or room to merge: len %d cap %d", len(b), cap(b))
		}
		f.written = append(f.written, bytes.Clone(b[offset:]))
		n += len(b) - offset
	}
	return n, nil
}

func (f *fakeTun) packets() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.written...)
}

func (f *fakeTun) MTU() (int, error)          { return 1472, nil }
func (f *fakeTun) Name() (string, error)      { return "fake0", nil }
func (f *fakeTun) Events() <-chan wgtun.Event { return nil }
func (f *fakeTun) BatchSize() int             { return tunBatch }
func (f *fakeTun) Close() error               { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeTun) feed(pkts ...[]byte)        { f.in <- pkts }
func (f *fakeTun) waitWritten(n int) [][]byte {
	return waitFor(func() [][]byte { return f.packets() }, n)
}
func waitFor(get func() [][]byte, n int) [][]byte {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := get()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
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

// fastFixture is a fast datapath on loopback: our socket, a table in which
// the peer subnet 10.10.2.0/24 lives at peerConn's address.
type fastFixture struct {
	b        *UDP
	dev      *fakeTun
	m        *backend.Metrics
	peerConn *net.UDPConn
}

func newFastFixture(t *testing.T, gso, gro bool) *fastFixture {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	dev := newFakeTun()
	f := &fastPath{dev: dev, conn: conn, rc: rc}
	f.feat.gso = gso
	if gro {
		rc.Control(func(fd uintptr) {
			f.feat.gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		})
		if !f.feat.gro {
			t.Skip("UDP_GRO not supported by this kernel")
		}
	}
	m := &backend.Metrics{}
	b := &UDP{metrics: m, log: slog.New(slog.DiscardHandler), fast: f, mode: "fast"}
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	peerAddr = netip.AddrPortFrom(peerAddr.Addr().Unmap(), peerAddr.Port())
	ps := netip.MustParsePrefix("10.10.2.0/24")
	b.tab.Store(&table{subnetLen: 24, own: netip.MustParsePrefix("10.10.1.0/24"),
		bySubnet: map[netip.Prefix]route{ps: {subnet: ps, dst: peerAddr}},
		byPublic: map[netip.Addr]netip.Prefix{peerAddr.Addr(): ps}})
	t.Cleanup(func() { conn.Close(); peer.Close(); dev.Close() })
	return &fastFixture{b: b, dev: dev, m: m, peerConn: peer}
}

func (x *fastFixture) addr() *net.UDPAddr { return x.b.fast.conn.LocalAddr().(*net.UDPAddr) }

func TestFastTunToUDP(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			x := newFastFixture(t, gso, false)
			done := make(chan error, 1)
			go func() { done <- x.b.tunToUDPFast() }()

			var want [][]byte
			var batch [][]byte
			// A TSO batch cut at the MTU (46 segments, the last shorter),
			// then small packets, one of each odd size.
			for i := range 46 {
				n := 1472
				if i == 45 {
					n = 777
				}
				batch = append(batch, inner("10.10.1.5", "10.10.2.9", n, i))
			}
			for i, n := range []int{28, 29, 1471, 1472, 1000, 1000, 1000} {
				batch = append(batch, inner("10.10.1.5", "10.10.2.9", n, 100+i))
			}
			want = append(want, batch...)
			// Unroutable (answered with ICMP into the TUN) and malformed ones
			// in the middle are dropped without disturbing the rest.
			unroutable := inner("10.10.1.5", "10.10.77.1", 100, 0)
			batch = append(batch, unroutable, []byte{0x45, 0, 0})
			batch = append(batch, inner("10.10.1.5", "10.10.2.9", 500, 200))
			want = append(want, batch[len(batch)-1])
			x.dev.feed(batch...)

			// The peer reads plainly (no GRO): one datagram per packet.
			got := readDatagrams(t, x.peerConn, len(want))
			for i := range want {
				if i >= len(got) || !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d differs (got %d datagrams, want %d)", i, len(got), len(want))
				}
			}
			icmp := x.dev.waitWritten(1)
			if len(icmp) != 1 || icmp[0][9] != 1 || icmp[0][20] != 3 || !bytes.Equal(icmp[0][28:], unroutable[:28]) {
				t.Fatalf("ICMP written back: % x", icmp)
			}
			if x.m.EncapPackets.Load() != uint64(len(want)) || x.m.Dropped(backend.DropNoRoute) != 1 || x.m.Dropped(backend.DropMalformed) != 1 {
				t.Fatalf("metrics: encap %d, no_route %d, malformed %d", x.m.EncapPackets.Load(), x.m.Dropped(backend.DropNoRoute), x.m.Dropped(backend.DropMalformed))
			}
			var bytesWant uint64
			for _, p := range want {
				bytesWant += uint64(len(p))
			}
			if x.m.EncapBytes.Load() != bytesWant {
				t.Fatalf("encap bytes %d, want %d", x.m.EncapBytes.Load(), bytesWant)
			}
			x.dev.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
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

func TestFastUDPToTun(t *testing.T) {
	for _, gro := range []bool{true, false} {
		t.Run(fmt.Sprintf("gro=%v", gro), func(t *testing.T) {
			x := newFastFixture(t, false, gro)
			done := make(chan error, 1)
			go func() { done <- x.b.udpToTunFast() }()

			// The peer sends with UDP GSO, so a GRO socket gets several
			// packets in one buffer.
			rc, err := x.peerConn.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			s := newSender(rc, 128)
			var p gsoPlanner
			var pkts, want [][]byte
			dst := x.addr().AddrPort()
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
			for i := range 40 {
				n := 1472
				if i == 39 {
					n = 99
				}
				pkts = append(pkts, inner("10.10.2.9", "10.10.1.5", n, i))
			}
			// Forged inner source and foreign inner destination: dropped.
			pkts = append(pkts, inner("10.10.3.9", "10.10.1.5", 300, 0), inner("10.10.2.9", "10.10.4.5", 300, 0))
			pkts = append(pkts, inner("10.10.2.9", "10.10.1.5", 300, 50))
			for i, pk := range pkts {
				p.add(i, len(pk), dst, true)
				if i < 40 || i == len(pkts)-1 {
					want = append(want, pk)
				}
			}
			s.build(p.msgs, pkts)
			for i := 0; i < len(p.msgs); {
				sent, errno, err := s.send(i, len(p.msgs))
				if err != nil || errno != 0 {
					t.Fatalf("send: %v %v", err, errno)
				}
				i += sent
			}
			// A datagram from a stranger.
			stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			defer stranger.Close()
			if _, err := stranger.WriteToUDP(inner("10.10.2.9", "10.10.1.5", 100, 0), x.addr()); err != nil {
				t.Fatal(err)
			}

			got := x.dev.waitWritten(len(want))
			for i := range want {
				if i >= len(got) || !bytes.Equal(got[i], want[i]) {
					t.Fatalf("packet %d differs (got %d, want %d)", i, len(got), len(want))
				}
			}
			deadline := time.Now().Add(3 * time.Second)
			for x.m.Dropped(backend.DropNotPeer) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if x.m.DecapPackets.Load() != uint64(len(want)) || x.m.Dropped(backend.DropSpoofed) != 2 || x.m.Dropped(backend.DropNotPeer) != 1 {
				t.Fatalf("metrics: decap %d, spoofed %d, not_peer %d", x.m.DecapPackets.Load(), x.m.Dropped(backend.DropSpoofed), x.m.Dropped(backend.DropNotPeer))
			}
			x.b.fast.conn.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFastUDPToTunManyGRO fills more than the spare buffers in one receive,
// so the batch is written in several parts, in order.
func TestFastUDPToTunManyGRO(t *testing.T) {
	x := newFastFixture(t, false, true)
	rc, _ := x.peerConn.SyscallConn()
	s := newSender(rc, 64)
	dst := x.addr().AddrPort()
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	var want [][]byte
	// Queue everything before the loop starts so one recvmmsg sees it all.
	for batch := range 4 { // 160 small packets: more than the 128 spares, well within the default socket buffer
		var p gsoPlanner
		var pkts [][]byte
		for i := range 40 {
			pkts = append(pkts, inner("10.10.2.9", "10.10.1.5", 300, batch*40+i))
			p.add(i, 300, dst, true)
		}
		s.build(p.msgs, pkts)
		if sent, errno, err := s.send(0, len(p.msgs)); err != nil || errno != 0 || sent != len(p.msgs) {
			t.Fatalf("send: %d %v %v", sent, errno, err)
		}
		want = append(want, pkts...)
	}
	done := make(chan error, 1)
	go func() { done <- x.b.udpToTunFast() }()
	got := x.dev.waitWritten(len(want))
	if len(got) != len(want) {
		t.Fatalf("%d packets written, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
	x.b.fast.conn.Close()
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
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

// TestFastTunToUDPOversizeSegment: a segment longer than the MTU-sized read
// buffers (someone raised flannel0's MTU by hand) is dropped, not sent cut
// short, and does not disturb the rest of its batch.
func TestFastTunToUDPOversizeSegment(t *testing.T) {
	x := newFastFixture(t, true, false)
	done := make(chan error, 1)
	go func() { done <- x.b.tunToUDPFast() }()
	a, big, c := inner("10.10.1.5", "10.10.2.9", 1400, 1), inner("10.10.1.5", "10.10.2.9", 3000, 2), inner("10.10.1.5", "10.10.2.9", 1400, 3)
	x.dev.feed(a, big, c)
	got := readDatagrams(t, x.peerConn, 2)
	if !bytes.Equal(got[0], a) || !bytes.Equal(got[1], c) {
		t.Fatalf("datagrams differ")
	}
	if x.m.Dropped(backend.DropMalformed) != 1 || x.m.EncapPackets.Load() != 2 {
		t.Fatalf("malformed %d, encap %d", x.m.Dropped(backend.DropMalformed), x.m.EncapPackets.Load())
	}
	x.dev.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
