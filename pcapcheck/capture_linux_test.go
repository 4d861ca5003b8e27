package pcapcheck

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
)

func TestStartUnknownNamespace(t *testing.T) {
	_, err := Start(t.Context(), "ol-pcaptest-does-not-exist", "eth0")
	if err == nil {
		t.Fatal("Start in a missing namespace succeeded")
	}
}

// vethPair links two namespaces directly; nothing is created in the root
// namespace. The pair disappears with the namespaces.
func vethPair(t *testing.T, nsA, nsB netns.NsHandle, nameA, nameB, addrA, addrB string) {
	t.Helper()
	hA, err := netlink.NewHandleAt(nsA)
	if err != nil {
		t.Fatal(err)
	}
	defer hA.Close()
	hB, err := netlink.NewHandleAt(nsB)
	if err != nil {
		t.Fatal(err)
	}
	defer hB.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: nameA},
		PeerName:      nameB,
		PeerNamespace: netlink.NsFd(int(nsB)),
	}
	if err := hA.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", nameA, nameB, err)
	}
	for _, side := range []struct {
		h          *netlink.Handle
		name, addr string
	}{{hA, nameA, addrA}, {hB, nameB, addrB}} {
		link, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		a, err := netlink.ParseAddr(side.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := side.h.AddrAdd(link, a); err != nil {
			t.Fatalf("address %s on %s: %v", side.addr, side.name, err)
		}
		if err := side.h.LinkSetUp(link); err != nil {
			t.Fatalf("up %s: %v", side.name, err)
		}
	}
}

func listenUDPIn(t *testing.T, nsName, addr string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := nsutil.DoNamed(nsName, func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		conn = c
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, nsName, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestCaptureRealVeth runs the udp backend's wire format over a real veth
// between two throwaway namespaces: B sends flannel-udp-shaped datagrams
// (bare inner IPv4 echo requests, port 8285 both sides) to A, A answers in
// kind, and a capture on A's end must see both directions and pass Check.
func TestCaptureRealVeth(t *testing.T) {
	nameA, nameB := nstest.Netns(t, "pcap-a"), nstest.Netns(t, "pcap-b")
	nsA, nsB := nstest.NsHandle(t, nameA), nstest.NsHandle(t, nameB)
	vethPair(t, nsA, nsB, "pt0", "pt1", "192.168.99.1/24", "192.168.99.2/24")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, nameA, "pt0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop()
		}
	}()

	hostA := netip.MustParseAddr("192.168.99.1")
	hostB := netip.MustParseAddr("192.168.99.2")
	podA := netip.MustParseAddr("10.10.1.5")
	podB := netip.MustParseAddr("10.10.2.5")
	connA := listenUDPIn(t, nameA, "192.168.99.1:8285")
	connB := listenUDPIn(t, nameB, "192.168.99.2:8285")
	deadline := time.Now().Add(5 * time.Second)
	connA.SetDeadline(deadline)
	connB.SetDeadline(deadline)

	const n = 5
	buf := make([]byte, 2048)
	for i := range n {
		toA := net.UDPAddrFromAddrPort(netip.AddrPortFrom(hostA, 8285))
		if _, err := connB.WriteToUDP(echoIPv4(t, podB, podA, uint16(i)), toA); err != nil {
			t.Fatalf("send to A: %v", err)
		}
		if _, from, err := connA.ReadFromUDP(buf); err != nil {
			t.Fatalf("A receive %d: %v", i, err)
		} else if _, err := connA.WriteToUDP(echoIPv4(t, podA, podB, uint16(i)), from); err != nil {
			t.Fatalf("A reply: %v", err)
		}
		if _, _, err := connB.ReadFromUDP(buf); err != nil {
			t.Fatalf("B receive %d: %v", i, err)
		}
	}

	// Every datagram reached a socket above, and packet taps run before the
	// IP stack: all frames are queued on the capture socket by now.
	frames, err := c.Stop()
	stopped = true
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	t.Logf("captured %d frames, stats %+v", len(frames), st)
	if st.Frames != len(frames) || st.KernelDrops != 0 || st.Truncated != 0 || st.OverLimit != 0 {
		t.Errorf("stats %+v with %d frames", st, len(frames))
	}
	var in, out int
	for _, f := range frames {
		if f.Outgoing {
			out++
		} else {
			in++
		}
		if f.Time.Before(start.Add(-time.Second)) || f.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("frame timestamp %v outside the test's lifetime", f.Time)
		}
	}
	if in < n || out < n {
		t.Errorf("frames in/out = %d/%d, want at least %d each", in, out, n)
	}

	e := Encap{Kind: KindUDP, Network: netip.MustParsePrefix("10.10.0.0/16")}
	pkts := Decode(frames, e)
	var encap int
	for _, p := range pkts {
		if p.Encapsulated == "" {
			continue
		}
		encap++
		if wantOut := p.OuterSrc == hostA; p.Outgoing != wantOut {
			t.Errorf("direction wrong: %v", p)
		}
	}
	if encap != 2*n {
		t.Errorf("decoded %d encapsulated packets, want %d", encap, 2*n)
	}
	r := Check(pkts, Expect{Encap: e, Echoes: []Flow{
		{OuterSrc: hostB, OuterDst: hostA, InnerSrc: podB, InnerDst: podA},
		{OuterSrc: hostA, OuterDst: hostB, InnerSrc: podA, InnerDst: podB},
	}})
	t.Log("\n" + r.Summary)
	if !r.OK {
		t.Error("check failed on a clean capture")
	}
	// The same bytes seen as vxlan must fail: nothing on 8472.
	if r := Check(Decode(frames, Encap{Kind: KindVXLAN, VNI: 1, Network: e.Network}),
		Expect{Encap: Encap{Kind: KindVXLAN, VNI: 1, Network: e.Network}, Echoes: []Flow{{InnerSrc: podB, InnerDst: podA}}}); r.OK {
		t.Errorf("udp capture passed as vxlan:\n%s", r.Summary)
	}

	path := filepath.Join(t.TempDir(), "veth.pcap")
	if err := WritePcap(path, frames); err != nil {
		t.Fatal(err)
	}
	back, err := ReadPcap(path)
	if err != nil || len(back) != len(frames) {
		t.Fatalf("pcap round trip: %v, %d frames of %d", err, len(back), len(frames))
	}
	if _, err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestCaptureLoopback checks on lo, where a frame can exceed SnapLen, that
