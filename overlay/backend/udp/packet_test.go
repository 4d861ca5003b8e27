package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

func icmpEcho(t *testing.T, src, dst string) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, ic, gopacket.Payload("hello")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestIPv4Addrs(t *testing.T) {
	pkt := icmpEcho(t, "10.10.1.2", "10.10.2.3")
	src, dst, err := ipv4Addrs(pkt)
	if err != nil || src.String() != "10.10.1.2" || dst.String() != "10.10.2.3" {
		t.Fatalf("got %v %v %v", src, dst, err)
	}
	bad := map[string][]byte{
		"short":     pkt[:19],
		"ipv6":      append([]byte{0x60}, pkt[1:]...),
		"ihl<5":     append([]byte{0x44}, pkt[1:]...),
		"ihl>len":   append([]byte{0x4f}, pkt[1:20]...),
		"total>len": pkt[:len(pkt)-1],
	}
	for name, b := range bad {
		if _, _, err := ipv4Addrs(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNetUnreachable(t *testing.T) {
	orig := icmpEcho(t, "10.10.1.2", "10.10.99.3")
	out := make([]byte, 128)
	n := netUnreachable(out, orig)
	if n != 20+8+20+8 {
		t.Fatalf("length %d", n)
	}
	p := gopacket.NewPacket(out[:n], layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || ic == nil {
		t.Fatalf("not IPv4/ICMP: %v", p)
	}
	if ip.SrcIP.String() != "10.10.99.3" || ip.DstIP.String() != "10.10.1.2" {
		t.Errorf("addresses %s -> %s", ip.SrcIP, ip.DstIP)
	}
	if ic.TypeCode.Type() != layers.ICMPv4TypeDestinationUnreachable || ic.TypeCode.Code() != 0 {
		t.Errorf("type/code %v", ic.TypeCode)
	}
	if checksum(out[:20]) != 0 || checksum(out[20:n]) != 0 {
		t.Error("bad checksum")
	}
	if string(out[28:n]) != string(orig[:28]) {
		t.Error("quote is not the original header + 8 bytes")
	}
	// An ICMP error is never answered with another.
	if m := netUnreachable(make([]byte, 128), out[:n]); m != 0 {
		t.Errorf("answered an ICMP error (%d bytes)", m)
	}
	// Nor is a non-first fragment.
	frag := append([]byte(nil), orig...)
	binary.BigEndian.PutUint16(frag[6:8], 10)
	if m := netUnreachable(make([]byte, 128), frag); m != 0 {
		t.Error("answered a fragment")
	}
	// Nor a packet from a broadcast or loopback source, or to multicast.
	for _, c := range [][2]string{{"255.255.255.255", "10.10.9.9"}, {"127.0.0.1", "10.10.9.9"}, {"10.10.1.2", "224.0.0.5"}} {
		if m := netUnreachable(make([]byte, 128), icmpEcho(t, c[0], c[1])); m != 0 {
			t.Errorf("answered %s -> %s", c[0], c[1])
		}
	}
	// Too small an output buffer is refused, not overrun.
	if m := netUnreachable(make([]byte, 30), orig); m != 0 {
		t.Error("overran the buffer")
	}
}

func TestTableLookupAndAdmit(t *testing.T) {
	own := netip.MustParsePrefix("10.10.1.0/24")
	peer := netip.MustParsePrefix("10.10.2.0/24")
	pub := netip.MustParseAddr("192.168.77.2")
	tab := &table{subnetLen: 24, own: own,
		bySubnet: map[netip.Prefix]route{peer: {subnet: peer, dst: netip.AddrPortFrom(pub, 8285)}},
		byPublic: map[netip.Addr]netip.Prefix{pub: peer}}
	if r, ok := tab.lookup(netip.MustParseAddr("10.10.2.77")); !ok || r.dst.Addr() != pub {
		t.Errorf("lookup peer: %v %v", r, ok)
	}
	if _, ok := tab.lookup(netip.MustParseAddr("10.10.3.1")); ok {
		t.Error("lookup of an unleased subnet succeeded")
	}
	a := netip.MustParseAddr
	cases := []struct {
		name           string
		from, src, dst netip.Addr
		want           backend.DropReason
		ok             bool
	}{
		{"good", pub, a("10.10.2.5"), a("10.10.1.9"), 0, true},
		{"not a peer", a("192.168.77.9"), a("10.10.2.5"), a("10.10.1.9"), backend.DropNotPeer, false},
		{"forged inner source", pub, a("10.10.3.5"), a("10.10.1.9"), backend.DropSpoofed, false},
		{"inner destination not ours", pub, a("10.10.2.5"), a("10.10.4.9"), backend.DropSpoofed, false},
	}
	for _, c := range cases {
		r, ok := tab.admit(c.from, c.src, c.dst)
		if ok != c.ok || (!ok && r != c.want) {
			t.Errorf("%s: got %v %v, want %v %v", c.name, r, ok, c.want, c.ok)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	tab := &table{subnetLen: 24, bySubnet: map[netip.Prefix]route{}, byPublic: map[netip.Addr]netip.Prefix{}}
	for i := range 200 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, byte(i), 0}), 24)
		tab.bySubnet[p] = route{subnet: p}
	}
	dst := netip.MustParseAddr("10.10.77.3")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tab.lookup(dst); !ok {
			b.Fatal("miss")
		}
	}
}
