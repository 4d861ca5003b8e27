package udp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzSplitTunRead feeds arbitrary virtio-net headers and packets to the
// send side's cutter, as a TUN read could return them: it must never panic,
// and whatever it accepts must come out as datagrams that each are a
// well-formed IPv4 packet with valid checksums, carrying the input's
// transport payload in order.
func FuzzSplitTunRead(f *testing.F) {
	fl := tcpFlow{src: "10.10.1.5", dst: "10.10.2.9", sport: 40000, seq: 1, id: 7, tcpOpts: 3}
	tso := fl.segment(testPayload(700, 1), 0, 0, tcpACK|tcpPSH)
	udpBig := fuzzIPv4([4]byte{10, 10, 1, 5}, [4]byte{10, 10, 2, 9}, protoUDP, append(make([]byte, 8), testPayload(300, 2)...), 0)
	seed := func(h vnetHdr, pkt []byte) {
		b := make([]byte, vnetHdrLen)
		h.encode(b)
		f.Add(append(b, pkt...))
	}
	seed(tsoHeader(20, 52, 100), tso)
	seed(tsoHeader(20, 52, 1), tso[:60])
	seed(vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, gsoSize: 100, csumStart: 20, csumOffset: 6}, udpBig)
	seed(vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 16}, fl.segment(testPayload(10, 3), 0, 0, tcpACK))
	seed(vnetHdr{}, inner("10.10.1.5", "10.10.2.9", 100, 1))
	seed(vnetHdr{gsoType: gsoTCPv4 | gsoECN, gsoSize: 3}, tso[:80])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 70000 {
			return
		}
		d := &tunDev{vnet: true}
		h, pkt, err := d.split(b)
		if err != nil {
			return
		}
		orig := bytes.Clone(pkt)
		s := newSendBatch(256)
		n, err := s.addTunPacket(h, pkt, netip.AddrPort{})
		if err != nil {
			if len(s.dgrams) != 0 || len(s.iovs) != 0 {
				t.Fatalf("refused read left %d datagrams behind", len(s.dgrams))
			}
			return
		}
		if n != len(s.dgrams) || n == 0 {
			t.Fatalf("%d datagrams reported, %d queued", n, len(s.dgrams))
		}
		if h.gsoType&^gsoECN == gsoNone {
			return // one packet, its checksum maybe completed
		}
		ihl := int(orig[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(orig[2:4]))
		l4 := 8
		if orig[9] == protoTCP {
			l4 = int(orig[ihl+12]>>4) * 4
		}
		var payload []byte
		for i, p := range s.datagrams() {
			g := s.dgrams[i]
			if len(p) != g.size || len(p) > ihl+l4+int(h.gsoSize) {
				t.Fatalf("datagram %d: %d bytes (size %d, gso_size %d)", i, len(p), g.size, h.gsoSize)
			}
			checkPacket(t, "datagram", p)
			payload = append(payload, p[ihl+l4:]...)
		}
		if !bytes.Equal(payload, orig[ihl+l4:total]) {
			t.Fatalf("payload not carried over: %d bytes in, %d out", total-ihl-l4, len(payload))
		}
	})
}

// FuzzCoalesce feeds the receive side's merger arbitrary datagrams after two
// well-formed segments of one flow: it must never panic, every datagram
// must be written exactly once and in order, and a merged write must cut
// back into exactly the datagrams it took.
func FuzzCoalesce(f *testing.F) {
	fl := tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: 1111, seq: 100, id: 1, tcpOpts: 3}
	// Small segments keep the engine's minimizing of new inputs quick.
	f.Add(fl.segment(testPayload(100, 3), 200, 2, tcpACK), fl.segment(testPayload(50, 4), 300, 3, tcpACK|tcpPSH))
	f.Add(fl.segment(testPayload(100, 3), 200, 2, tcpACK), []byte{0x45})
	f.Add(fl.segment(testPayload(99, 3), 200, 2, tcpACK), fl.segment(testPayload(1, 3), 299, 3, tcpACK))
	f.Add(inner("10.10.2.9", "10.10.1.5", 100, 1), fl.segment(testPayload(100, 3), 300, 2, tcpACK))
	f.Fuzz(func(t *testing.T, a, b []byte) { checkCoalesce(t, fl, a, b) })
}

