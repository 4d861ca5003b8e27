package udp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The send side of the fast datapath. One read from flannel0 (with the
// virtio-net header) returns either one packet or a large TCP (or UDP)
// segment that the kernel left for us to cut (TSO/USO). Cutting it copies no
// payload: each datagram is two iovecs, a rebuilt header in a small slab and
// the payload where the read left it; sendmmsg with UDP_SEGMENT then hands
// the kernel a run of equal-size datagrams in one message. The transport
// checksum of each datagram is computed here (the wire carries ordinary
// packets with valid checksums), in one pass over the payload.

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpECE = 0x40
	tcpCWR = 0x80

	protoTCP = 6
	protoUDP = 17

	// maxHdr is the most an IPv4 header and a TCP header, both with
	// options, can take.
	maxHdr = 60 + 60
)

var (
	errGSOType   = errors.New("segmentation type other than TCPv4 or UDPv4")
	errGSOSize   = errors.New("segment with gso_size 0")
	errGSOProto  = errors.New("transport header does not match the segmentation type")
	errCsumRange = errors.New("checksum offsets outside the packet")
	errTooMany   = errors.New("more segments than the batch has room for")
)

// dgram is one datagram of a send batch: iovecs [iov0, iov1) of the
// batch's iovec array, size bytes in all.
type dgram struct {
	iov0, iov1 int
	size       int
	dst        netip.AddrPort
	flow       uint32 // steering hash of its inner packet (steer.go)
}

// sendBatch collects the datagrams of one round of TUN reads. Every array is
// allocated once; iovecs point into the read buffers and the header slab,
// which must stay untouched until the batch is sent.
type sendBatch struct {
	iovs    []unix.Iovec
	dgrams  []dgram
	hdrs    []byte
	hdrUsed int
}

func newSendBatch(maxDgrams int) *sendBatch {
	return &sendBatch{
		iovs:   make([]unix.Iovec, 0, 2*maxDgrams),
		dgrams: make([]dgram, 0, maxDgrams),
		hdrs:   make([]byte, maxDgrams*maxHdr),
	}
}

func (s *sendBatch) reset() {
	s.iovs, s.dgrams, s.hdrUsed = s.iovs[:0], s.dgrams[:0], 0
}

// size is the length of datagram i.
func (s *sendBatch) size(i int) int { return s.dgrams[i].size }

// room is how many more datagrams fit.
func (s *sendBatch) room() int { return cap(s.dgrams) - len(s.dgrams) }

// iovec points at b (which must not be empty).
func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: unsafe.SliceData(b)}
	v.SetLen(len(b))
	return v
}

// addSegment adds a datagram made of hdr and payload (either may be empty).
func (s *sendBatch) addSegment(hdr, payload []byte, dst netip.AddrPort) {
	i0 := len(s.iovs)
	for _, b := range [2][]byte{hdr, payload} {
		if len(b) > 0 {
			s.iovs = append(s.iovs, iovec(b))
		}
	}
	s.dgrams = append(s.dgrams, dgram{iov0: i0, iov1: len(s.iovs), size: len(hdr) + len(payload), dst: dst})
}

// header takes n bytes of the header slab.
func (s *sendBatch) header(n int) []byte {
	h := s.hdrs[s.hdrUsed : s.hdrUsed+n : s.hdrUsed+n]
	s.hdrUsed += n
	return h
}

// addTunPacket adds what one TUN read returned (h, pkt) as datagrams to dst
// and returns how many. On error nothing was added.
func (s *sendBatch) addTunPacket(h vnetHdr, pkt []byte, dst netip.AddrPort) (int, error) {
	switch h.gsoType &^ gsoECN {
	case gsoNone:
		if h.flags&vnetNeedsCsum != 0 {
			if err := finishChecksum(pkt, int(h.csumStart), int(h.csumOffset)); err != nil {
				return 0, err
			}
		}
		if s.room() < 1 {
			return 0, errTooMany
		}
		s.addSegment(pkt, nil, dst)
		return 1, nil
	case gsoTCPv4:
		return s.splitTCP(pkt, int(h.gsoSize), dst)
	case gsoUDPL4:
		return s.splitUDP(pkt, int(h.gsoSize), dst)
	default:
		return 0, errGSOType
	}
}