// oversized frames are cut and counted, and that a cancelled context ends the
// reader promptly while Stop still returns what was captured.
func TestCaptureLoopback(t *testing.T) {
	name := nstest.Netns(t, "pcap-lo") // lo is up

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c, err := Start(ctx, name, "lo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	// The largest UDP datagram: IPv4 total length 65535, frame 65549 bytes.
	conn := listenUDPIn(t, name, "127.0.0.1:0")
	const payload = 65535 - 20 - 8
	if _, err := conn.WriteToUDP(make([]byte, payload), conn.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatalf("send big datagram: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadFromUDP(make([]byte, 1<<16)); err != nil {
		t.Fatalf("receive big datagram: %v", err)
	}
	// lo shows every frame twice (sent and received); wait for both.
	for deadline := time.Now().Add(5 * time.Second); c.Stats().Frames < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("frames never arrived: %+v", c.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
		t.Fatal("reader still running 2s after cancel")
	}
	frames, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Truncated != 2 {
		t.Errorf("stats %+v, want 2 truncated frames", st)
	}
	var dirs [2]int
	for _, f := range frames {
		if len(f.Data) != SnapLen || f.Length != 14+65535 {
			t.Errorf("frame kept %d of %d bytes, want %d of %d", len(f.Data), f.Length, SnapLen, 14+65535)
		}
		if f.Outgoing {
			dirs[1]++
		} else {
			dirs[0]++
		}
	}
	if dirs != [2]int{1, 1} {
		t.Errorf("in/out = %v, want one each", dirs)
	}
	if pkts := Decode(frames, Encap{Kind: KindUDP, Network: netip.MustParsePrefix("10.10.0.0/16")}); len(pkts) != 2 ||
		pkts[0].OuterDst != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("decoded %v", pkts)
	}
	if _, err := Start(t.Context(), name, "nosuchif0"); err == nil {
		t.Error("Start on a missing interface succeeded")
	}
}
