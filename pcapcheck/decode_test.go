package pcapcheck

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

var (
	encUDP   = Encap{Kind: KindUDP, Network: overlay}
	encVXLAN = Encap{Kind: KindVXLAN, VNI: 1, Network: overlay}
	encHGW   = Encap{Kind: KindHostGW, Network: overlay}
)

func decodeOne(t *testing.T, data []byte, e Encap) Packet {
	t.Helper()
	pkts := Decode(frames(data), e)
	if len(pkts) != 1 {
		t.Fatalf("Decode returned %d packets, want 1", len(pkts))
	}
	return pkts[0]
}

func TestDecodeUDP(t *testing.T) {
	p := decodeOne(t, flannelUDP(t, host1, host2, ctrA, ctrB, DefaultUDPPort), encUDP)
	if p.OuterSrc != host1 || p.OuterDst != host2 {
		t.Errorf("outer %v→%v, want %v→%v", p.OuterSrc, p.OuterDst, host1, host2)
	}
	if !bytes.Equal(p.OuterSrcMAC, macH1) || !bytes.Equal(p.OuterDstMAC, macH2) {
		t.Errorf("outer MACs %v→%v", p.OuterSrcMAC, p.OuterDstMAC)
	}
	if p.UDPSrc != 8285 || p.UDPDst != 8285 {
		t.Errorf("udp ports %d→%d", p.UDPSrc, p.UDPDst)
	}
	if p.Encapsulated != KindUDP || p.HasVXLAN {
		t.Errorf("Encapsulated=%q HasVXLAN=%v", p.Encapsulated, p.HasVXLAN)
	}
	if p.InnerSrc != ctrA || p.InnerDst != ctrB {
		t.Errorf("inner %v→%v", p.InnerSrc, p.InnerDst)
	}
	if !p.IsEchoRequest() || p.ICMPCode != 0 || p.ICMPID != 7 || p.ICMPSeq != 1 {
		t.Errorf("icmp: %+v", p)
	}
	if p.Frame != 0 || !p.Time.Equal(t0) || !p.Outgoing {
		t.Errorf("frame metadata: frame %d time %v outgoing %v", p.Frame, p.Time, p.Outgoing)
	}
}

func TestDecodeUDPCustomPort(t *testing.T) {
	e := encUDP
	e.Port = 9000
	p := decodeOne(t, flannelUDP(t, host1, host2, ctrA, ctrB, 9000), e)
	if p.Encapsulated != KindUDP || p.InnerDst != ctrB {
		t.Errorf("custom port not decoded: %v", p)
	}
	// Any other port is ordinary UDP.
	p = decodeOne(t, flannelUDP(t, host1, host2, ctrA, ctrB, 9001), e)
	if p.Encapsulated != "" || p.InnerSrc.IsValid() {
		t.Errorf("port 9001 decoded as overlay: %v", p)
	}
}

func TestDecodeVXLAN(t *testing.T) {
	p := decodeOne(t, flannelVXLAN(t, host1, host2, ctrA, ctrB, DefaultVXLANPort, 1), encVXLAN)
	if p.UDPDst != 8472 || !p.HasVXLAN || p.VNI != 1 || p.Encapsulated != KindVXLAN {
		t.Errorf("vxlan: %v", p)
	}
	if !bytes.Equal(p.InnerDstMAC, vtepH2) || !bytes.Equal(p.InnerSrcMAC, vtepH1) {
		t.Errorf("inner MACs %v→%v", p.InnerSrcMAC, p.InnerDstMAC)
	}
	if p.InnerSrc != ctrA || p.InnerDst != ctrB || !p.IsEchoRequest() {
		t.Errorf("inner: %v", p)
	}
	// 4789 is recognised too (and gopacket's own VXLAN decoding on it must
	// not confuse the outer/inner split).
	p = decodeOne(t, flannelVXLAN(t, host1, host2, ctrA, ctrB, IANAVXLANPort, 5), encVXLAN)
	if p.OuterSrc != host1 || p.Encapsulated != KindVXLAN || p.VNI != 5 || p.InnerDst != ctrB {
		t.Errorf("vxlan on 4789: %v", p)
	}
}

