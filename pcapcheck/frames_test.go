package pcapcheck

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Synthetic wire frames for the unit tests. Addresses follow the lab's
// defaults: underlay 192.168.77.0/24, overlay 10.10.0.0/16.

var (
	macH1   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macH2   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	vtepH2  = net.HardwareAddr{0x0a, 0x00, 0x00, 0x00, 0x02, 0x02}
	vtepH1  = net.HardwareAddr{0x0a, 0x00, 0x00, 0x00, 0x01, 0x01}
	host1   = netip.MustParseAddr("192.168.77.1")
	host2   = netip.MustParseAddr("192.168.77.2")
	ctrA    = netip.MustParseAddr("10.10.1.2")
	ctrB    = netip.MustParseAddr("10.10.2.2")
	overlay = netip.MustParsePrefix("10.10.0.0/16")
	t0      = time.Date(2025, 5, 20, 12, 0, 0, 123456789, time.UTC)
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func ip4(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{
		Version: 4, IHL: 5, TTL: 64, Protocol: proto,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice(),
	}
}

// echoIPv4 is a bare IPv4 packet holding an ICMP echo request.
func echoIPv4(t testing.TB, src, dst netip.Addr, seq uint16) []byte {
	return serialize(t,
		ip4(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: seq},
		gopacket.Payload([]byte("ping payload")),
	)
}

// udpFrame wraps payload in Ethernet/IPv4/UDP between two hosts.
func udpFrame(t testing.TB, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	ip := ip4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t,
		&layers.Ethernet{SrcMAC: macH1, DstMAC: macH2, EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload(payload),
	)
}

// flannelUDP is the udp backend's shape: the inner IPv4 packet is the payload.
func flannelUDP(t testing.TB, outerSrc, outerDst, innerSrc, innerDst netip.Addr, port uint16) []byte {
	return udpFrame(t, outerSrc, outerDst, port, port, echoIPv4(t, innerSrc, innerDst, 1))
}

// vxlanPayload is a VXLAN header plus inner Ethernet plus inner packet.
func vxlanPayload(t testing.TB, vni uint32, innerDstMAC net.HardwareAddr, inner []byte) []byte {
	return serialize(t,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni},
		&layers.Ethernet{SrcMAC: vtepH1, DstMAC: innerDstMAC, EthernetType: layers.EthernetTypeIPv4},
		gopacket.Payload(inner),
	)
}

func flannelVXLAN(t testing.TB, outerSrc, outerDst, innerSrc, innerDst netip.Addr, port uint16, vni uint32) []byte {
	return udpFrame(t, outerSrc, outerDst, 40000, port, vxlanPayload(t, vni, vtepH2, echoIPv4(t, innerSrc, innerDst, 1)))
}

// plainEcho is host-gw's shape (and "bare" for the others): the container
// packet itself on the wire.
func plainEcho(t testing.TB, src, dst netip.Addr) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macH1, DstMAC: macH2, EthernetType: layers.EthernetTypeIPv4},
		ip4(src, dst, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1},
	)
}

func arpFrame(t testing.TB) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: macH1, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
			HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
			SourceHwAddress: macH1, SourceProtAddress: host1.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: host2.AsSlice(),
		},
	)
}

func frames(data ...[]byte) []Frame {
	out := make([]Frame, len(data))
	for i, d := range data {
		out[i] = Frame{Time: t0.Add(time.Duration(i) * time.Millisecond), Data: d, Length: len(d), Outgoing: i%2 == 0}
	}
	return out
}
