package linkem

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Root tests: a small copy of the lab's underlay in throwaway namespaces,
// ol-lkm-<pid>-<n>-{ul,h1,h2}: two "hosts" whose eth0 (10.0.0.1, 10.0.0.2)
// are veths to ports on a bridge in the underlay namespace, as in a lab.

type testNet struct {
	ul, h1, h2 string // namespaces
	bridge     string
	p1, p2     string // the hosts' ports on the bridge
}

var hostIP = map[int]string{1: "10.0.0.1", 2: "10.0.0.2"}

// newTestNet builds the namespaces and removes them when the test ends,
// whatever way it ends.
func newTestNet(t testing.TB) *testNet {
	t.Helper()
	nstest.SkipUnlessRoot(t, "creates network namespaces")
	n := &testNet{ul: nstest.Netns(t, "lkm-ul"), h1: nstest.Netns(t, "lkm-h1"), h2: nstest.Netns(t, "lkm-h2"), bridge: "br0"}
	// Port names as long as the lab's (ol-<lab>-hN): the pair's names must
	// not depend on them fitting in 15 characters.
	n.p1, n.p2 = "ol-lkmtest-h1", "ol-lkmtest-h2"
	n.do(t, n.ul, func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.bridge}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge: %w", err)
		}
		return h.LinkSetUp(br)
	})
	for i, host := range map[int]string{1: n.h1, 2: n.h2} {
		port := []string{"", n.p1, n.p2}[i]
		hns, err := nsutil.Handle(host)
		if err != nil {
			t.Fatal(err)
		}
		n.do(t, n.ul, func(h *netlink.Handle) error {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, MTU: 1500}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(hns))}
			if err := h.LinkAdd(v); err != nil {
				return fmt.Errorf("create veth %s: %w", port, err)
			}
			br, err := h.LinkByName(n.bridge)
			if err != nil {
				return err
			}
			l, err := h.LinkByName(port)
			if err != nil {
				return err
			}
			if err := h.LinkSetMaster(l, br); err != nil {
				return err
			}
			return h.LinkSetUp(l)
		})
		hns.Close()
		n.do(t, host, func(h *netlink.Handle) error {
			l, err := h.LinkByName("eth0")
			if err != nil {
				return err
			}
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(hostIP[i]), Mask: net.CIDRMask(24, 32)}}); err != nil {
				return err
			}
			return h.LinkSetUp(l)
		})
	}
	// Ready when h1 reaches h2 (the first ARP request may go out before
	// the bridge forwards; its retry comes a second later).
	for try := 0; ; try++ {
		err := inNS(context.Background(), n.h1, "ping", "-n", "-c", "1", "-W", "1", hostIP[2]).Run()
		if err == nil {
			break
		}
		if try == 10 {
			t.Fatalf("h1 cannot reach h2: %v", err)
		}
	}
	return n
}

