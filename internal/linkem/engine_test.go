package linkem

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// capture stands in for the far socket: it keeps what the direction sends.
type capture struct{ frames [][]byte }

func (c *capture) send(frames [][]byte, _ func(int)) error {
	for _, f := range frames {
		c.frames = append(c.frames, append([]byte(nil), f...))
	}
	return nil
}

// testDirection is a direction whose output is captured and whose clock is
// the caller's.
func testDirection(seed uint64, imp Impairment, cfg Config) (*direction, *capture, *int64) {
	c := &capture{}
	now := new(int64)
	cfg.Seed = seed
	d := newDirection(DirOut, nil, c, imp, cfg, newBufPool(), func() int64 { return *now })
	return d, c, now
}

// feed hands frame (with virtio-net header h) to d as a read would.
func feed(d *direction, h vnetHdr, f []byte) {
	msg := withVnet(h, f)
	p := d.pool.get(len(msg))
	copy(p.buf, msg)
	d.handle(p)
}

// icmpSeq is the echo sequence number of a captured frame.
func icmpSeq(t *testing.T, msg []byte) uint16 {
	pk := gopacket.NewPacket(msg[vnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	ic, ok := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok {
		t.Fatalf("not an ICMP frame: %x", msg)
	}
	return ic.Seq
}

// survivors runs n echo requests through a direction losing loss% with seed
// and returns the sequence numbers that got through.
func survivors(t *testing.T, seed uint64, loss float64, n int) []uint16 {
	d, c, _ := testDirection(seed, Impairment{Loss: loss}, Config{})
	for i := range n {
		feed(d, vnetHdr{}, icmpFrame(t, "192.168.77.1", "192.168.77.2", uint16(i)))
	}
	var got []uint16
	for _, m := range c.frames {
		got = append(got, icmpSeq(t, m))
	}
	if s := d.stats.snapshot(); s.PacketsIn != uint64(n) || s.PacketsOut+s.DroppedLoss != uint64(n) {
		t.Fatalf("counters: in %d, out %d, lost %d for %d packets", s.PacketsIn, s.PacketsOut, s.DroppedLoss, n)
	}
	return got
}

func TestLossIsSeeded(t *testing.T) {
	a := survivors(t, 7, 30, 2000)
	b := survivors(t, 7, 30, 2000)
	if !slices.Equal(a, b) {
		t.Fatal("seed 7 twice: different packets dropped")
	}
	if c := survivors(t, 8, 30, 2000); slices.Equal(a, c) {
		t.Fatal("seeds 7 and 8 dropped the same packets")
	}
	// The interleaving of unmatched packets does not move the decisions:
	// ARP and neighbour discovery must not shift a rerun's drop pattern.
	d, c, _ := testDirection(7, Impairment{Loss: 30}, Config{})
	arp := serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: macA,
		SourceProtAddress: []byte{192, 168, 77, 1}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{192, 168, 77, 2}})
	for i := range 2000 {
		if i%3 == 0 {
			feed(d, vnetHdr{}, arp)
		}
		feed(d, vnetHdr{}, icmpFrame(t, "192.168.77.1", "192.168.77.2", uint16(i)))
	}
	var got []uint16
	for _, m := range c.frames {
		if binary.BigEndian.Uint16(m[vnetHdrLen+12:]) == 0x0806 {
			continue
		}
		got = append(got, icmpSeq(t, m))
	}
	if !slices.Equal(a, got) {
		t.Fatal("ARP frames in between changed which echo requests were dropped")
	}
}

