package linkem

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lineTimer wakes a delay line's sender when its next packet is due: a
// timerfd read through the Go poller. A time.Timer would do, but the
// runtime's poller sleeps in whole milliseconds, so a packet would leave up
// to a millisecond late (half a millisecond on average, each way); an armed
// timerfd makes the poller return the moment it expires.
type lineTimer struct {
	f  *os.File
	rc syscall.RawConn
	fd int
}

func newLineTimer() (*lineTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "linkem-timer")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	return &lineTimer{f: f, rc: rc, fd: fd}, nil
}

// arm makes the timer expire after d (at once when d <= 0); disarm with
// stop. Re-arming replaces the previous expiry.
func (t *lineTimer) arm(d time.Duration) {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(max(int64(d), 1))}
	// Cannot fail on a valid timerfd with a positive value; if it is
	// closed the sender is shutting down anyway.
	_ = unix.TimerfdSettime(t.fd, 0, &spec, nil)
}

func (t *lineTimer) stop() {
	_ = unix.TimerfdSettime(t.fd, 0, &unix.ItimerSpec{}, nil)
}

// wait blocks until the timer expires (or has expired since the last wait)
// or the timer is closed.
func (t *lineTimer) wait() error {
	var buf [8]byte
	var rerr error
	err := t.rc.Read(func(fd uintptr) bool {
		_, rerr = unix.Read(int(fd), buf[:])
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return rerr
}

func (t *lineTimer) close() error { return t.f.Close() }