// do runs fn with a netlink handle in namespace ns.
func (n *testNet) do(t testing.TB, ns string, fn func(*netlink.Handle) error) {
	t.Helper()
	nh, err := nsutil.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	h, err := netlink.NewHandleAt(nh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := fn(h); err != nil {
		t.Fatalf("%s: %v", ns, err)
	}
}

// links lists the underlay namespace's links by name with their master's
// name ("" for none).
func (n *testNet) links(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	n.do(t, n.ul, func(h *netlink.Handle) error {
		ls, err := h.LinkList()
		if err != nil {
			return err
		}
		byIndex := map[int]string{}
		for _, l := range ls {
			byIndex[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range ls {
			out[l.Attrs().Name] = byIndex[l.Attrs().MasterIndex]
		}
		return nil
	})
	return out
}

func (n *testNet) protinfo(t testing.TB, name string) netlink.Protinfo {
	t.Helper()
	var p netlink.Protinfo
	n.do(t, n.ul, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		p, err = h.LinkGetProtinfo(l)
		return err
	})
	return p
}

// relay inserts a relay on h1's port with cfg's impairments and runs it
// until the test ends (or stop is called); stop also removes the plumbing.
type runningRelay struct {
	r    *Relay
	done chan error
	stop func() error
}

func (n *testNet) startRelay(t testing.TB, cfg Config) *runningRelay {
	t.Helper()
	ctx := context.Background()
	l, err := Insert(ctx, n.ul, n.bridge, n.p1)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config()
	c.Seed, c.Out, c.In, c.Overlay, c.Control = cfg.Seed, cfg.Out, cfg.In, cfg.Overlay, cfg.Control
	r, err := New(c)
	if err != nil {
		Remove(ctx, n.ul, n.bridge, n.p1)
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	rr := &runningRelay{r: r, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(rctx) }()
	stopped := false
	rr.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		var err error
		select {
		case err = <-rr.done:
		case <-time.After(10 * time.Second):
			err = errors.New("relay did not stop within 10s")
		}
		if rerr := Remove(ctx, n.ul, n.bridge, n.p1); err == nil {
			err = rerr
		}
		return err
	}
	t.Cleanup(func() {
		if err := rr.stop(); err != nil {
			t.Errorf("stop relay: %v", err)
		}
	})
	return rr
}

// inNS runs a command inside namespace ns.
func inNS(ctx context.Context, ns string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

var pingLine = regexp.MustCompile(`icmp_seq=(\d+) .*time=([0-9.]+) ms`)

// ping runs the standard ping from h1 to h2 and returns the round trips by
// sequence number.
func (n *testNet) ping(t testing.TB, count int, interval string) map[int]time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := inNS(ctx, n.h1, "ping", "-n", "-c", strconv.Itoa(count), "-i", interval, "-W", "2", hostIP[2]).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) { // ping exits 1 when replies are missing
		t.Fatalf("ping: %v\n%s", err, out)
	}
	rtts := map[int]time.Duration{}
	for _, m := range pingLine.FindAllStringSubmatch(string(out), -1) {
		seq, _ := strconv.Atoi(m[1])
		ms, _ := strconv.ParseFloat(m[2], 64)
		if _, dup := rtts[seq]; !dup {
			rtts[seq] = time.Duration(ms * float64(time.Millisecond))
		}
	}
	return rtts
}

func minRTT(rtts map[int]time.Duration) time.Duration {
	m := time.Duration(-1)
	for _, d := range rtts {
		if m < 0 || d < m {
			m = d
		}
	}
	return m
}

func TestInsertRemove(t *testing.T) {
	n := newTestNet(t)
	ctx := context.Background()
	before := n.links(t)
	// Flags that differ from a new port's defaults must survive the swap.
	n.do(t, n.ul, func(h *netlink.Handle) error {
		p, err := h.LinkByName(n.p1)
		if err != nil {
			return err
		}
		if err := h.LinkSetHairpin(p, true); err != nil {
			return err
		}
		return h.LinkSetLearning(p, false)
	})
	l, err := Insert(ctx, n.ul, n.bridge, n.p1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Insert(ctx, n.ul, n.bridge, n.p1)
	if err != nil || again != l {
		t.Fatalf("second Insert: %+v, %v; want %+v", again, err, l)
	}
	during := n.links(t)
	if during[n.p1] != "" || during[l.BridgePort] != n.bridge || during[l.BridgeIf] != "" {
		t.Fatalf("after Insert: %s on %q, %s on %q, %s on %q", n.p1, during[n.p1], l.BridgePort, during[l.BridgePort], l.BridgeIf, during[l.BridgeIf])
	}
	if len(l.BridgePort) > 15 || len(l.BridgeIf) > 15 {
		t.Errorf("pair names %q, %q exceed 15 characters", l.BridgePort, l.BridgeIf)
	}
	if f := n.protinfo(t, l.BridgePort); !f.Hairpin || f.Learning {
		t.Errorf("the pair's bridge port did not get the port's flags: %s", f.String())
	}
	if ok, err := Inserted(ctx, n.ul, n.bridge, n.p1); !ok || err != nil {
		t.Errorf("Inserted: %v, %v", ok, err)
	}
	// The link works with a relay and no impairment.
	rr := n.startRelay(t, Config{})
	if rtts := n.ping(t, 3, "0.2"); len(rtts) != 3 {
		t.Fatalf("through an idle relay: %d of 3 pings answered", len(rtts))
	}
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, n.ul, n.bridge, n.p1); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if after := n.links(t); !mapsEqual(before, after) {
		t.Fatalf("links after Remove %v, before Insert %v", after, before)
	}
	if f := n.protinfo(t, n.p1); !f.Hairpin || f.Learning {
		t.Errorf("the port came back without its flags: %s", f.String())
	}
	if ok, _ := Inserted(ctx, n.ul, n.bridge, n.p1); ok {
		t.Error("Inserted after Remove")
	}
	if rtts := n.ping(t, 3, "0.2"); len(rtts) != 3 {
		t.Fatalf("after Remove: %d of 3 pings answered", len(rtts))
	}
	for _, bad := range []struct{ ns, br, port string }{{n.ul, "nobridge", n.p1}, {n.ul, n.bridge, "noport"}, {n.ul, n.p2, n.p1}, {"ol-lkm-no-such-ns", n.bridge, n.p1}} {
		if _, err := Insert(ctx, bad.ns, bad.br, bad.port); err == nil {
			t.Errorf("Insert(%q, %q, %q): no error", bad.ns, bad.br, bad.port)
		}
	}
	if after := n.links(t); !mapsEqual(before, after) {
		t.Fatalf("failed Inserts left links: %v, before %v", after, before)
	}
}

// Whichever step of Insert fails, nothing it made is left and the port is
// back on the bridge with its flags.
func TestInsertFailureLeavesNothing(t *testing.T) {
	n := newTestNet(t)
	ctx := context.Background()
	n.do(t, n.ul, func(h *netlink.Handle) error {
		p, err := h.LinkByName(n.p1)
		if err != nil {
			return err
		}
		return h.LinkSetHairpin(p, true)
	})
	before := n.links(t)
	for _, step := range insertSteps {
		_, err := insertWith(ctx, n.ul, n.bridge, n.p1, func(s string) error {
			if s == step {
				return fmt.Errorf("injected failure after %q", s)
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("failure after %q: Insert returned %v", step, err)
		}
		if after := n.links(t); !mapsEqual(before, after) {
			t.Fatalf("failure after %q left links %v (before: %v)", step, after, before)
		}
		if f := n.protinfo(t, n.p1); !f.Hairpin {
			t.Fatalf("failure after %q: the port lost its hairpin flag", step)
		}
	}
	if rtts := n.ping(t, 2, "0.2"); len(rtts) != 2 {
		t.Fatalf("after the failed Inserts: %d of 2 pings answered", len(rtts))
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDelayRaisesRTT(t *testing.T) {
	n := newTestNet(t)
	base := minRTT(n.ping(t, 3, "0.2"))
	if base < 0 || base > 10*time.Millisecond {
		t.Fatalf("baseline RTT %s", base)
	}
	before := n.links(t)
	delay := Impairment{Delay: Duration(20 * time.Millisecond)}
	rr := n.startRelay(t, Config{Out: delay, In: delay})
	rtts := n.ping(t, 5, "0.2")
	if len(rtts) != 5 {
		t.Fatalf("%d of 5 pings answered", len(rtts))
	}
	if m := minRTT(rtts); m < 30*time.Millisecond {
		t.Fatalf("delay 20ms each way: minimum RTT %s, want at least 30ms (baseline %s)", m, base)
	}
	t.Logf("RTT baseline %s, with delay 20ms both ways %s (minimum of 5)", base, minRTT(rtts))
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	if m := minRTT(n.ping(t, 3, "0.2")); m < 0 || m > 10*time.Millisecond {
		t.Fatalf("after clearing: RTT %s", m)
	}
	if after := n.links(t); !mapsEqual(before, after) {
		t.Fatalf("after clearing: links %v, before %v", after, before)
	}
}

// lostSeqs pings 100 times through a fresh relay losing 30% both ways with
// seed 7 and returns the sequence numbers without a reply.
func lostSeqs(t *testing.T, n *testNet) []int {
	loss := Impairment{Loss: 30}
	rr := n.startRelay(t, Config{Seed: 7, Out: loss, In: loss})
	rtts := n.ping(t, 100, "0.01")
	st := rr.r.Stats()
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	var lost []int
	for seq := 1; seq <= 100; seq++ {
		if _, ok := rtts[seq]; !ok {
			lost = append(lost, seq)
		}
	}
	if st.Out.Matched != 100 || st.Out.DroppedLoss+st.In.DroppedLoss != uint64(len(lost)) {
		t.Errorf("counters: out matched %d, dropped out %d + in %d, but %d pings lost", st.Out.Matched, st.Out.DroppedLoss, st.In.DroppedLoss, len(lost))
	}
	return lost
}

func TestLossSeededPing(t *testing.T) {
	n := newTestNet(t)
	n.ping(t, 1, "0.2") // resolve ARP first (it is never impaired anyway)
	a := lostSeqs(t, n)
	b := lostSeqs(t, n)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 7, two runs lost different pings:\n%v\n%v", a, b)
	}
	// 30% each way loses about half the round trips.
	if len(a) < 30 || len(a) > 70 {
		t.Fatalf("%d of 100 round trips lost, want about 51", len(a))
	}
	t.Logf("lost in both runs: %v", a)
}

// transfer sends size bytes of pseudo-random data from h1 to h2 over TCP
// (to addr) and reports whether h2 received them exactly.
func (n *testNet) transfer(t testing.TB, listenNS string, dialNS string, addr string, size int64) (time.Duration, bool) {
	t.Helper()
	var ln net.Listener
	if err := nsutil.DoNamed(listenNS, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nsutil.DialContext(dialNS)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	src := io.LimitReader(rand.NewChaCha8([32]byte{1, 2, 3}), size)
	h := sha256.New()
	start := time.Now()
	if _, err := io.Copy(c, io.TeeReader(src, h)); err != nil {
		t.Fatalf("send: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	sum := <-got
	elapsed := time.Since(start)
	c.Close()
	return elapsed, sum == [32]byte(h.Sum(nil))
}

func TestTCPByteExact(t *testing.T) {
	n := newTestNet(t)
	jitter := Impairment{Delay: Duration(5 * time.Millisecond), Jitter: Duration(3 * time.Millisecond)}
	rr := n.startRelay(t, Config{Seed: 1, Out: jitter, In: jitter})
	if _, ok := n.transfer(t, n.h2, n.h1, hostIP[2]+":0", 16<<20); !ok {
		t.Fatal("delay+jitter: the 16 MiB received differ from those sent")
	}
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}

	// Every per-packet impairment at once: GSO frames are cut, corrupted
	// segments reach the receiver and fail its checksum, TCP repairs all.
	csumErrs := func() int { return tcpInCsumErrors(t, n.h2) }
	before := csumErrs()
	rough := Impairment{Delay: Duration(2 * time.Millisecond), Loss: 1, Duplicate: 1, Reorder: 5, Corrupt: 1}
	rr = n.startRelay(t, Config{Seed: 2, Out: rough, In: rough})
	if _, ok := n.transfer(t, n.h2, n.h1, hostIP[2]+":0", 8<<20); !ok {
		t.Fatal("loss+duplicate+reorder+corrupt: the 8 MiB received differ from those sent")
	}
	st := rr.r.Stats()
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	o := st.Out
	if o.Segmented == 0 || o.DroppedLoss == 0 || o.Duplicated == 0 || o.Reordered == 0 || o.Corrupted == 0 {
		t.Errorf("out counters show an impairment missing: %+v", o)
	}
	if got := csumErrs() - before; got == 0 || got > int(o.Corrupted+st.In.Corrupted) {
		t.Errorf("receiver counted %d TCP checksum errors for %d corrupted packets", got, o.Corrupted+st.In.Corrupted)
	}
	t.Logf("out: %+v", o)
}

// tcpInCsumErrors reads the TCP InCsumErrors counter of namespace ns.
func tcpInCsumErrors(t testing.TB, ns string) int {
	t.Helper()
	out, err := inNS(context.Background(), ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		if i := slices.Index(names, "InCsumErrors"); i > 0 {
			v, _ := strconv.Atoi(f[i])
			return v
		}
	}
	t.Fatalf("no Tcp InCsumErrors in %s's /proc/net/snmp", ns)
	return 0
}

// udpEcho answers datagrams on addr inside ns until the test ends.
func udpEcho(t testing.TB, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := nsutil.DoNamed(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	}()
}

// udpRTTs sends count probes from ns to addr, one at a time, and returns the
// round trips (lost probes left out).
func udpRTTs(t testing.TB, ns, addr string, count int) []time.Duration {
	t.Helper()
	c, err := nsutil.DialContext(ns)(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rtts []time.Duration
	buf := make([]byte, 64)
	for i := range count {
		msg := []byte(fmt.Sprintf("probe %d", i))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			k, err := c.Read(buf)
			if err != nil {
				break
			}
			if string(buf[:k]) == string(msg) {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	return rtts
}

func TestMatchOverlayOnly(t *testing.T) {
	n := newTestNet(t)
	udpEcho(t, n.h2, hostIP[2]+":8472")
	udpEcho(t, n.h2, hostIP[2]+":9000")
	delay := Impairment{Match: MatchOverlay, Delay: Duration(50 * time.Millisecond)}
	n.startRelay(t, Config{Out: delay, In: delay, Overlay: OverlayMatch{UDPPorts: []uint16{8472}}})
	if m := minRTT(n.ping(t, 3, "0.2")); m < 0 || m > 20*time.Millisecond {
		t.Errorf("ping (not overlay traffic): RTT %s, want it untouched", m)
	}
	other := udpRTTs(t, n.h1, hostIP[2]+":9000", 3)
	if len(other) != 3 || slices.Max(other) > 20*time.Millisecond {
		t.Errorf("UDP to port 9000 (not overlay): round trips %v, want 3 untouched", other)
	}
	overlay := udpRTTs(t, n.h1, hostIP[2]+":8472", 3)
	if len(overlay) != 3 || slices.Min(overlay) < 80*time.Millisecond {
		t.Errorf("UDP to 8472 (overlay): round trips %v, want 3 of at least 80ms", overlay)
	}
}

// A vxlan backend's TCP frames cross the veth as tunnelled GSO frames, which
// a packet socket cannot send back whole: the relay cuts them.
func TestVXLANThroughRelay(t *testing.T) {
	n := newTestNet(t)
	for i, ns := range map[int]string{1: n.h1, 2: n.h2} {
		n.do(t, ns, func(h *netlink.Handle) error {
			eth0, err := h.LinkByName("eth0")
			if err != nil {
				return err
			}
			vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 1, VtepDevIndex: eth0.Attrs().Index,
				SrcAddr: net.ParseIP(hostIP[i]), Group: net.ParseIP(hostIP[3-i]), Port: 8472}
			if err := h.LinkAdd(vx); err != nil {
				return fmt.Errorf("vxlan: %w", err)
			}
			if err := h.AddrAdd(vx, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 1, 0, byte(i)), Mask: net.CIDRMask(24, 32)}}); err != nil {
				return err
			}
			return h.LinkSetUp(vx)
		})
	}
	delay := Impairment{Delay: Duration(2 * time.Millisecond)}
	rr := n.startRelay(t, Config{Out: delay, In: delay})
	if _, ok := n.transfer(t, n.h2, n.h1, "10.1.0.2:0", 8<<20); !ok {
		t.Fatal("TCP over VXLAN through the relay: received bytes differ")
	}
	st := rr.r.Stats()
	if st.Out.Segmented == 0 || st.Out.Errors != 0 {
		t.Errorf("out counters: %+v (want tunnelled GSO frames cut, no errors)", st.Out)
	}
}

// percentile returns the p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p/100*float64(len(s))))]
}

// Run, the relay process's body: the stats file is written at start, on
// SIGUSR1 and at the end; an interface that disappears ends the relay.
func TestRunStatsFile(t *testing.T) {
	n := newTestNet(t)
	ctx := context.Background()
	l, err := Insert(ctx, n.ul, n.bridge, n.p1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Remove(ctx, n.ul, n.bridge, n.p1) })
	cfg := l.Config()
	cfg.Seed = 5
	cfg.Out = Impairment{Delay: Duration(time.Millisecond)}
	cfg.StatsFile = filepath.Join(t.TempDir(), "stats.json")
	cfg.StatsInterval = -1 // only on demand
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(rctx, cfg) }()
	defer cancel()
	waitStats := func(what string, ok func(Stats) bool) Stats {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			s, err := ReadStats(cfg.StatsFile)
			if err == nil && ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("stats file never showed %s (last: %+v, %v)", what, s, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStats("the first write", func(s Stats) bool { return s.Seed == 5 })
	if rtts := n.ping(t, 4, "0.2"); len(rtts) != 4 {
		t.Fatalf("%d of 4 pings answered", len(rtts))
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	s := waitStats("the pings after SIGUSR1", func(s Stats) bool { return s.Out.Matched >= 4 && s.In.PacketsOut >= 4 })
	if s.Out.PacketsIn != s.Out.PacketsOut || s.Out.BytesIn != s.Out.BytesOut {
		t.Errorf("out counters do not balance: %+v", s.Out)
	}
	// The pair's free end goes away under the running relay.
	n.do(t, n.ul, func(h *netlink.Handle) error {
		b, err := h.LinkByName(l.BridgePort)
		if err != nil {
			return err
		}
		return h.LinkDel(b)
	})
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("relay ended with %v, want an error saying its interface is gone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay kept running after its interface was deleted")
	}
}

// The relay takes only what arrives on each wire: a frame something else in
// the bridge's namespace sends out of the host's port goes to the host, not
// back through the relay to the bridge.
func TestRelayIgnoresOutgoing(t *testing.T) {
	n := newTestNet(t)
	// Only the test's frames (UDP port 5000) are in the class, so that
	// the hosts' own background traffic does not count.
	only := Impairment{Match: MatchOverlay}
	rr := n.startRelay(t, Config{Out: only, In: only, Overlay: OverlayMatch{UDPPorts: []uint16{5000}}})
	var s *packetSock
	if err := nsutil.DoNamed(n.ul, func() error {
		var err error
		s, err = openPacketSock(n.p1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	frame := udpFrame(t, "10.0.0.9", "10.0.0.1", 5000, 5000, make([]byte, 32))
	for range 10 {
		if err := s.send([][]byte{withVnet(vnetHdr{}, frame)}, func(int) {}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if st := rr.r.Stats(); st.Out.Matched != 0 || st.In.Matched != 0 {
		t.Fatalf("frames sent out of the port were relayed: %d out, %d in", st.Out.Matched, st.In.Matched)
	}
}

// The lab's link-down fault takes the host's port down and up: the relay
// sees ENETDOWN on the way and must carry on afterwards.
func TestRelaySurvivesLinkFlap(t *testing.T) {
	n := newTestNet(t)
	delay := Impairment{Delay: Duration(time.Millisecond)}
	rr := n.startRelay(t, Config{Out: delay, In: delay})
	setPort := func(up bool) {
		n.do(t, n.ul, func(h *netlink.Handle) error {
			l, err := h.LinkByName(n.p1)
			if err != nil {
				return err
			}
			if up {
				return h.LinkSetUp(l)
			}
			return h.LinkSetDown(l)
		})
	}
	setPort(false)
	n.ping(t, 2, "0.2") // into the void
	setPort(true)
	deadline := time.Now().Add(10 * time.Second)
	for len(n.ping(t, 1, "0.2")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no ping through the relay after the port came back up")
		}
	}
	select {
	case err := <-rr.done:
		t.Fatalf("relay ended at the link flap: %v", err)
	default:
	}
}

// udpGSOSend sends count writes of segs*1400 bytes from ns to addr with
// UDP_SEGMENT (as the udp backend does): each leaves as one UDP GSO frame.
func udpGSOSend(t *testing.T, ns, addr string, count, segs int) {
	t.Helper()
	c, err := nsutil.DialContext(ns)(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, 1400)
	}); err != nil || serr != nil {
		t.Fatalf("UDP_SEGMENT: %v %v", err, serr)
	}
	buf := make([]byte, segs*1400)
	for i := range count {
		for k := range segs {
			buf[k*1400] = byte(i)
		}
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

// udpCount counts datagrams arriving on addr in ns until none has come for
// a second; it returns the channel that will carry the count.
func udpCount(t *testing.T, ns, addr string) <-chan int {
	t.Helper()
	var pc net.PacketConn
	if err := nsutil.DoNamed(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pc.(*net.UDPConn).SetReadBuffer(8 << 20)
	got := make(chan int, 1)
	go func() {
		defer pc.Close()
		n := 0
		buf := make([]byte, 65536)
		for {
			pc.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				got <- n
				return
			}
			if k == 1400 {
				n++
			}
		}
	}()
	return got
}

func TestUDPGSOThroughRelay(t *testing.T) {
	n := newTestNet(t)
	// Delay only: the GSO frames cross whole.
	delay := Impairment{Delay: Duration(time.Millisecond)}
	rr := n.startRelay(t, Config{Out: delay, In: delay})
	got := udpCount(t, n.h2, hostIP[2]+":9100")
	udpGSOSend(t, n.h1, hostIP[2]+":9100", 50, 10)
	if c := <-got; c != 500 {
		t.Errorf("delay only: %d of 500 datagrams arrived", c)
	}
	st := rr.r.Stats()
	if st.Out.Segmented != 0 || st.Out.Matched < 500 || st.Out.PacketsOut < 500 {
		t.Errorf("delay only: out counters %+v (want 500 datagrams, none cut here)", st.Out)
	}
	if err := rr.stop(); err != nil {
		t.Fatal(err)
	}
	// Loss: cut into datagrams, each decided on its own.
	only := Impairment{Match: MatchOverlay, Loss: 20}
	rr = n.startRelay(t, Config{Seed: 3, Out: only, Overlay: OverlayMatch{UDPPorts: []uint16{9101}}})
	got = udpCount(t, n.h2, hostIP[2]+":9101")
	udpGSOSend(t, n.h1, hostIP[2]+":9101", 50, 10)
	c := <-got
	st = rr.r.Stats()
	if st.Out.Matched != 500 || st.Out.Segmented != 50 || uint64(c) != 500-st.Out.DroppedLoss {
		t.Errorf("loss 20%%: %d datagrams arrived; out counters %+v (want 500 matched, 50 frames cut, arrivals = 500 - lost)", c, st.Out)
	}
	if st.Out.DroppedLoss < 50 || st.Out.DroppedLoss > 150 {
		t.Errorf("loss 20%% dropped %d of 500", st.Out.DroppedLoss)
	}
}
