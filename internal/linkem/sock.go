package linkem

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// One AF_PACKET socket per interface, with PACKET_VNET_HDR: every frame read
// or written starts with a virtio-net header that carries the skb's GSO and
// checksum-offload state, so a TSO/USO super-frame crosses the relay in one
// read and one write and a CHECKSUM_PARTIAL frame keeps its deferred
// checksum. PACKET_IGNORE_OUTGOING hides what leaves the interface (our own
// writes included), so each socket sees only what arrives on its wire.
//
// The socket is non-blocking and wrapped in an *os.File so that the Go poller
// parks a reader while the interface is quiet and closing the file wakes it.

// maxFrame is the largest frame a read must hold: a 64 KiB GSO super-frame
// (IPv4's total length is 16 bits) plus link-layer headers, with room to spare.
const maxFrame = 65536 + 256

// sockBuf is the kernel buffer asked for in each direction: a burst of GSO
// super-frames while the relay is busy must not overflow the socket.
const sockBuf = 16 << 20

type packetSock struct {
	name string
	f    *os.File
	rc   syscall.RawConn

	// Scratch for sendmmsg; a sock is written by one goroutine at a time
	// (the writer holds wmu).
	hdrs []mmsghdr
	iovs []unix.Iovec
}

// mmsghdr is struct mmsghdr of <sys/socket.h>.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSock opens the socket on the interface named ifname in the
// calling thread's network namespace.
func openPacketSock(ifname string) (_ *packetSock, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", ifname, err)
	}
	// Protocol 0 receives nothing until bind: a socket created with
	// ETH_P_ALL would see every interface's frames in the meantime.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", ifname, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	opts := []struct {
		level, opt, val int
		what            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return nil, fmt.Errorf("packet socket on %s: %s: %w", ifname, o.what, err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+ifname)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("packet socket on %s: %w", ifname, err)
	}
	return &packetSock{name: ifname, f: f, rc: rc}, nil
}

func (s *packetSock) Close() error { return s.f.Close() }

// errTruncated reports a frame larger than the read buffer.
var errTruncated = errors.New("frame larger than the read buffer")

// recv reads one frame (virtio-net header first) into b and returns its
// length. It blocks in the poller until a frame arrives or the socket closes.
func (s *packetSock) recv(b []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), unix.MSG_TRUNC, 0, 0)
		n, errno = int(r), e
		return errno != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("read from %s: %w", s.name, errno)
	}
	if n > len(b) {
		return 0, fmt.Errorf("read from %s: %w (%d bytes)", s.name, errTruncated, n)
	}
	return n, nil
}

// send writes frames (each virtio-net header first) with as few sendmmsg
// calls as the kernel allows. A frame the kernel refuses is skipped and
// reported to refused by index; an error that ends the interface ends the
// call (the frames not written are reported too).
func (s *packetSock) send(frames [][]byte, refused func(i int)) error {
	if cap(s.hdrs) < len(frames) {
		s.hdrs = make([]mmsghdr, len(frames))
		s.iovs = make([]unix.Iovec, len(frames))
	}
	hdrs, iovs := s.hdrs[:len(frames)], s.iovs[:len(frames)]
	for i, f := range frames {
		iovs[i] = unix.Iovec{Base: unsafe.SliceData(f)}
		iovs[i].SetLen(len(f))
		hdrs[i] = mmsghdr{}
		hdrs[i].hdr.Iov = &iovs[i]
		hdrs[i].hdr.SetIovlen(1)
	}
	var firstErr error
	for sent := 0; sent < len(frames); {
		var n int
		var errno syscall.Errno
		err := s.rc.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[sent])), uintptr(len(frames)-sent), 0, 0, 0)
			n, errno = int(r), e
			return errno != unix.EAGAIN
		})
		if err == nil && errno != 0 {
			err = errno
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("write to %s: %w", s.name, err)
			}
			if errno == 0 || errno == unix.ENXIO || errno == unix.ENODEV {
				for i := sent; i < len(frames); i++ {
					refused(i)
				}
				return firstErr
			}
			// This frame was refused (say, a header the kernel
			// rejects, or the link is down): go on with the rest.
			refused(sent)
			sent++
			continue
		}
		sent += n
	}
	return firstErr
}

// kernelDrops is how many frames the kernel dropped because the socket's
// receive queue was full since the last call (PACKET_STATISTICS resets).
func (s *packetSock) kernelDrops() (uint64, error) {
	var st *unix.TpacketStats
	var gerr error
	err := s.rc.Control(func(fd uintptr) {
		st, gerr = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, fmt.Errorf("packet statistics of %s: %w", s.name, gerr)
	}
	return uint64(st.Drops), nil
}