func TestDecisionRates(t *testing.T) {
	const n = 100000
	imp := Impairment{Loss: 30, Duplicate: 5, Corrupt: 1, Reorder: 10, Delay: Duration(time.Millisecond), Jitter: Duration(2 * time.Millisecond)}
	dc := newDice(42, DirIn, imp)
	var lost, dup, corrupt, reorder int
	var jsum float64
	for range n {
		v := dc.roll(100)
		lost += b2i(v.drop)
		dup += b2i(v.duplicate)
		reorder += b2i(v.reorder)
		if v.corruptAt >= 0 {
			corrupt++
			if v.corruptAt >= 100 || v.corruptBit > 7 {
				t.Fatalf("corruption at byte %d bit %d of a 100-byte packet", v.corruptAt, v.corruptBit)
			}
		}
		if v.jitter < -2*time.Millisecond || v.jitter > 2*time.Millisecond {
			t.Fatalf("jitter %s outside ±2ms", v.jitter)
		}
		jsum += v.jitter.Seconds()
	}
	for _, c := range []struct {
		name   string
		got    int
		pct    float64
		within float64 // percentage points
	}{{"loss", lost, 30, 1}, {"duplicate", dup, 5, 0.5}, {"corrupt", corrupt, 1, 0.2}, {"reorder", reorder, 10, 0.6}} {
		if got := 100 * float64(c.got) / n; math.Abs(got-c.pct) > c.within {
			t.Errorf("%s: %.2f%% of %d packets, want %.1f%% ± %.1f", c.name, got, n, c.pct, c.within)
		}
	}
	if mean := jsum / n; math.Abs(mean) > 0.0001 {
		t.Errorf("mean jitter %.3f ms, want about 0", mean*1000)
	}
	// Each kind of decision has its own stream: the losses do not change
	// when the other percentages do.
	a, b := newDice(42, DirIn, Impairment{Loss: 30}), newDice(42, DirIn, imp)
	for i := range 1000 {
		if a.roll(100).drop != b.roll(100).drop {
			t.Fatalf("packet %d: loss decision depends on the other knobs", i)
		}
	}
	// And the two directions differ.
	o, in := newDice(42, DirOut, imp), newDice(42, DirIn, imp)
	same := 0
	for range 1000 {
		same += b2i(o.roll(100).drop == in.roll(100).drop)
	}
	if same == 1000 {
		t.Error("directions out and in draw the same stream")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// partialTCP is a TCP frame as the kernel hands it over with checksum
// offload: the checksum field holds only the pseudo-header sum.
func partialTCP(t *testing.T, payload []byte) (full, partial []byte, h vnetHdr) {
	full = tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 5201, payload)
	partial = append([]byte(nil), full...)
	ip := partial[14:34]
	binary.BigEndian.PutUint16(partial[34+16:], csumFold(pseudoSum(ip, protoTCP, len(partial)-34)))
	return full, partial, vnetHdr{flags: vnetNeedsCsum, csumStart: 34, csumOffset: 16}
}

func TestCorruptAfterChecksum(t *testing.T) {
	for seed := range uint64(50) {
		full, partial, h := partialTCP(t, pattern(900))
		d, c, _ := testDirection(seed, Impairment{Corrupt: 100}, Config{})
		feed(d, h, partial)
		if len(c.frames) != 1 {
			t.Fatalf("seed %d: %d frames out", seed, len(c.frames))
		}
		out := c.frames[0]
		if out[0]&vnetNeedsCsum != 0 {
			t.Fatalf("seed %d: checksum still left to the kernel, which would hide the corruption", seed)
		}
		got := out[vnetHdrLen:]
		diff := 0
		for i := range got {
			if got[i] != full[i] {
				diff++
				if bits := got[i] ^ full[i]; bits&(bits-1) != 0 || i < 14 {
					t.Errorf("seed %d: byte %d changed by %08b (want one bit, inside the IP packet)", seed, i, bits)
				}
			}
		}
		if diff != 1 {
			t.Errorf("seed %d: %d bytes differ from the checksummed original, want 1", seed, diff)
		}
		if ipOK, l4OK := checksumsValid(t, got); ipOK && l4OK {
			t.Errorf("seed %d: corrupted frame still passes its checksums", seed)
		}
		if s := d.stats.snapshot(); s.Corrupted != 1 {
			t.Errorf("seed %d: corrupted counter %d", seed, s.Corrupted)
		}
	}
	// Uncorrupted, the frame leaves as it came, checksum still deferred.
	_, partial, h := partialTCP(t, pattern(900))
	d, c, _ := testDirection(1, Impairment{Delay: 0}, Config{})
	feed(d, h, partial)
	if !bytes.Equal(c.frames[0], withVnet(h, partial)) {
		t.Error("an unimpaired frame was changed")
	}
}

// A GSO frame is cut when a per-packet decision is active, so that losses
// fall on wire packets; with only a delay it crosses whole.
func TestGSOCutOnlyWhenNeeded(t *testing.T) {
	payload := pattern(20000)
	f := tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 5201, payload)
	h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1000, csumStart: 34, csumOffset: 16}

	d, c, _ := testDirection(3, Impairment{Loss: 50, Corrupt: 10}, Config{})
	feed(d, h, f)
	s := d.stats.snapshot()
	if s.PacketsIn != 20 || s.Segmented != 1 || s.PacketsOut != uint64(len(c.frames)) || s.PacketsOut+s.DroppedLoss != 20 {
		t.Fatalf("loss on a 20-segment frame: %+v, %d frames out", s, len(c.frames))
	}
	if s.DroppedLoss < 3 || s.DroppedLoss > 17 {
		t.Errorf("50%% loss dropped %d of 20 segments", s.DroppedLoss)
	}
	corrupted := 0
	for _, m := range c.frames {
		if decodeVnetHdr(m).isGSO() || m[0]&vnetNeedsCsum != 0 {
			t.Fatal("a cut segment still carries offload work")
		}
		if ipOK, l4OK := checksumsValid(t, m[vnetHdrLen:]); !ipOK || !l4OK {
			corrupted++
		}
	}
	if uint64(corrupted) != s.Corrupted {
		t.Errorf("%d segments fail their checksums, %d counted corrupted", corrupted, s.Corrupted)
	}

	d, c, now := testDirection(3, Impairment{Delay: Duration(time.Millisecond)}, Config{})
	feed(d, h, f)
	*now = int64(time.Millisecond)
	batch, _ := d.line.due(*now, make([]*pkt, 0, 8))
	d.send(batch)
	if len(c.frames) != 1 || !bytes.Equal(c.frames[0], withVnet(h, f)) {
		t.Fatalf("delay only: %d frames out, want the super-frame whole", len(c.frames))
	}
	if s := d.stats.snapshot(); s.PacketsIn != 20 || s.PacketsOut != 20 || s.Segmented != 0 {
		t.Errorf("delay only: %+v", s)
	}
}

