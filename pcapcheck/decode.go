package pcapcheck

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// Backend kinds, spelled as in flannel's network config.
const (
	KindUDP    = config.BackendUDP
	KindVXLAN  = config.BackendVXLAN
	KindHostGW = config.BackendHostGW
)

// Flannel's default ports, and the IANA VXLAN port that some tools use.
const (
	DefaultUDPPort   = 8285
	DefaultVXLANPort = 8472
	IANAVXLANPort    = 4789
)

// Encap describes what overlay traffic should look like on the wire.
type Encap struct {
	Kind string // KindUDP, KindVXLAN or KindHostGW
	// Port is the UDP destination port of encapsulated packets; zero means
	// the backend's flannel default. Ignored for host-gw.
	Port uint16
	// VNI is the VXLAN network identifier, taken literally (flannel's default
	// is 1, but 0 is a valid configured value). vxlan only.
	VNI uint32
	// Network is the overlay network; container addresses live inside it.
	Network netip.Prefix
}

// Validate reports whether e can be checked against.
func (e Encap) Validate() error {
	switch e.Kind {
	case KindUDP, KindVXLAN, KindHostGW:
	default:
		return fmt.Errorf("unknown backend kind %q", e.Kind)
	}
	if !e.Network.IsValid() || !e.Network.Addr().Is4() {
		return fmt.Errorf("overlay network %v is not an IPv4 prefix", e.Network)
	}
	if e.VNI >= 1<<24 {
		return fmt.Errorf("VNI %d does not fit in 24 bits", e.VNI)
	}
	return nil
}

// normalized fills in default ports and masks the network.
func (e Encap) normalized() Encap {
	if e.Port == 0 {
		switch e.Kind {
		case KindUDP:
			e.Port = DefaultUDPPort
		case KindVXLAN:
			e.Port = DefaultVXLANPort
		}
	}
	if e.Kind == KindHostGW {
		e.Port = 0
	}
	e.Network = e.Network.Masked()
	return e
}

func (e Encap) String() string {
	e = e.normalized()
	switch e.Kind {
	case KindVXLAN:
		return fmt.Sprintf("vxlan port %d vni %d network %v", e.Port, e.VNI, e.Network)
	case KindUDP:
		return fmt.Sprintf("udp port %d network %v", e.Port, e.Network)
	default:
		return fmt.Sprintf("%s network %v", e.Kind, e.Network)
	}
}

// Packet is one decoded frame that carries IPv4 on the outside. "Outer" is
// the IPv4 header on the wire; for unencapsulated (host-gw or bare) traffic
// that header is the container's own and the Inner fields stay zero.
type Packet struct {
	Frame    int // index of the frame in the slice given to Decode
	Time     time.Time
	Outgoing bool

	OuterSrcMAC, OuterDstMAC net.HardwareAddr
	OuterSrc, OuterDst       netip.Addr
	UDPSrc, UDPDst           uint16 // 0 when the outer packet is not UDP

	// Encapsulated is KindUDP or KindVXLAN when an inner IPv4 packet was
	// found in the UDP payload, "" otherwise.
	Encapsulated string
	HasVXLAN     bool // a VXLAN header was decoded (even if what follows was not)
	VNI          uint32

	InnerSrcMAC, InnerDstMAC net.HardwareAddr // vxlan inner Ethernet
	InnerSrc, InnerDst       netip.Addr       // inner IPv4 when encapsulated

	Proto uint8 // IP protocol of the innermost IPv4 header decoded

	// ICMP of the innermost IPv4 packet (the inner one when encapsulated,
	// the packet on the wire otherwise).
	IsICMP             bool
	ICMPType, ICMPCode uint8
	ICMPID, ICMPSeq    uint16
}

// Addrs returns the addresses of the innermost IPv4 header: the inner pair
// when encapsulated, the outer pair otherwise.
func (p Packet) Addrs() (src, dst netip.Addr) {
	if p.Encapsulated != "" {
		return p.InnerSrc, p.InnerDst
	}
	return p.OuterSrc, p.OuterDst
}

// IsEchoRequest reports whether the innermost packet is an ICMP echo request.
func (p Packet) IsEchoRequest() bool {
	return p.IsICMP && p.ICMPType == layers.ICMPv4TypeEchoRequest
}

// String describes p on one line, for reports.
func (p Packet) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "frame %d ", p.Frame)
	if p.Outgoing {
		b.WriteString("out ")
	} else {
		b.WriteString("in ")
	}
	fmt.Fprintf(&b, "%v→%v", p.OuterSrc, p.OuterDst)
	if p.UDPDst != 0 {
		fmt.Fprintf(&b, " udp %d→%d", p.UDPSrc, p.UDPDst)
	}
	if p.HasVXLAN {
		fmt.Fprintf(&b, " vxlan vni %d", p.VNI)
		if p.InnerDstMAC != nil {
			fmt.Fprintf(&b, " inner-eth-dst %v", p.InnerDstMAC)
		}
	}
	if p.Encapsulated != "" {
		fmt.Fprintf(&b, " inner %v→%v", p.InnerSrc, p.InnerDst)
	}
	if p.IsICMP {
		fmt.Fprintf(&b, " %s", icmpName(p.ICMPType, p.ICMPCode))
		if p.ICMPType == layers.ICMPv4TypeEchoRequest || p.ICMPType == layers.ICMPv4TypeEchoReply {
			fmt.Fprintf(&b, " id %d seq %d", p.ICMPID, p.ICMPSeq)
		}
	} else if p.UDPDst == 0 || p.Encapsulated != "" {
		fmt.Fprintf(&b, " %v", layers.IPProtocol(p.Proto))
	}
	return b.String()
}

