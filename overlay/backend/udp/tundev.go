package udp

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tunDev is flannel0's descriptor as the fast datapath uses it: non-blocking,
// parked in the Go poller while empty, read one packet (or one large
// segment) at a time and written with writev. Every callback is bound once,
// so a read or write allocates nothing.
type tunDev struct {
	file *os.File
	rc   syscall.RawConn
	vnet bool // each packet starts with a virtio-net header

	// Arguments and results of the callbacks.
	rbuf    []byte
	rn      int
	rerr    error
	wiovs   []unix.Iovec
	werr    error
	readFn  func(fd uintptr) bool
	tryFn   func(fd uintptr)
	writeFn func(fd uintptr) bool
	wiov1   [1]unix.Iovec
}

// newTunDev takes over fd (a TUN device, or in tests anything that keeps
// packet boundaries).
func newTunDev(fd int, vnet bool) (*tunDev, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	file := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	d := &tunDev{file: file, rc: rc, vnet: vnet}
	d.readFn = d.readCb
	d.tryFn = func(fd uintptr) { d.readCb(fd) }
	d.writeFn = d.writeCb
	return d, nil
}

func (d *tunDev) close() error { return d.file.Close() }

// hdrLen is the length of the virtio-net header in front of each packet.
func (d *tunDev) hdrLen() int {
	if d.vnet {
		return vnetHdrLen
	}
	return 0
}

func (d *tunDev) readCb(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(d.rbuf))), uintptr(len(d.rbuf)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			d.rn = -1
			return false
		case 0:
			d.rn, d.rerr = int(n), nil
		default:
			d.rn, d.rerr = 0, e
		}
		return true
	}
}

// read reads one packet into b and returns its length. With noWait it only
// takes a packet already queued and returns -1 when there is none;
// otherwise it waits for one.
func (d *tunDev) read(b []byte, noWait bool) (int, error) {
	d.rbuf, d.rerr = b, nil
	var err error
	if noWait {
		err = d.rc.Control(d.tryFn)
	} else {
		err = d.rc.Read(d.readFn)
	}
	d.rbuf = nil
	if err != nil {
		return 0, pollErr(err)
	}
	if d.rerr != nil {
		return 0, d.rerr
	}
	return d.rn, nil
}

// pollErr maps what the poller says about the descriptor to what the loops
// check for: a passed deadline stays as it is, and anything else can only
// mean the file was closed (the poller's own "use of closed file" is not
// os.ErrClosed).
func pollErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", os.ErrClosed, err)
}

// split separates what a read returned into its virtio-net header (zero
// without one) and the packet.
func (d *tunDev) split(b []byte) (vnetHdr, []byte, error) {
	if !d.vnet {
		return vnetHdr{}, b, nil
	}
	h, err := decodeVnetHdr(b)
	if err != nil {
		return h, nil, err
	}
	return h, b[vnetHdrLen:], nil
}

func (d *tunDev) writeCb(fd uintptr) bool {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(unsafe.SliceData(d.wiovs))), uintptr(len(d.wiovs)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			d.werr = nil
		default:
			d.werr = e
		}
		return true
	}
}

// writev writes one packet made of iovs (the virtio-net header first, when
// the device has one).
func (d *tunDev) writev(iovs []unix.Iovec) error {
	d.wiovs = iovs
	err := d.rc.Write(d.writeFn)
	d.wiovs = nil
	if err != nil {
		return pollErr(err)
	}
	return d.werr
}

// write writes one packet (with its virtio-net header, when the device has
// one) from b.
func (d *tunDev) write(b []byte) error {
	if len(b) == 0 {
		return errors.New("empty packet")
	}
	d.wiov1[0] = iovec(b)
	return d.writev(d.wiov1[:])
}
