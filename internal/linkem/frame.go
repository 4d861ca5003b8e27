package linkem

import (
	"encoding/binary"
	"errors"
)

// The virtio-net header in front of every frame on a PACKET_VNET_HDR socket
// (<linux/virtio_net.h>, legacy layout, host byte order on the hosts Linux
// runs packet sockets on): whether the frame still needs its transport
// checksum and where it goes, and for a GSO super-frame how to cut it.

const vnetHdrLen = 10

const (
	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	gsoNone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4
	gsoECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN
)

type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func decodeVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:4]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:6]),
		csumStart:  binary.NativeEndian.Uint16(b[6:8]),
		csumOffset: binary.NativeEndian.Uint16(b[8:10]),
	}
}

func (h vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:4], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:6], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:8], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:10], h.csumOffset)
}

func (h vnetHdr) isGSO() bool { return h.gsoType != gsoNone }

// Link-layer and IP header walking. Frames come from veths and bridges:
// Ethernet, optionally with 802.1Q/802.1ad tags.

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherVLAN = 0x8100
	etherQinQ = 0x88a8

	protoIGMP   = 2
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// l3Offset returns where the network header of an Ethernet frame starts and
// its EtherType.
func l3Offset(f []byte) (int, uint16, bool) {
	off := 12
	for {
		if len(f) < off+2 {
			return 0, 0, false
		}
		t := binary.BigEndian.Uint16(f[off:])
		if t != etherVLAN && t != etherQinQ {
			return off + 2, t, true
		}
		off += 4
	}
}

// ipv4At checks the IPv4 header at off and returns its length and the
// packet's end (the total length, bounded by the frame).
func ipv4At(f []byte, off int) (ihl, end int, ok bool) {
	if len(f) < off+20 || f[off]>>4 != 4 {
		return 0, 0, false
	}
	ihl = int(f[off]&0x0f) * 4
	if ihl < 20 || len(f) < off+ihl {
		return 0, 0, false
	}
	end = off + int(binary.BigEndian.Uint16(f[off+2:]))
	if end > len(f) || end < off+ihl {
		// A GSO frame's total length may be 0 (BIG TCP) or the frame
		// shorter than claimed: the frame's own end is what there is.
		end = len(f)
	}
	return ihl, end, true
}

// ipExtent returns the bytes of the IP packet inside frame f (link layer
// and any Ethernet padding left out): what corruption may touch.
func ipExtent(f []byte) (start, end int, ok bool) {
	l3, et, ok := l3Offset(f)
	if !ok {
		return 0, 0, false
	}
	switch et {
	case etherIPv4:
		_, end, ok := ipv4At(f, l3)
		return l3, end, ok
	case etherIPv6:
		if len(f) < l3+40 || f[l3]>>4 != 6 {
			return 0, 0, false
		}
		end := min(len(f), l3+40+int(binary.BigEndian.Uint16(f[l3+4:])))
		return l3, end, true
	}
	return 0, 0, false
}

// The Internet checksum (RFC 1071). 32-bit big-endian words summed into 64
// bits fold to the same 16-bit ones' complement sum, since 2^16 = 1 in that
// arithmetic; a piece that starts at an odd offset would not, so callers sum
// contiguous ranges that start at even offsets of the packet.

func csumAdd(sum uint64, b []byte) uint64 {
	for len(b) >= 8 {
		sum += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}

func csumFold(sum uint64) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// pseudoSum is the sum of the IPv4 pseudo-header for a transport segment of
// n bytes of protocol proto, addresses taken from the IPv4 header at ip.
func pseudoSum(ip []byte, proto byte, n int) uint64 {
	return csumAdd(0, ip[12:20]) + uint64(proto) + uint64(n)
}

// putIPv4Checksum recomputes the header checksum of the IPv4 header ip.
func putIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^csumFold(csumAdd(0, ip)))
}

// putL4Checksum fills the TCP or UDP checksum of the segment seg whose IPv4
// header is ip.
func putL4Checksum(ip, seg []byte, proto byte) {
	off := 16
	if proto == protoUDP {
		off = 6
	}
	seg[off], seg[off+1] = 0, 0
	c := ^csumFold(csumAdd(pseudoSum(ip, proto, len(seg)), seg))
	if c == 0 && proto == protoUDP {
		c = 0xffff // zero means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}

var errCsumRange = errors.New("checksum offsets outside the frame")

// finishChecksum completes a checksum the sender left to the hardware
// (CHECKSUM_PARTIAL): the field at start+off holds the pseudo-header sum and
// the checksum covers everything from start to the end of the frame.
func finishChecksum(f []byte, start, off int) error {
	if start >= len(f) || start+off+2 > len(f) {
		return errCsumRange
	}
	c := ^csumFold(csumAdd(0, f[start:]))
	if c == 0 && off == 6 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(f[start+off:], c)
	return nil
}
