package udp

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The receive side of the fast datapath. Datagrams from a peer arrive in
// runs (UDP GRO hands over up to 64 of one sender in one buffer), and a run
// of one TCP flow's consecutive full-size segments is written to flannel0 as
// one large segment with a virtio-net header asking for TSO, so the kernel
// carries one packet through routing, the bridge and the receiver's TCP
// instead of forty. Nothing is copied: the merged packet is the first
// segment, its header rewritten in place, followed by the other segments'
// payloads, all as iovecs of one writev.
//
// Segments are merged only when the kernel's own GRO would merge them
// (inet_gro_receive, tcp_gro_receive) and the kernel's TSO would cut the
// merged packet back into the very same segments: same addresses, ports,
// TTL, TOS, IP and TCP options, acknowledgment and window; the IPv4 ID one
// more and the sequence number the next; every segment but the last exactly
// as long as the first; no SYN, RST, URG or CWR; PSH or FIN only on the
// last. Each merged segment's checksums are checked first, since the merged
// packet's are left to the kernel: a segment with a bad one is written on
// its own, and the receiving stack drops it as it would have without us.

const (
	// maxMergeSegs bounds a merged packet's segments (the kernel's UDP GRO
	// delivers at most 64 at once; a run may span two of its buffers).
	maxMergeSegs = 128
)

// outPkt is one write to flannel0: iovecs [iov0, iov1) of the batch.
type outPkt struct {
	iov0, iov1 int
	segs       int // segments (datagrams) it carries
	bytes      int // their bytes, as received
}

// mergeRun is the packet being built: the first segment (header and
// payload) and how the next one must look.
type mergeRun struct {
	open    bool
	first   []byte // the first segment, whole
	ihl     int
	hl      int // IP + TCP header length
	mss     int // payload length of the first segment
	total   int // IP length of the merged packet so far
	last    int // payload length of the last segment added
	nextSeq uint32
	lastFl  byte // TCP flags of the last segment added
	segs    int
	vhdr    []byte // this packet's virtio-net header
	pkt     int    // index of its outPkt
	peer    [4]byte
}

// coalescer builds the writes for one batch of received datagrams.
type coalescer struct {
	vnet  bool
	iovs  []unix.Iovec
	pkts  []outPkt
	vhdrs []byte // one virtio-net header per packet
	run   mergeRun
}

func newCoalescer(maxSegs int, vnet bool) *coalescer {
	return &coalescer{
		vnet:  vnet,
		iovs:  make([]unix.Iovec, 0, 2*maxSegs),
		pkts:  make([]outPkt, 0, maxSegs),
		vhdrs: make([]byte, maxSegs*vnetHdrLen),
	}
}

func (c *coalescer) reset() {
	c.iovs, c.pkts, c.run.open = c.iovs[:0], c.pkts[:0], false
}

// full says whether the batch has no room for another segment.
func (c *coalescer) full() bool {
	return len(c.pkts) == cap(c.pkts) || len(c.iovs)+2 > cap(c.iovs)
}

// add queues one admitted IPv4 packet from peer. The caller checks full
// first.
func (c *coalescer) add(pkt []byte, peer [4]byte) {
	if c.vnet && c.run.open && c.merge(pkt, peer) {
		return
	}
	c.finish()
	i, i0 := len(c.pkts), len(c.iovs)
	var vh []byte
	if c.vnet {
		vh = c.vhdrs[i*vnetHdrLen : (i+1)*vnetHdrLen]
		clear(vh)
		c.iovs = append(c.iovs, iovec(vh))
	}
	c.iovs = append(c.iovs, iovec(pkt))
	c.pkts = append(c.pkts, outPkt{iov0: i0, iov1: len(c.iovs), segs: 1, bytes: len(pkt)})
	if c.vnet {
		c.start(pkt, peer, vh, i)
	}
}

// start opens a run with pkt if a TCP segment like it could be merged: a
// valid one with data and no flags but ACK (and ECE).
func (c *coalescer) start(pkt []byte, peer [4]byte, vh []byte, idx int) {
	ihl, hl, ok := mergeableTCP(pkt)
	if !ok || pkt[ihl+13]&^tcpECE != tcpACK || len(pkt) == hl || !ipv4ChecksumValid(pkt[:ihl]) || !tcpChecksumValid(pkt, ihl) {
		return
	}
	c.run = mergeRun{
		open: true, first: pkt, ihl: ihl, hl: hl, mss: len(pkt) - hl, total: len(pkt), last: len(pkt) - hl,
		nextSeq: binary.BigEndian.Uint32(pkt[ihl+4:]) + uint32(len(pkt)-hl), lastFl: pkt[ihl+13],
		segs: 1, vhdr: vh, pkt: idx, peer: peer,
	}
}

