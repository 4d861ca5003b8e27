package udp

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// strangerGarbage is what a machine that is not a peer might send to the
// port: nothing, a fragment of a header, another protocol, a broken IPv4
// header and a well-formed packet for us.
func strangerGarbage() [][]byte {
	bad := inner("10.10.2.9", "10.10.1.5", 100, 0)
	bad[0] = 0x44 // IHL below the minimum
	return [][]byte{
		{},
		{0x45},
		{0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		bad,
		inner("10.10.2.9", "10.10.1.5", 100, 1),
	}
}

// sendFrom sends each payload as one datagram from a socket on src.
func sendFrom(t *testing.T, src net.IP, to netip.AddrPort, payloads [][]byte) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range payloads {
		if _, err := c.WriteToUDPAddrPort(p, to); err != nil {
			t.Fatal(err)
		}
	}
}

// waitDrops waits until the drops for reasons add up to n.
func waitDrops(m *backend.Metrics, n uint64, reasons ...backend.DropReason) {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		var sum uint64
		for _, r := range reasons {
			sum += m.Dropped(r)
		}
		if sum >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkStrangerDrops: everything a stranger sent counts as not_peer, and a
// peer's garbage still as malformed or not_ipv4 (docs/SECURITY.md: the
// sender is checked before anything in the datagram is looked at).
func checkStrangerDrops(t *testing.T, m *backend.Metrics, stranger, peerGarbage int) {
	t.Helper()
	waitDrops(m, uint64(stranger+peerGarbage), backend.DropNotPeer, backend.DropMalformed, backend.DropNotIPv4)
	// Nothing more may arrive late.
	time.Sleep(50 * time.Millisecond)
	np, mal, v4 := m.Dropped(backend.DropNotPeer), m.Dropped(backend.DropMalformed), m.Dropped(backend.DropNotIPv4)
	if np != uint64(stranger) || mal+v4 != uint64(peerGarbage) {
		t.Fatalf("drops: not_peer %d (want %d), malformed %d + not_ipv4 %d (want %d in all)", np, stranger, mal, v4, peerGarbage)
	}
	if m.DecapPackets.Load() != 0 {
		t.Fatalf("%d packets were written to the device", m.DecapPackets.Load())
	}
}

// TestNotPeerCountedFirst: datagrams from a non-peer are dropped as
// not_peer whatever they hold, in both datapaths; garbage from a peer is
// malformed. (Before the fix a stranger's garbage counted as malformed or
// not_ipv4.)
func TestNotPeerCountedFirst(t *testing.T) {
	peerGarbage := [][]byte{{0x45}, {0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	t.Run("fast", func(t *testing.T) {
		for _, gro := range []bool{false, true} {
			x := newFastFixture(t, true, false, gro)
			stop := x.run(t, x.w.udpToTun)
			sendFrom(t, net.IPv4(127, 0, 0, 2), x.addr(), strangerGarbage())
			if _, err := x.peerConn.WriteToUDPAddrPort(peerGarbage[0], x.addr()); err != nil {
				t.Fatal(err)
			}
			if _, err := x.peerConn.WriteToUDPAddrPort(peerGarbage[1], x.addr()); err != nil {
				t.Fatal(err)
			}
			checkStrangerDrops(t, x.m, len(strangerGarbage()), len(peerGarbage))
			stop()
		}
	})
	t.Run("simple", func(t *testing.T) {
		b, peer := newSimpleFixture(t)
		done := make(chan error, 1)
		go func() { done <- b.udpToTun() }()
		to := b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		to = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), to.Port())
		sendFrom(t, net.IPv4(127, 0, 0, 2), to, strangerGarbage())
		for _, g := range peerGarbage {
			if _, err := peer.WriteToUDPAddrPort(g, to); err != nil {
				t.Fatal(err)
			}
		}
		checkStrangerDrops(t, b.metrics, len(strangerGarbage()), len(peerGarbage))
		b.conn.SetDeadline(immediate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// newSimpleFixture is the simple datapath on loopback, one end of a
// SOCK_SEQPACKET pair in place of flannel0, with one peer (the returned
// socket) that owns 10.10.2.0/24.
func newSimpleFixture(t *testing.T) (*UDP, *net.UDPConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	tun := os.NewFile(uintptr(fds[1]), "tun")
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); tun.Close(); conn.Close(); peer.Close() })
	b := &UDP{metrics: &backend.Metrics{}, log: slog.New(slog.DiscardHandler), mode: "simple", tun: tun, conn: conn, mtu: 1472}
	ps := netip.MustParsePrefix("10.10.2.0/24")
	pa := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	b.tab.Store(&table{subnetLen: 24, own: netip.MustParsePrefix("10.10.1.0/24"),
		bySubnet: map[netip.Prefix]route{ps: {subnet: ps, dst: netip.AddrPortFrom(pa, uint16(peer.LocalAddr().(*net.UDPAddr).Port))}},
		byPublic: map[netip.Addr]netip.Prefix{pa: ps}})
	return b, peer
}

func TestDatagramsInBuffer(t *testing.T) {
	for _, c := range []struct{ n, size, want int }{
		{0, 0, 1}, {0, 1400, 1}, {100, 0, 1}, {1400, 1400, 1}, {1401, 1400, 2}, {2800, 1400, 2}, {64 * 1400, 1400, 64},
	} {
		if got := datagrams(c.n, c.size); got != c.want {
			t.Errorf("datagrams(%d, %d) = %d, want %d", c.n, c.size, got, c.want)
		}
	}
}

// TestUDPToTunStopsCleanlyWhileWriting: a stop that reaches the receive
// loop while it writes to the device ends it without an error (it used to
// come back as "i/o timeout" and fail the datapath).
func TestUDPToTunStopsCleanlyWhileWriting(t *testing.T) {
	x := newFastFixture(t, true, false, false)
	done := make(chan error, 1)
	go func() { done <- x.w.udpToTun() }()
	// Only the device is told to stop: the loop still receives, and the
	// stop meets it at the write.
	x.w.q.dev.file.SetDeadline(immediate)
	if _, err := x.peerConn.WriteToUDPAddrPort(inner("10.10.2.9", "10.10.1.5", 100, 0), x.addr()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the loop ended with %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the loop did not stop")
	}
}