func TestDecodeHostGW(t *testing.T) {
	p := decodeOne(t, plainEcho(t, ctrA, ctrB), encHGW)
	if p.OuterSrc != ctrA || p.OuterDst != ctrB || p.UDPDst != 0 || p.Encapsulated != "" {
		t.Errorf("host-gw: %v", p)
	}
	if p.InnerSrc.IsValid() || !p.IsEchoRequest() {
		t.Errorf("host-gw inner/icmp: %v", p)
	}
	if src, dst := p.Addrs(); src != ctrA || dst != ctrB {
		t.Errorf("Addrs %v→%v", src, dst)
	}
}

func TestDecodeSkipsNonIPv4(t *testing.T) {
	pkts := Decode(frames(arpFrame(t), nil, []byte{1, 2, 3}, plainEcho(t, ctrA, ctrB)), encHGW)
	if len(pkts) != 1 || pkts[0].Frame != 3 {
		t.Fatalf("got %d packets (%v), want only frame 3", len(pkts), pkts)
	}
}

// TestDecodeGarbage feeds every truncation of every valid shape, random bytes,
// and random corruptions: Decode must never panic, and whatever it returns
// must be internally consistent.
func TestDecodeGarbage(t *testing.T) {
	valid := [][]byte{
		flannelUDP(t, host1, host2, ctrA, ctrB, DefaultUDPPort),
		flannelVXLAN(t, host1, host2, ctrA, ctrB, DefaultVXLANPort, 1),
		flannelVXLAN(t, host1, host2, ctrA, ctrB, IANAVXLANPort, 1),
		plainEcho(t, ctrA, ctrB),
		arpFrame(t),
		udpFrame(t, host1, host2, 1, DefaultUDPPort, []byte{0x45}),         // claims IPv4, too short
		udpFrame(t, host1, host2, 1, DefaultVXLANPort, []byte{8, 0, 0, 0}), // short VXLAN
	}
	var all [][]byte
	for _, v := range valid {
		for n := 0; n <= len(v); n++ {
			all = append(all, v[:n])
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		all = append(all, b)
		v := append([]byte(nil), valid[rng.IntN(len(valid))]...)
		for range 3 {
			v[rng.IntN(len(v))] = byte(rng.Uint32())
		}
		all = append(all, v)
	}
	for _, e := range []Encap{encUDP, encVXLAN, encHGW, {}} {
		for _, p := range Decode(frames(all...), e) {
			if p.Encapsulated != "" && (!p.InnerSrc.IsValid() || !p.InnerDst.IsValid()) {
				t.Errorf("encapsulated packet without inner addresses: %v", p)
			}
			if !p.OuterSrc.Is4() || !p.OuterDst.Is4() {
				t.Errorf("packet without outer IPv4: %v", p)
			}
		}
	}
	// A truncated UDP-encapsulated frame keeps what it has: the outer header.
	full := flannelUDP(t, host1, host2, ctrA, ctrB, DefaultUDPPort)
	p := decodeOne(t, full[:14+20+8+10], encUDP)
	if p.OuterSrc != host1 || p.UDPDst != DefaultUDPPort || p.Encapsulated != "" {
		t.Errorf("truncated: %v", p)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(flannelUDP(f, host1, host2, ctrA, ctrB, DefaultUDPPort))
	f.Add(flannelVXLAN(f, host1, host2, ctrA, ctrB, DefaultVXLANPort, 1))
	f.Add(plainEcho(f, ctrA, ctrB))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range []Encap{encUDP, encVXLAN, encHGW} {
			Check(Decode([]Frame{{Data: data}}, e), Expect{Encap: e})
		}
	})
}