func checkCoalesce(t *testing.T, fl tcpFlow, a, b []byte) {
	{
		in := [][]byte{
			fl.segment(testPayload(100, 1), 0, 0, tcpACK),
			fl.segment(testPayload(100, 2), 100, 1, tcpACK),
			bytes.Clone(a), bytes.Clone(b),
		}
		want := make([][]byte, len(in))
		for i := range in {
			want[i] = bytes.Clone(in[i])
		}
		c := newCoalescer(8, true)
		for _, p := range in {
			if len(p) == 0 {
				continue
			}
			c.add(p, [4]byte{192, 168, 77, 2})
		}
		c.finish()
		var got [][]byte
		for _, p := range c.pkts {
			var w []byte
			for _, v := range c.iovs[p.iov0:p.iov1] {
				w = append(w, unsafeIovBytes(v)...)
			}
			h, err := decodeVnetHdr(w)
			if err != nil {
				t.Fatal(err)
			}
			segs := resegment(t, written{h: h, pkt: w[vnetHdrLen:]})
			if len(segs) != p.segs {
				t.Fatalf("write of %d segments cuts into %d", p.segs, len(segs))
			}
			got = append(got, segs...)
		}
		var nonEmpty [][]byte
		for _, p := range want {
			if len(p) > 0 {
				nonEmpty = append(nonEmpty, p)
			}
		}
		if len(got) != len(nonEmpty) {
			t.Fatalf("%d datagrams in, %d out", len(nonEmpty), len(got))
		}
		for i := range got {
			if !bytes.Equal(got[i], nonEmpty[i]) {
				t.Fatalf("datagram %d changed:\n got % x\nwant % x", i, got[i][:min(60, len(got[i]))], nonEmpty[i][:min(60, len(nonEmpty[i]))])
			}
		}
	}
}

// TestHotPathsDoNotAllocate: cutting a TSO batch into datagrams and merging
// received segments reuse the buffers they were given.
func TestHotPathsDoNotAllocate(t *testing.T) {
	fl := tcpFlow{src: "10.10.1.5", dst: "10.10.2.9", sport: 40000, seq: 1, id: 7, tcpOpts: 3}
	tso := fl.segment(testPayload(45*1420, 1), 0, 0, tcpACK)
	h := tsoHeader(20, 52, 1420)
	s := newSendBatch(256)
	if n := testing.AllocsPerRun(100, func() {
		s.reset()
		if _, err := s.addTunPacket(h, tso, netip.AddrPort{}); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("cutting a TSO batch: %.1f allocations", n)
	}
	segs := s.datagrams()
	c := newCoalescer(256, true)
	if n := testing.AllocsPerRun(100, func() {
		c.reset()
		for _, p := range segs {
			c.add(p, [4]byte{192, 168, 77, 1})
		}
		c.finish()
	}); n != 0 {
		t.Errorf("merging segments: %.1f allocations", n)
	}
}

func BenchmarkSplitTSO(b *testing.B) {
	fl := tcpFlow{src: "10.10.1.5", dst: "10.10.2.9", sport: 40000, seq: 1, id: 7, tcpOpts: 3}
	tso := fl.segment(testPayload(45*1420, 1), 0, 0, tcpACK)
	h := tsoHeader(20, 52, 1420)
	s := newSendBatch(256)
	b.SetBytes(int64(len(tso)))
	b.ReportAllocs()
	for b.Loop() {
		s.reset()
		if _, err := s.addTunPacket(h, tso, netip.AddrPort{}); err != nil {
			b.Fatal(err)
		}
	}
}
