package udp

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvmmsg/sendmmsg through the socket's RawConn, with every header, address
// and iovec allocated once: the Go poller still parks the goroutine while the
// socket is empty (or full), and deadlines still wake it for shutdown. The
// calls themselves are raw syscalls: the socket is non-blocking, so they
// never sleep, and the runtime need not prepare for a blocking one (see
// fast.go).

// mmsghdr is struct mmsghdr of <sys/socket.h>: Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// recvCtrlSize is the control buffer of one received message: room for the
// UDP_GRO message (and a spare one, so it is never truncated).
const recvCtrlSize = 64

// setSockaddr fills sa with an IPv4 address and port.
func setSockaddr(sa *unix.RawSockaddrInet4, ap netip.AddrPort) {
	sa.Family = unix.AF_INET
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	sa.Addr = ap.Addr().As4()
}

// sockaddrAddr is the address of sa.
func sockaddrAddr(sa *unix.RawSockaddrInet4) netip.Addr {
	return netip.AddrFrom4(sa.Addr)
}

// receiver reads batches of datagrams with recvmmsg.
type receiver struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	ctrl  []byte
	bufs  [][]byte // bufs[i] receives message i
	gro   bool

	// Results of the last read callback.
	n      int
	errno  syscall.Errno
	readFn func(fd uintptr) bool
	tryFn  func(fd uintptr)
}

// newReceiver prepares n messages of at most size bytes each.
func newReceiver(rc syscall.RawConn, n, size int, gro bool) *receiver {
	r := &receiver{
		rc:    rc,
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet4, n),
		ctrl:  make([]byte, n*recvCtrlSize),
		bufs:  carve(n, size),
		gro:   gro,
	}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.ctrl[i*recvCtrlSize]
	}
	r.readFn = r.read
	r.tryFn = func(fd uintptr) { r.read(fd) }
	return r
}

// recv returns how many messages were filled: with wait it blocks until at
// least one datagram is there, without it returns 0 when none is. The error
// is the poller's (closed, deadline) or the syscall's.
func (r *receiver) recv(wait bool) (int, error) {
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Namelen = unix.SizeofSockaddrInet4
		h.SetControllen(recvCtrlSize)
		h.Flags = 0
		r.hdrs[i].len = 0
	}
	r.n, r.errno = 0, 0
	var err error
	if wait {
		err = r.rc.Read(r.readFn)
	} else {
		err = r.rc.Control(r.tryFn)
	}
	if err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	return r.n, nil
}

func (r *receiver) read(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for the poller
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// msg returns received message i: the sender, the data, the UDP GRO segment
// size (0: one datagram) and whether the kernel truncated it.
func (r *receiver) msg(i int) (from netip.Addr, data []byte, segSize int, trunc bool) {
	h := &r.hdrs[i]
	n := int(h.len)
	data = r.bufs[i][:n]
	if r.gro {
		c := r.ctrl[i*recvCtrlSize : i*recvCtrlSize+int(h.hdr.Controllen)]
		segSize = groSize(c)
	}
	return sockaddrAddr(&r.names[i]), data, segSize, h.hdr.Flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0
}

// sender sends batches of messages with sendmmsg.
type sender struct {
	rc    syscall.RawConn
	hdrs  []mmsghdr
	names []unix.RawSockaddrInet4
	ctrl  []byte

	// Arguments and results of the write callback.
	start, end int
	sent       int
	errno      syscall.Errno
	writeFn    func(fd uintptr) bool
}

// newSender prepares room for up to n messages of n packets in all.
func newSender(rc syscall.RawConn, n int) *sender {
	s := &sender{
		rc:    rc,
		hdrs:  make([]mmsghdr, n),
		names: make([]unix.RawSockaddrInet4, n),
		ctrl:  make([]byte, n*cmsgSpace),
	}
	s.writeFn = s.write
	return s
}

// build lays out msgs (over the batch's datagrams) as sendmmsg headers: a
// message's iovecs are those of its datagrams, which lie next to each other.
func (s *sender) build(msgs []gsoMsg, batch *sendBatch) {
	for k, m := range msgs {
		h := &s.hdrs[k].hdr
		setSockaddr(&s.names[k], m.dst)
		h.Name = (*byte)(unsafe.Pointer(&s.names[k]))
		h.Namelen = unix.SizeofSockaddrInet4
		i0, i1 := batch.dgrams[m.first].iov0, batch.dgrams[m.first+m.n-1].iov1
		h.Iov = &batch.iovs[i0]
		h.SetIovlen(i1 - i0)
		if m.n > 1 {
			c := s.ctrl[k*cmsgSpace : (k+1)*cmsgSpace]
			h.Control = &c[0]
			h.SetControllen(putUDPSegment(c, m.size))
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		h.Flags = 0
	}
}

// send sends built messages [start, end) and returns how many went (at
// least one unless errno is set: then message start+sent failed). The error
// is the poller's (closed, deadline).
func (s *sender) send(start, end int) (sent int, errno syscall.Errno, err error) {
	s.start, s.end, s.sent, s.errno = start, end, 0, 0
	if err := s.rc.Write(s.writeFn); err != nil {
		return 0, 0, err
	}
	return s.sent, s.errno, nil
}

func (s *sender) write(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[s.start])), uintptr(s.end-s.start), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // socket buffer full: wait until writable
		}
		if e != 0 {
			s.sent, s.errno = 0, e
		} else {
			s.sent = int(n)
		}
		return true
	}
}

// carve makes n buffers of size bytes from one allocation, each capped at its
// own end so that appending to one never runs into the next.
func carve(n, size int) [][]byte {
	slab := make([]byte, n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = slab[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}
