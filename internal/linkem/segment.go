package linkem

import (
	"encoding/binary"
	"errors"
)

// Userspace segmentation of GSO super-frames, so that loss, duplication,
// corruption, reordering and the rate queue decide per wire packet, as they
// would on a real link. What the kernel's own GSO would produce is produced
// here: TCPv4 (TSO) cut at gso_size with the sequence number advancing, the
// IPv4 ID counting up, FIN/PSH only on the last segment and CWR only on the
// first; UDPv4 (USO, UDP_SEGMENT) cut into datagrams of their own; and either
// one inside a VXLAN tunnel (the vxlan backend's TSO frames cross the veth
// whole), where the outer IPv4 and UDP headers are rewritten per segment too.
// Every segment leaves with complete checksums and no offload left pending.

const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80

	vxlanHdrLen = 8
)

var (
	errGSOType   = errors.New("GSO type other than TCPv4 or UDPv4")
	errGSOLayout = errors.New("GSO frame headers do not match its virtio-net header")
)

// gsoLayout is where the headers of a GSO super-frame sit.
type gsoLayout struct {
	ip, l4, l4Len int  // innermost IPv4 and transport header, its length
	tcp           bool // TCP (else UDP)
	end           int  // end of the packet (the outermost IPv4 total length)
	mss           int
	// outerIP and outerUDP locate the encapsulation of a tunnelled frame;
	// outerIP is -1 for a plain one.
	outerIP, outerUDP int
}

// hdrEnd is where the payload to cut starts.
func (g gsoLayout) hdrEnd() int { return g.l4 + g.l4Len }

// segments is how many wire packets the frame becomes.
func (g gsoLayout) segments() int {
	return max(1, (g.end-g.hdrEnd()+g.mss-1)/g.mss)
}

// segLen is the length of segment i.
func (g gsoLayout) segLen(i int) int {
	return g.hdrEnd() + min(g.mss, g.end-g.hdrEnd()-i*g.mss)
}

// layoutOf finds the headers of the GSO frame f (without its virtio-net
// header) described by h. The kernel sets csum_start at the transport header
// it wants segmented, which for a tunnelled frame is the inner one.
func layoutOf(h vnetHdr, f []byte) (gsoLayout, error) {
	var g gsoLayout
	switch h.gsoType &^ gsoECN {
	case gsoTCPv4:
		g.tcp = true
	case gsoUDPL4:
	default:
		return g, errGSOType
	}
	if h.flags&vnetNeedsCsum == 0 || h.gsoSize == 0 {
		return g, errGSOLayout
	}
	g.mss = int(h.gsoSize)
	l3, et, ok := l3Offset(f)
	if !ok || et != etherIPv4 {
		return g, errGSOLayout
	}
	ihl, end, ok := ipv4At(f, l3)
	if !ok {
		return g, errGSOLayout
	}
	g.end, g.l4 = end, int(h.csumStart)
	proto := f[l3+9]
	switch {
	case g.l4 == l3+ihl:
		g.ip, g.outerIP = l3, -1
	case proto == protoUDP && g.l4 > l3+ihl+8:
		g.outerIP, g.outerUDP = l3, l3+ihl
		if g.outerUDP+8+vxlanHdrLen > g.end {
			return g, errGSOLayout
		}
		inner := f[g.outerUDP+8+vxlanHdrLen : g.end]
		il3, iet, ok := l3Offset(inner)
		if !ok || iet != etherIPv4 {
			return g, errGSOLayout
		}
		g.ip = g.outerUDP + 8 + vxlanHdrLen + il3
		iihl, _, ok := ipv4At(f[:g.end], g.ip)
		if !ok || g.ip+iihl != g.l4 {
			return g, errGSOLayout
		}
		proto = f[g.ip+9]
	default:
		return g, errGSOLayout
	}
	if g.tcp {
		if proto != protoTCP || g.l4+20 > g.end {
			return g, errGSOLayout
		}
		g.l4Len = int(f[g.l4+12]>>4) * 4
		if g.l4Len < 20 {
			return g, errGSOLayout
		}
	} else {
		if proto != protoUDP {
			return g, errGSOLayout
		}
		g.l4Len = 8
	}
	if g.hdrEnd() > g.end {
		return g, errGSOLayout
	}
	return g, nil
}

// cut writes segment i of frame f into dst (at least segLen(i) bytes) and
// returns its length.
func (g gsoLayout) cut(f []byte, i int, dst []byte) int {
	hl := g.hdrEnd()
	n := g.segLen(i)
	copy(dst, f[:hl])
	copy(dst[hl:n], f[hl+i*g.mss:])
	seg := dst[:n]
	last := i == g.segments()-1

	ip := seg[g.ip:]
	ihl := int(ip[0]&0x0f) * 4
	binary.BigEndian.PutUint16(ip[2:], uint16(n-g.ip))
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(f[g.ip+4:])+uint16(i))
	putIPv4Checksum(ip[:ihl])
	l4 := seg[g.l4:]
	if g.tcp {
		seq := binary.BigEndian.Uint32(f[g.l4+4:])
		binary.BigEndian.PutUint32(l4[4:], seq+uint32(i*g.mss))
		flags := f[g.l4+13]
		if !last {
			flags &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			flags &^= tcpCWR
		}
		l4[13] = flags
		putL4Checksum(ip, l4, protoTCP)
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(n-g.l4))
		putL4Checksum(ip, l4, protoUDP)
	}
	if g.outerIP < 0 {
		return n
	}
	oip := seg[g.outerIP:]
	oihl := int(oip[0]&0x0f) * 4
	binary.BigEndian.PutUint16(oip[2:], uint16(n-g.outerIP))
	binary.BigEndian.PutUint16(oip[4:], binary.BigEndian.Uint16(f[g.outerIP+4:])+uint16(i))
	putIPv4Checksum(oip[:oihl])
	udp := seg[g.outerUDP:]
	binary.BigEndian.PutUint16(udp[4:], uint16(n-g.outerUDP))
	// VXLAN over IPv4 usually sends no outer checksum (zero); keep it so,
	// and compute a full one when the sender asked for one.
	if binary.BigEndian.Uint16(f[g.outerUDP+6:]) != 0 {
		putL4Checksum(oip, udp, protoUDP)
	}
	return n
}
