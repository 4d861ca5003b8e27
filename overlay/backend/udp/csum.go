package udp

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) for the datapath: a ones'-complement sum
// taken 64 bits at a time with add-with-carry chains, which the compiler
// turns into ADC instructions. The words are loaded little-endian, which
// only swaps the two bytes of the folded result (RFC 1071 section 2(B)), so
// csumFold swaps them back. Partial sums of pieces that each start at an
// even offset of the packet add up like the sum of the whole.

// csumAdd adds b to the running sum s.
func csumAdd(s uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	var tail uint64
	switch len(b) {
	case 7:
		tail = uint64(b[6]) << 48
		fallthrough
	case 6:
		tail |= uint64(binary.LittleEndian.Uint16(b[4:6])) << 32
		tail |= uint64(binary.LittleEndian.Uint32(b))
	case 5:
		tail = uint64(b[4])<<32 | uint64(binary.LittleEndian.Uint32(b))
	case 4:
		tail = uint64(binary.LittleEndian.Uint32(b))
	case 3:
		tail = uint64(b[2])<<16 | uint64(binary.LittleEndian.Uint16(b))
	case 2:
		tail = uint64(binary.LittleEndian.Uint16(b))
	case 1:
		tail = uint64(b[0])
	}
	s, c = bits.Add64(s, tail, c)
	// The end-around carry: adding it back cannot carry again, since s is
	// then at most 2^64-2.
	s, c = bits.Add64(s, c, 0)
	return s + c
}

// csumFold folds a sum to 16 bits, in network byte order.
func csumFold(s uint64) uint16 {
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return bits.ReverseBytes16(uint16(s))
}

// pseudoSum is the sum of the IPv4 pseudo-header of a transport segment of
// length n with protocol proto between the addresses in the IPv4 header ip.
func pseudoSum(ip []byte, proto byte, n int) uint64 {
	var p [12]byte
	copy(p[0:8], ip[12:20])
	p[9] = proto
	binary.BigEndian.PutUint16(p[10:12], uint16(n))
	return csumAdd(0, p[:])
}

// putIPv4Checksum fills the header checksum of the IPv4 header ip.
func putIPv4Checksum(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], ^csumFold(csumAdd(0, ip)))
}