// Unmatched packets pass at once even when matched ones are delayed.
func TestUnmatchedPassUndelayed(t *testing.T) {
	cfg := Config{Overlay: OverlayMatch{UDPPorts: []uint16{8472}}}
	d, c, _ := testDirection(1, Impairment{Match: MatchOverlay, Delay: Duration(time.Second), Loss: 100}, cfg)
	feed(d, vnetHdr{}, udpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 8472, make([]byte, 20)))
	feed(d, vnetHdr{}, icmpFrame(t, "192.168.77.1", "192.168.77.2", 9))
	if len(c.frames) != 1 || icmpSeq(t, c.frames[0]) != 9 {
		t.Fatalf("%d frames out; want only the ICMP one, at once", len(c.frames))
	}
	if s := d.stats.snapshot(); s.Matched != 1 || s.DroppedLoss != 1 {
		t.Errorf("counters %+v", s)
	}
}

func TestLineOrderAndReorder(t *testing.T) {
	pool := newBufPool()
	l := newLine(Impairment{Delay: Duration(10 * time.Millisecond)})
	ms := int64(time.Millisecond)
	jitters := []time.Duration{5, -5, 3, -2, 0, 4, -4}
	var pushed []*pkt
	for i, j := range jitters {
		p := pool.get(100)
		p.buf[0] = byte(i)
		direct, r := l.push(p, int64(i)*ms, 10*time.Millisecond+j*time.Millisecond, false)
		if direct || r != accepted {
			t.Fatalf("packet %d: direct %v reason %v", i, direct, r)
		}
		pushed = append(pushed, p)
	}
	// A reordered packet leaves at once, ahead of the delayed ones.
	r := pool.get(100)
	r.buf[0] = 99
	if _, why := l.push(r, 7*ms, 10*time.Millisecond, true); why != accepted {
		t.Fatal("reordered packet refused")
	}
	out, next := l.due(7*ms, make([]*pkt, 0, 16))
	if len(out) != 1 || out[0].buf[0] != 99 || next != 15*ms {
		t.Fatalf("at 7ms: %d packets out (first %v), next at %v; want the reordered one, next at 15ms", len(out), out, next)
	}
	out, _ = l.due(time.Second.Nanoseconds(), make([]*pkt, 0, 16))
	var last int64
	for i, p := range out {
		if int(p.buf[0]) != i || p.at < last {
			t.Fatalf("delayed packets left out of order: #%d is %d at %d (previous at %d)", i, p.buf[0], p.at, last)
		}
		if p.at < int64(i)*ms+10*ms+int64(jitters[i])*ms {
			t.Errorf("packet %d left at %d, before its delay", i, p.at)
		}
		last = p.at
	}
	if len(out) != len(pushed) {
		t.Fatalf("%d of %d delayed packets out", len(out), len(pushed))
	}

	lim := newLine(Impairment{Delay: Duration(time.Second), Limit: 3})
	for i := range 4 {
		_, why := lim.push(pool.get(100), 0, time.Second, false)
		if (why == queueFull) != (i == 3) {
			t.Fatalf("limit 3, packet %d: %v", i, why)
		}
	}
}

