package linkem

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// cutAll segments a GSO frame and returns the segments.
func cutAll(t *testing.T, h vnetHdr, f []byte) [][]byte {
	t.Helper()
	g, err := layoutOf(h, f)
	if err != nil {
		t.Fatalf("layoutOf: %v", err)
	}
	var out [][]byte
	for i := range g.segments() {
		dst := make([]byte, g.segLen(i))
		n := g.cut(f, i, dst)
		out = append(out, dst[:n])
	}
	return out
}

func TestSegmentTCPv4(t *testing.T) {
	payload := pattern(10000)
	f := tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 5201, payload)
	f[14+20+13] |= tcpFIN | tcpCWR // FIN and CWR on the super-frame, with PSH and ACK
	h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	segs := cutAll(t, h, f)
	if len(segs) != 7 {
		t.Fatalf("%d segments, want 7 (10000 bytes at 1448)", len(segs))
	}
	var got []byte
	for i, s := range segs {
		ipOK, l4OK := checksumsValid(t, s)
		if !ipOK || !l4OK {
			t.Errorf("segment %d: IPv4 checksum ok %v, TCP checksum ok %v", i, ipOK, l4OK)
		}
		pk := gopacket.NewPacket(s, layers.LayerTypeEthernet, gopacket.Default)
		ip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if want := uint32(4000000000 + i*1448); tcp.Seq != want { // wraps past 2^32
			t.Errorf("segment %d: seq %d, want %d", i, tcp.Seq, want)
		}
		if ip.Id != uint16(1000+i) || int(ip.Length) != 40+len(tcp.Payload) {
			t.Errorf("segment %d: IP id %d length %d", i, ip.Id, ip.Length)
		}
		last := i == len(segs)-1
		if tcp.FIN != last || tcp.PSH != last || tcp.CWR != (i == 0) || !tcp.ACK {
			t.Errorf("segment %d: FIN %v PSH %v CWR %v ACK %v", i, tcp.FIN, tcp.PSH, tcp.CWR, tcp.ACK)
		}
		got = append(got, tcp.Payload...)
	}
	if !bytes.Equal(got, payload) {
		t.Error("the segments' payloads do not add up to the super-frame's")
	}
}

func TestSegmentUDPv4(t *testing.T) {
	payload := pattern(5000)
	f := udpFrame(t, "192.168.77.1", "192.168.77.2", 8285, 8285, payload)
	h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, gsoSize: 1400, csumStart: 34, csumOffset: 6}
	segs := cutAll(t, h, f)
	if len(segs) != 4 {
		t.Fatalf("%d datagrams, want 4", len(segs))
	}
	var got []byte
	for i, s := range segs {
		if ipOK, l4OK := checksumsValid(t, s); !ipOK || !l4OK {
			t.Errorf("datagram %d: IPv4 checksum ok %v, UDP checksum ok %v", i, ipOK, l4OK)
		}
		udp := gopacket.NewPacket(s, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeUDP).(*layers.UDP)
		if int(udp.Length) != 8+len(udp.Payload) || (i < 3 && len(udp.Payload) != 1400) {
			t.Errorf("datagram %d: UDP length %d, payload %d", i, udp.Length, len(udp.Payload))
		}
		got = append(got, udp.Payload...)
	}
	if !bytes.Equal(got, payload) {
		t.Error("the datagrams' payloads do not add up to the super-frame's")
	}
}

func TestSegmentVXLANTunnel(t *testing.T) {
	for _, outerCsum := range []bool{false, true} {
		payload := pattern(6000)
		inner := tcpFrame(t, "10.10.1.2", "10.10.2.2", 33000, 80, payload)
		f := vxlanFrame(t, "192.168.77.1", "192.168.77.2", 8472, inner, outerCsum)
		start := uint16(14 + 20 + 8 + 8 + 14 + 20)
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1400, csumStart: start, csumOffset: 16}
		segs := cutAll(t, h, f)
		if len(segs) != 5 {
			t.Fatalf("outer checksum %v: %d segments, want 5", outerCsum, len(segs))
		}
		var got []byte
		for i, s := range segs {
			if ipOK, l4OK := checksumsValid(t, s); !ipOK || !l4OK {
				t.Errorf("outer checksum %v, segment %d: IPv4 checksums ok %v, UDP/TCP checksums ok %v", outerCsum, i, ipOK, l4OK)
			}
			pk := gopacket.NewPacket(s, layers.LayerTypeEthernet, gopacket.Default)
			oip := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			udp := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if int(oip.Length) != len(s)-14 || int(udp.Length) != len(s)-34 || (udp.Checksum != 0) != outerCsum {
				t.Errorf("segment %d: outer IP length %d, UDP length %d checksum %#x, frame %d", i, oip.Length, udp.Length, udp.Checksum, len(s))
			}
			ipk := gopacket.NewPacket(udp.Payload[8:], layers.LayerTypeEthernet, gopacket.Default)
			tcp := ipk.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp.Seq != uint32(4000000000+i*1400) {
				t.Errorf("segment %d: inner seq %d", i, tcp.Seq)
			}
			got = append(got, tcp.Payload...)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("outer checksum %v: inner payloads do not add up", outerCsum)
		}
	}
}

func TestLayoutRefusals(t *testing.T) {
	f := tcpFrame(t, "192.168.77.1", "192.168.77.2", 1, 2, pattern(3000))
	cases := []struct {
		name string
		h    vnetHdr
		want error
	}{
		{"TCPv6 type", vnetHdr{flags: vnetNeedsCsum, gsoType: 4, gsoSize: 1000, csumStart: 34, csumOffset: 16}, errGSOType},
		{"no checksum offload", vnetHdr{gsoType: gsoTCPv4, gsoSize: 1000, csumStart: 34, csumOffset: 16}, errGSOLayout},
		{"gso_size 0", vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, csumStart: 34, csumOffset: 16}, errGSOLayout},
		{"csum_start off the header", vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, gsoSize: 1000, csumStart: 40, csumOffset: 16}, errGSOLayout},
		{"UDP type on a TCP frame", vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, gsoSize: 1000, csumStart: 34, csumOffset: 6}, errGSOLayout},
	}
	for _, c := range cases {
		if _, err := layoutOf(c.h, f); !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
}

// FuzzSegment: whatever the frame and header, layoutOf and cut neither panic
// nor write past the segment they announce.
func FuzzSegment(f *testing.F) {
	tcp := tcpFrame(f, "192.168.77.1", "192.168.77.2", 1, 2, pattern(3000))
	f.Add(tcp, uint8(gsoTCPv4), uint16(34), uint16(1000))
	inner := tcpFrame(f, "10.10.1.2", "10.10.2.2", 1, 2, pattern(3000))
	f.Add(vxlanFrame(f, "192.168.77.1", "192.168.77.2", 8472, inner, false), uint8(gsoTCPv4), uint16(84), uint16(700))
	f.Add(udpFrame(f, "192.168.77.1", "192.168.77.2", 1, 2, pattern(3000)), uint8(gsoUDPL4), uint16(34), uint16(1))
	f.Fuzz(func(t *testing.T, fr []byte, typ uint8, start, size uint16) {
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: typ, csumStart: start, gsoSize: size}
		g, err := layoutOf(h, fr)
		if err != nil {
			return
		}
		if g.segments() > 70000 {
			t.Fatalf("%d segments", g.segments())
		}
		for i := range min(g.segments(), 50) {
			n := g.segLen(i)
			dst := make([]byte, n)
			if got := g.cut(fr, i, dst); got != n {
				t.Fatalf("segment %d: cut %d bytes, announced %d", i, got, n)
			}
		}
	})
}
