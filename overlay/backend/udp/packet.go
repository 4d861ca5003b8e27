package udp

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// The udp backend's wire format is flannel's: the UDP payload is the bare inner
// IPv4 packet, nothing before it. These helpers read just enough of the IPv4
// header to route and admit a packet, without allocating.

var (
	errShort    = errors.New("shorter than an IPv4 header")
	errVersion  = errors.New("not IPv4")
	errIHL      = errors.New("bad IPv4 header length")
	errTotalLen = errors.New("IPv4 total length does not match the datagram")
)

// ipv4Addrs validates the IPv4 header of pkt and returns its addresses.
func ipv4Addrs(pkt []byte) (src, dst netip.Addr, err error) {
	if len(pkt) < 20 {
		return src, dst, errShort
	}
	if pkt[0]>>4 != 4 {
		return src, dst, errVersion
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || ihl > len(pkt) {
		return src, dst, errIHL
	}
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if total < ihl || total > len(pkt) {
		return src, dst, errTotalLen
	}
	src = netip.AddrFrom4([4]byte(pkt[12:16]))
	dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	return src, dst, nil
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	return ^csumFold(csumAdd(0, b))
}

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// netUnreachable builds, into out, an ICMP "destination network unreachable"
// to the sender of orig, sourced from orig's destination (a local address as
// source would be dropped as martian when the packet re-enters through the
// TUN device), quoting orig's header and first 8 payload
// bytes as RFC 792 asks. It returns the packet length, or 0 when orig must not
// get an ICMP error (an ICMP error itself, a fragment, a broadcast source).
func netUnreachable(out []byte, orig []byte) int {
	src, dst, err := ipv4Addrs(orig)
	if err != nil || src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || src == broadcast ||
		dst.IsMulticast() || dst == broadcast {
		return 0
	}
	ihl := int(orig[0]&0x0f) * 4
	if binary.BigEndian.Uint16(orig[6:8])&0x1fff != 0 { // not the first fragment
		return 0
	}
	if orig[9] == 1 && len(orig) > ihl && orig[ihl] != 0 && orig[ihl] != 8 {
		return 0 // never answer an ICMP error with an error
	}
	quote := ihl + 8
	if quote > len(orig) {
		quote = len(orig)
	}
	n := 20 + 8 + quote
	if len(out) < n {
		return 0
	}
	ip := out[:20]
	ip[0] = 0x45
	ip[1] = 0xc0 // network control, as the kernel marks ICMP errors
	binary.BigEndian.PutUint16(ip[2:4], uint16(n))
	binary.BigEndian.PutUint32(ip[4:8], 0)
	ip[8] = 64
	ip[9] = 1
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], orig[16:20])
	copy(ip[16:20], orig[12:16])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	icmp := out[20:n]
	icmp[0], icmp[1] = 3, 0 // destination unreachable, net unreachable
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint32(icmp[4:8], 0)
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return n
}