func icmpName(typ, code uint8) string {
	switch typ {
	case layers.ICMPv4TypeEchoRequest:
		return "icmp echo-request"
	case layers.ICMPv4TypeEchoReply:
		return "icmp echo-reply"
	}
	return fmt.Sprintf("icmp type %d code %d", typ, code)
}

// Decode decodes every frame that carries IPv4 and skips the rest (ARP,
// IPv6, garbage). UDP payloads are decoded as overlay traffic explicitly by
// port, never through gopacket's global port table: e.Port (or the
// backend's default) as e.Kind's format, and flannel's well-known ports
// (8285 as udp, 8472 and 4789 as vxlan) too, so traffic in the wrong
// encapsulation is still recognised and can be reported. An inner packet
// counts only if it decodes as IPv4. Decode never panics on malformed input.
func Decode(frames []Frame, e Encap) []Packet {
	e = e.normalized()
	pkts := make([]Packet, 0, len(frames))
	for i, f := range frames {
		if p, ok := decodeFrame(i, f, e); ok {
			pkts = append(pkts, p)
		}
	}
	return pkts
}

var lazyNoCopy = gopacket.DecodeOptions{Lazy: true, NoCopy: true}

func decodeFrame(idx int, f Frame, e Encap) (p Packet, ok bool) {
	// gopacket recovers its own decoder panics; this guards our code too, so
	// one bad frame can never take a whole check down.
	defer func() {
		if recover() != nil {
			p, ok = Packet{}, false
		}
	}()
	pkt := gopacket.NewPacket(f.Data, layers.LayerTypeEthernet, lazyNoCopy)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	// Lazy decoding stops at the first IPv4 header (after any VLAN tags);
	// everything above it is decoded by hand below.
	ip4, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if eth == nil || ip4 == nil || ip4.Version != 4 {
		return Packet{}, false
	}
	p = Packet{
		Frame:       idx,
		Time:        f.Time,
		Outgoing:    f.Outgoing,
		OuterSrcMAC: cloneMAC(eth.SrcMAC),
		OuterDstMAC: cloneMAC(eth.DstMAC),
		OuterSrc:    addr4(ip4.SrcIP),
		OuterDst:    addr4(ip4.DstIP),
		Proto:       uint8(ip4.Protocol),
	}
	if ip4.FragOffset != 0 {
		return p, true // a later fragment has no transport header
	}
	switch ip4.Protocol {
	case layers.IPProtocolICMPv4:
		setICMP(&p, ip4.Payload)
	case layers.IPProtocolUDP:
		var udp layers.UDP
		if udp.DecodeFromBytes(ip4.Payload, gopacket.NilDecodeFeedback) != nil {
			return p, true
		}
		p.UDPSrc, p.UDPDst = uint16(udp.SrcPort), uint16(udp.DstPort)
		switch encapForPort(e, p.UDPDst) {
		case KindUDP:
			decodeInnerIPv4(&p, udp.Payload, KindUDP)
		case KindVXLAN:
			decodeVXLAN(&p, udp.Payload)
		}
	}
	return p, true
}

// encapForPort says how to read the payload of a UDP packet to port.
func encapForPort(e Encap, port uint16) string {
	switch {
	case port == 0:
		return ""
	case port == e.Port && (e.Kind == KindUDP || e.Kind == KindVXLAN):
		return e.Kind
	case port == DefaultUDPPort:
		return KindUDP
	case port == DefaultVXLANPort, port == IANAVXLANPort:
		return KindVXLAN
	}
	return ""
}

func decodeVXLAN(p *Packet, payload []byte) {
	var vx layers.VXLAN
	if vx.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) != nil {
		return
	}
	p.HasVXLAN, p.VNI = true, vx.VNI
	var eth layers.Ethernet
	if eth.DecodeFromBytes(vx.Payload, gopacket.NilDecodeFeedback) != nil {
		return
	}
	p.InnerSrcMAC, p.InnerDstMAC = cloneMAC(eth.SrcMAC), cloneMAC(eth.DstMAC)
	if eth.EthernetType == layers.EthernetTypeIPv4 {
		decodeInnerIPv4(p, eth.Payload, KindVXLAN)
	}
}

func decodeInnerIPv4(p *Packet, payload []byte, kind string) {
	var ip layers.IPv4
	if ip.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) != nil || ip.Version != 4 {
		return
	}
	p.Encapsulated = kind
	p.InnerSrc, p.InnerDst = addr4(ip.SrcIP), addr4(ip.DstIP)
	p.Proto = uint8(ip.Protocol)
	if ip.FragOffset == 0 && ip.Protocol == layers.IPProtocolICMPv4 {
		setICMP(p, ip.Payload)
	}
}

func setICMP(p *Packet, payload []byte) {
	var icmp layers.ICMPv4
	if icmp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) != nil {
		return
	}
	p.IsICMP = true
	p.ICMPType, p.ICMPCode = icmp.TypeCode.Type(), icmp.TypeCode.Code()
	p.ICMPID, p.ICMPSeq = icmp.Id, icmp.Seq
}

func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// cloneMAC copies a MAC out of the frame buffer (decoding uses NoCopy).
func cloneMAC(m net.HardwareAddr) net.HardwareAddr {
	if m == nil {
		return nil
	}
	return append(net.HardwareAddr(nil), m...)
}
