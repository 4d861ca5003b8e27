package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (UDP GSO, "UDP_SEGMENT") lets one sendmsg carry
// many datagrams to one peer: the payload is cut into segments of gso_size
// bytes (the last may be shorter) and each segment leaves as its own datagram
// with its own UDP and IP header. On the wire nothing changes: a peer that
// reads one datagram at a time (upstream flanneld, our simple mode) sees the
// same datagrams as before, each one bare inner IPv4 packet. UDP GRO is the
// mirror image on receive: the kernel hands a socket that asked for it
// several datagrams of one sender in one buffer and says the segment size in
// a control message.

const (
	// maxGSOSegments is how many datagrams one UDP GSO send may carry. The
	// kernel's UDP_MAX_SEGMENTS is 64 on older kernels and 128 on newer ones.
	maxGSOSegments = 64
	// maxGSOBytes is the most UDP payload one send may carry: an IPv4
	// packet's 65535 bytes less the outer IP and UDP headers.
	maxGSOBytes = 65535 - encapOverhead
)

// gsoMsg is one sendmsg of a batch: n consecutive packets of the batch,
// starting at index first, all to dst. With n > 1 it is sent with
// UDP_SEGMENT = size: every packet but the last is exactly size bytes long
// and the last is at most size bytes long.
type gsoMsg struct {
	dst   netip.AddrPort
	flow  uint32
	first int
	n     int
	size  int
	bytes int
	// closed: the last packet was shorter than size, so nothing may follow
	// it in this message.
	closed bool
}

// gsoPlanner groups a batch of packets, in order, into sendmsg calls: with
// UDP GSO a run of packets of one flow to the same peer whose sizes allow it
// shares one message; without, every packet is its own message. Flows stay
// apart because the receiver steers a whole GSO send to the worker of its
// first packet's flow (steer.go).
type gsoPlanner struct {
	msgs []gsoMsg
}

func (p *gsoPlanner) reset() { p.msgs = p.msgs[:0] }

// add appends packet idx (which must be one more than the previous packet
// added since reset) of length n of the flow with steering hash flow to dst.
func (p *gsoPlanner) add(idx, n int, dst netip.AddrPort, flow uint32, gso bool) {
	if gso && len(p.msgs) > 0 {
		m := &p.msgs[len(p.msgs)-1]
		if !m.closed && m.dst == dst && m.flow == flow && n <= m.size && m.n < maxGSOSegments && m.bytes+n <= maxGSOBytes {
			m.n++
			m.bytes += n
			m.closed = n < m.size
			return
		}
	}
	p.msgs = append(p.msgs, gsoMsg{dst: dst, flow: flow, first: idx, n: 1, size: n, bytes: n})
}

// unbundle turns every multi-packet message of at most maxSingle bytes back
// into one message per packet (size(i) is packet i's length). A UDP GSO
// message is then always longer than any one datagram can be, so whoever
// captures on the underlay (tcpdump included), where GSO sends show before
// the kernel cuts them, can tell a send of several datagrams from a datagram
// with bytes after its packet. Small packets lose little: they still share
// the sendmmsg.
func (p *gsoPlanner) unbundle(maxSingle int, size func(int) int) {
	extra := 0
	for _, m := range p.msgs {
		if m.n > 1 && m.bytes <= maxSingle {
			extra += m.n - 1
		}
	}
	if extra == 0 {
		return
	}
	n := len(p.msgs)
	p.msgs = append(p.msgs, make([]gsoMsg, extra)...)
	// From the back, so nothing is overwritten before it is moved.
	w := len(p.msgs)
	for i := n - 1; i >= 0; i-- {
		m := p.msgs[i]
		if m.n == 1 || m.bytes > maxSingle {
			w--
			p.msgs[w] = m
			continue
		}
		for j := m.first + m.n - 1; j >= m.first; j-- {
			w--
			sz := size(j)
			p.msgs[w] = gsoMsg{dst: m.dst, flow: m.flow, first: j, n: 1, size: sz, bytes: sz}
		}
	}
}

// cmsgSpace is the room one control message with an int payload takes.
var cmsgSpace = unix.CmsgSpace(4)

// putUDPSegment writes a UDP_SEGMENT control message asking the kernel to cut
// the payload into size-byte datagrams, and returns its length. b must hold
// unix.CmsgSpace(2) bytes and be aligned for a cmsghdr.
func putUDPSegment(b []byte, size int) int {
	n := unix.CmsgSpace(2)
	clear(b[:n])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return n
}

// groSize finds the UDP_GRO control message among the control messages in b
// (as recvmsg returned them) and returns the segment size it carries, or 0
// when there is none: the buffer then holds a single datagram.
func groSize(b []byte) int {
	hdrLen := unix.CmsgLen(0)
	for len(b) >= hdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdrLen || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= hdrLen+4 {
			return int(binary.NativeEndian.Uint32(b[hdrLen:]))
		}
		// The next header starts at the aligned end of this one.
		next := unix.CmsgSpace(l - hdrLen)
		if next > len(b) {
			return 0
		}
		b = b[next:]
	}
	return 0
}

// datagrams is how many datagrams a received buffer of n bytes holds
// (segments of size bytes; size <= 0: one). An empty datagram is one.
func datagrams(n, size int) int {
	if size <= 0 || n <= size {
		return 1
	}
	return (n + size - 1) / size
}

// nextSegment returns the first datagram of a received buffer b holding
// datagrams of size bytes (the last may be shorter; size <= 0 means one
// datagram) and the rest of b.
func nextSegment(b []byte, size int) (seg, rest []byte) {
	if size <= 0 || size >= len(b) {
		return b, nil
	}
	return b[:size], b[size:]
}

// offloads says which offloads the fast datapath may use. All are on unless
// the hidden environment variable OffloadsEnv turns some off, for tests and
// measurements.
type offloads struct {
	tun bool // TUN with IFF_VNET_HDR and TSO/USO/checksum offloads (GSO on read, GRO on write)
	gso bool // UDP_SEGMENT on send
	gro bool // UDP_GRO on receive
}

// OffloadsEnv is the environment variable that selects the fast datapath's
// offloads: unset or "all" for every one the kernel has, "none" for none, or
// a comma-separated subset of "tun", "gso" and "gro". The datagrams on the
// wire are the same in every case; this only changes how many syscalls and
// copies move them.
const OffloadsEnv = "OVERLAYLAB_UDP_OFFLOADS"

func parseOffloads(s string) (offloads, error) {
	switch strings.TrimSpace(s) {
	case "", "all":
		return offloads{tun: true, gso: true, gro: true}, nil
	case "none":
		return offloads{}, nil
	}
	var o offloads
	for _, w := range strings.Split(s, ",") {
		switch strings.TrimSpace(w) {
		case "tun":
			o.tun = true
		case "gso":
			o.gso = true
		case "gro":
			o.gro = true
		default:
			return offloads{}, fmt.Errorf("%s=%q: %q is not one of all, none, tun, gso, gro", OffloadsEnv, s, w)
		}
	}
	return o, nil
}