// finishChecksum completes a transport checksum the kernel left to us:
// the field at start+off holds the pseudo-header sum, and the checksum
// covers everything from start on.
func finishChecksum(pkt []byte, start, off int) error {
	if start >= len(pkt) || start+off+2 > len(pkt) {
		return errCsumRange
	}
	c := ^csumFold(csumAdd(0, pkt[start:]))
	if c == 0 && off == 6 { // UDP sends a computed zero as all ones
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[start+off:], c)
	return nil
}

// ipv4Header checks the IPv4 header of pkt and returns its length.
func ipv4Header(pkt []byte, proto byte) (int, error) {
	if _, _, err := ipv4Addrs(pkt); err != nil {
		return 0, err
	}
	if pkt[9] != proto {
		return 0, errGSOProto
	}
	return int(pkt[0]&0x0f) * 4, nil
}

// segments is how many pieces of at most mss bytes n bytes make (one for
// none).
func segments(n, mss int) int {
	return max(1, (n+mss-1)/mss)
}

// splitTCP cuts a TCP segment of any size into segments of mss payload
// bytes, as the kernel's TSO does: the IPv4 ID counts up, the sequence
// number advances, FIN and PSH stay on the last segment only and CWR on the
// first only.
func (s *sendBatch) splitTCP(pkt []byte, mss int, dst netip.AddrPort) (int, error) {
	ihl, err := ipv4Header(pkt, protoTCP)
	if err != nil {
		return 0, err
	}
	pkt = pkt[:binary.BigEndian.Uint16(pkt[2:4])]
	if len(pkt) < ihl+20 {
		return 0, errGSOProto
	}
	doff := int(pkt[ihl+12]>>4) * 4
	if doff < 20 || ihl+doff > len(pkt) {
		return 0, errGSOProto
	}
	seq := binary.BigEndian.Uint32(pkt[ihl+4 : ihl+8])
	flags := pkt[ihl+13]
	return s.cut(pkt, ihl, doff, mss, dst, func(tcp, p []byte, i, n int) {
		binary.BigEndian.PutUint32(tcp[4:8], seq+uint32(i*mss))
		f := flags
		if i != n-1 {
			f &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			f &^= tcpCWR
		}
		tcp[13] = f
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:18], ^csumFold(csumAdd(csumAdd(pseudoSum(pkt, protoTCP, doff+len(p)), tcp), p)))
	})
}

// splitUDP cuts a UDP datagram of any size into datagrams of mss payload
// bytes each (UDP segmentation offload: each piece is a datagram of its own
// with its own UDP header, not an IP fragment).
func (s *sendBatch) splitUDP(pkt []byte, mss int, dst netip.AddrPort) (int, error) {
	ihl, err := ipv4Header(pkt, protoUDP)
	if err != nil {
		return 0, err
	}
	pkt = pkt[:binary.BigEndian.Uint16(pkt[2:4])]
	if len(pkt) < ihl+8 {
		return 0, errGSOProto
	}
	return s.cut(pkt, ihl, 8, mss, dst, func(udp, p []byte, _, _ int) {
		binary.BigEndian.PutUint16(udp[4:6], uint16(8+len(p)))
		udp[6], udp[7] = 0, 0
		c := ^csumFold(csumAdd(csumAdd(pseudoSum(pkt, protoUDP, 8+len(p)), udp), p))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:8], c)
	})
}

// cut adds the datagrams of pkt (an IPv4 header of ihl bytes, a transport
// header of l4 bytes, payload) cut at mss payload bytes: each gets a copy of
// both headers with the IPv4 length, ID (counting up) and checksum set, and
// fix completes its transport header (l4 bytes) for payload p, piece i of n.
func (s *sendBatch) cut(pkt []byte, ihl, l4, mss int, dst netip.AddrPort, fix func(l4hdr, p []byte, i, n int)) (int, error) {
	if mss == 0 {
		return 0, errGSOSize
	}
	hl := ihl + l4
	payload := pkt[hl:]
	n := segments(len(payload), mss)
	if n > s.room() {
		return 0, errTooMany
	}
	id := binary.BigEndian.Uint16(pkt[4:6])
	for i := range n {
		p := payload[min(i*mss, len(payload)):min((i+1)*mss, len(payload))]
		hdr := s.header(hl)
		copy(hdr, pkt[:hl])
		binary.BigEndian.PutUint16(hdr[2:4], uint16(hl+len(p)))
		binary.BigEndian.PutUint16(hdr[4:6], id+uint16(i))
		putIPv4Checksum(hdr[:ihl])
		fix(hdr[ihl:], p, i, n)
		s.addSegment(hdr, p, dst)
	}
	return n, nil
}