// mergeableTCP checks that pkt is a whole, unfragmented IPv4 TCP segment and
// returns its IP and IP+TCP header lengths.
func mergeableTCP(pkt []byte) (ihl, hl int, ok bool) {
	if len(pkt) < 40 || pkt[9] != protoTCP {
		return 0, 0, false
	}
	ihl = int(pkt[0]&0x0f) * 4
	if int(binary.BigEndian.Uint16(pkt[2:4])) != len(pkt) || binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 ||
		ihl+20 > len(pkt) {
		return 0, 0, false
	}
	hl = ihl + int(pkt[ihl+12]>>4)*4
	if hl < ihl+20 || hl > len(pkt) {
		return 0, 0, false
	}
	return ihl, hl, true
}

func ipv4ChecksumValid(ip []byte) bool {
	return csumFold(csumAdd(0, ip)) == 0xffff
}

func tcpChecksumValid(pkt []byte, ihl int) bool {
	return csumFold(csumAdd(pseudoSum(pkt, protoTCP, len(pkt)-ihl), pkt[ihl:])) == 0xffff
}

// merge appends pkt to the open run if it continues it.
func (c *coalescer) merge(pkt []byte, peer [4]byte) bool {
	r := &c.run
	f := r.first
	ihl, hl := r.ihl, r.hl
	n := len(pkt) - hl
	switch {
	case peer != r.peer || r.segs == maxMergeSegs || r.last != r.mss || r.lastFl&(tcpPSH|tcpFIN) != 0:
		return false
	case len(pkt) < hl || n <= 0 || n > r.mss || r.total+n > 65535:
		return false
	case int(binary.BigEndian.Uint16(pkt[2:4])) != len(pkt):
		return false
	// The IPv4 ID counts up by one per segment, as TSO would cut them.
	case binary.BigEndian.Uint16(pkt[4:6]) != binary.BigEndian.Uint16(f[4:6])+uint16(r.segs):
		return false
	// IPv4: version and header length, TOS, flags and fragment offset,
	// TTL, protocol, addresses, options.
	case pkt[0] != f[0] || pkt[1] != f[1] || pkt[6] != f[6] || pkt[7] != f[7] || pkt[8] != f[8] || pkt[9] != f[9]:
		return false
	case string(pkt[12:20]) != string(f[12:20]) || string(pkt[20:ihl]) != string(f[20:ihl]):
		return false
	// TCP: ports, sequence, acknowledgment, header length, flags, window,
	// urgent pointer, options.
	case string(pkt[ihl:ihl+4]) != string(f[ihl:ihl+4]) || binary.BigEndian.Uint32(pkt[ihl+4:]) != r.nextSeq:
		return false
	case string(pkt[ihl+8:ihl+13]) != string(f[ihl+8:ihl+13]) || pkt[ihl+13]&^(tcpPSH|tcpFIN) != f[ihl+13]:
		return false
	case string(pkt[ihl+14:ihl+16]) != string(f[ihl+14:ihl+16]) || string(pkt[ihl+18:hl]) != string(f[ihl+18:hl]):
		return false
	case !ipv4ChecksumValid(pkt[:ihl]) || !tcpChecksumValid(pkt, ihl):
		return false
	}
	c.iovs = append(c.iovs, iovec(pkt[hl:]))
	p := &c.pkts[r.pkt]
	p.iov1 = len(c.iovs)
	p.segs++
	p.bytes += len(pkt)
	r.segs++
	r.total += n
	r.last = n
	r.nextSeq += uint32(n)
	r.lastFl = pkt[ihl+13]
	return true
}

// finish closes the open run: a run of more than one segment becomes one
// large segment, its headers rewritten for the whole and the TCP checksum
// left to the kernel (the field holds the pseudo-header sum, as for TSO).
func (c *coalescer) finish() {
	r := &c.run
	if !r.open {
		return
	}
	r.open = false
	if r.segs == 1 {
		return
	}
	f := r.first
	ihl := r.ihl
	binary.BigEndian.PutUint16(f[2:4], uint16(r.total))
	putIPv4Checksum(f[:ihl])
	f[ihl+13] |= r.lastFl & (tcpPSH | tcpFIN)
	binary.BigEndian.PutUint16(f[ihl+16:ihl+18], csumFold(pseudoSum(f, protoTCP, r.total-ihl)))
	vnetHdr{
		flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(r.hl), gsoSize: uint16(r.mss),
		csumStart: uint16(ihl), csumOffset: 16,
	}.encode(r.vhdr)
}
