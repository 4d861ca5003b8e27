package linkem

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Frames for the tests, built with gopacket so that what the relay parses by
// hand is checked against an independent encoder and decoder.

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: t}
}

func ip4(src, dst string, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, Id: 1000, Flags: layers.IPv4DontFragment, Protocol: proto,
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
}

// tcpFrame is an Ethernet/IPv4/TCP frame with the given payload.
func tcpFrame(t testing.TB, src, dst string, sport, dport uint16, payload []byte) []byte {
	ip := ip4(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 4000000000, Ack: 7, ACK: true, PSH: true, Window: 500, DataOffset: 5}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(payload))
}

// udpFrame is an Ethernet/IPv4/UDP frame.
func udpFrame(t testing.TB, src, dst string, sport, dport uint16, payload []byte) []byte {
	ip := ip4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, udp, gopacket.Payload(payload))
}

// icmpFrame is an ICMP echo request with sequence number seq.
func icmpFrame(t testing.TB, src, dst string, seq uint16) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: seq},
		gopacket.Payload(make([]byte, 56)))
}

// vxlanFrame wraps an inner Ethernet frame in Ethernet/IPv4/UDP/VXLAN.
func vxlanFrame(t testing.TB, src, dst string, port uint16, inner []byte, withCsum bool) []byte {
	ip := ip4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	udp.SetNetworkLayerForChecksum(ip)
	f := serialize(t, eth(layers.EthernetTypeIPv4), ip, udp, &layers.VXLAN{ValidIDFlag: true, VNI: 1}, gopacket.Payload(inner))
	if !withCsum {
		f[14+20+6], f[14+20+7] = 0, 0
	}
	return f
}

// withVnet puts a virtio-net header in front of frame f.
func withVnet(h vnetHdr, f []byte) []byte {
	b := make([]byte, vnetHdrLen+len(f))
	h.encode(b)
	copy(b[vnetHdrLen:], f)
	return b
}

// checksumsValid reports whether the IPv4 header checksum and the TCP or UDP
// checksum of the innermost packet in frame f verify (per gopacket: the
// layers re-serialized with computed checksums must equal the frame).
func checksumsValid(t testing.TB, f []byte) (ipOK, l4OK bool) {
	t.Helper()
	pk := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		t.Fatalf("no IPv4 layer in %x", f)
	}
	// The udp outer header of a VXLAN frame: descend into the inner frame.
	if udp, ok := pk.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && udp.DstPort == 8472 {
		outerUDPOK := true
		if udp.Checksum != 0 {
			outerUDPOK = l4Valid(t, ip, udp, udp.Payload)
		}
		innerIP, innerL4 := checksumsValid(t, udp.Payload[8:])
		return ipValid(t, ip) && innerIP, outerUDPOK && innerL4
	}
	switch l4 := pk.TransportLayer().(type) {
	case *layers.TCP:
		return ipValid(t, ip), l4Valid(t, ip, l4, l4.Payload)
	case *layers.UDP:
		return ipValid(t, ip), l4Valid(t, ip, l4, l4.Payload)
	}
	return ipValid(t, ip), true
}

func ipValid(t testing.TB, ip *layers.IPv4) bool {
	c := *ip
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	return out[10] == ip.Contents[10] && out[11] == ip.Contents[11]
}

func l4Valid(t testing.TB, ip *layers.IPv4, l4 gopacket.SerializableLayer, payload []byte) bool {
	switch x := l4.(type) {
	case *layers.TCP:
		c := *x
		c.SetNetworkLayerForChecksum(ip)
		out := serialize(t, &c, gopacket.Payload(payload))
		return out[16] == x.Contents[16] && out[17] == x.Contents[17]
	case *layers.UDP:
		c := *x
		c.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(payload)); err != nil {
			t.Fatal(err)
		}
		out := buf.Bytes()
		return out[6] == x.Contents[6] && out[7] == x.Contents[7]
	}
	return false
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
