package udp

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollSet lets one goroutine wait for either of a worker's descriptors
// (its queue of flannel0 and its socket): an epoll instance holding both,
// level-triggered, itself parked in the Go poller (an epoll descriptor is
// readable while an event is pending in it). wait looks with a zero
// timeout before parking, and any event after that look wakes the set, so
// no readiness is missed.
type epollSet struct {
	file   *os.File
	rc     syscall.RawConn
	events [2]unix.EpollEvent
	pollFn func(fd uintptr) bool
}

// newEpollSet makes a set of the descriptors fds (which stay open and owned
// by their files).
func newEpollSet(fds ...int) (*epollSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	for _, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(epfd)
			return nil, fmt.Errorf("epoll_ctl add %d: %w", fd, err)
		}
	}
	// Non-blocking, so that os.NewFile hands it to the Go poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll nonblock: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	e := &epollSet{file: f, rc: rc}
	e.pollFn = e.poll
	return e, nil
}

// poll looks for pending events without waiting; false parks the caller in
// the Go poller until the set is readable.
func (e *epollSet) poll(fd uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&e.events[0])), uintptr(len(e.events)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		return errno != 0 || n > 0
	}
}

// wait returns once a descriptor of the set is readable. The error is the
// poller's (closed, deadline).
func (e *epollSet) wait() error {
	if err := e.rc.Read(e.pollFn); err != nil {
		return pollErr(err)
	}
	return nil
}

func (e *epollSet) close() error { return e.file.Close() }

// rawFD is the descriptor behind rc, left in non-blocking mode (os.File.Fd
// would make it blocking).
func rawFD(rc syscall.RawConn) (int, error) {
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}