func TestRateBucket(t *testing.T) {
	// 8 Mbit/s is one byte per microsecond; burst 10 kB, queue 20 kB.
	l := newLine(Impairment{Rate: 8_000_000, RateBurst: 10000, RateQueue: 20000})
	pool := newBufPool()
	var ats []int64
	dropped := 0
	for range 100 {
		p := pool.get(1000)
		p.wireBytes = 1000
		direct, why := l.push(p, 0, 0, false)
		switch {
		case why == queueFull:
			dropped++
		case direct:
			ats = append(ats, 0)
		default:
			ats = append(ats, p.at)
		}
	}
	// 10 packets ride the burst, about 20 more wait in the queue, the rest
	// are dropped.
	if len(ats) < 29 || len(ats) > 32 || dropped != 100-len(ats) {
		t.Fatalf("%d packets accepted, %d dropped", len(ats), dropped)
	}
	for i := 1; i < len(ats); i++ {
		gap := ats[i] - ats[i-1]
		if i < 10 && gap != 0 {
			t.Errorf("packet %d waited %dns inside the burst", i, gap)
		}
		if i > 10 && (gap < 999_000 || gap > 1_001_000) {
			t.Errorf("packet %d left %dns after the one before, want 1ms at 8 Mbit/s", i, gap)
		}
	}
}

// A narrower hop drops every wire packet longer than its MTU, matched or
// not, and judges a GSO frame by its segments.
func TestMTUNarrowHop(t *testing.T) {
	d, c, _ := testDirection(1, Impairment{Match: MatchOverlay, MTU: 1400}, Config{})
	small := udpFrame(t, "192.168.77.1", "192.168.77.2", 4000, 5000, pattern(1000)) // IP 1028
	big := udpFrame(t, "192.168.77.1", "192.168.77.2", 4000, 5000, pattern(1400))   // IP 1428
	feed(d, vnetHdr{}, small)
	feed(d, vnetHdr{}, big)
	if s := d.stats.snapshot(); s.DroppedMTU != 1 || len(c.frames) != 1 {
		t.Fatalf("plain packets: %+v, %d out", s, len(c.frames))
	}
	// 20 segments of 1360 bytes of TCP payload: IP 1400 each, they fit;
	// of 1361: IP 1401, none fits.
	for _, seg := range []struct {
		size    uint16
		dropped uint64
	}{{1360, 0}, {1361, 20}} {
		d, c, _ := testDirection(1, Impairment{MTU: 1400}, Config{})
		f := tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 5201, pattern(20*int(seg.size)))
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: seg.size, csumStart: 34, csumOffset: 16}
		feed(d, h, f)
		s := d.stats.snapshot()
		if s.DroppedMTU != seg.dropped || uint64(len(c.frames)) != 20-seg.dropped {
			t.Errorf("segments of %d: %+v, %d out", seg.size, s, len(c.frames))
		}
	}
	// A tunnelled TSO frame is judged by its outer IPv4 length: 4
	// segments of 1400 bytes inner payload are 1490 outside, the last
	// (400) is 490.
	inner := tcpFrame(t, "10.10.1.2", "10.10.2.2", 33000, 80, pattern(6000))
	vx := vxlanFrame(t, "192.168.77.1", "192.168.77.2", 8472, inner, false)
	hv := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1400, csumStart: 14 + 20 + 8 + 8 + 14 + 20, csumOffset: 16}
	for _, c := range []struct {
		mtu     int
		dropped uint64
	}{{1490, 0}, {1489, 4}} {
		d, c2, _ := testDirection(1, Impairment{MTU: c.mtu}, Config{})
		feed(d, hv, vx)
		if s := d.stats.snapshot(); s.DroppedMTU != c.dropped || uint64(len(c2.frames)) != 5-c.dropped {
			t.Errorf("tunnel, MTU %d: %+v, %d out", c.mtu, s, len(c2.frames))
		}
	}
	if err := (Impairment{MTU: 40}).validate("out"); err == nil {
		t.Error("an MTU of 40 was accepted")
	}
}

// discard stands in for the far socket and keeps nothing.
type discard struct{}

func (discard) send([][]byte, func(int)) error { return nil }

// BenchmarkHandleMTU: a 20-segment TSO frame through a hop with an MTU, cut
// and judged per segment (no root); "fit" sends every segment, "toobig"
// drops every one.
func BenchmarkHandleMTU(b *testing.B) {
	for _, c := range []struct {
		name string
		seg  uint16
	}{{"fit", 1360}, {"toobig", 1361}} {
		b.Run(c.name, func(b *testing.B) {
			d := newDirection(DirOut, nil, discard{}, Impairment{MTU: 1400}, Config{Seed: 1}, newBufPool(), func() int64 { return 0 })
			f := tcpFrame(b, "192.168.77.1", "192.168.77.2", 40000, 5201, pattern(20*int(c.seg)))
			msg := withVnet(vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: c.seg, csumStart: 34, csumOffset: 16}, f)
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				p := d.pool.get(len(msg))
				copy(p.buf, msg)
				d.handle(p)
			}
		})
	}
}
