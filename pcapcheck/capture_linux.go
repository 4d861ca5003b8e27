package pcapcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

const (
	// SnapLen is the most bytes kept of one frame. It is far above the MTU
	// because GSO/GRO frames seen by a packet socket can be up to 64 KiB. A
	// maximal one (IPv4 length 65535 plus Ethernet) loses its last 13 bytes;
	// headers, which is all the checks read, are always kept.
	SnapLen = 65536

	// MaxCaptureBytes bounds the memory one Capture may hold. Frames beyond it
	// are counted in Stats.OverLimit and dropped, so a forgotten capture during
	// a throughput test cannot eat the machine.
	MaxCaptureBytes = 256 << 20

	socketBuffer = 4 << 20
	pollTimeout  = 100 // ms: how promptly the reader notices Stop or ctx
)

// Frame is one captured link-layer frame.
type Frame struct {
	Time time.Time
	Data []byte // at most SnapLen bytes
	// Length is the frame's length on the wire; it exceeds len(Data) only when
	// the frame was cut at SnapLen. Zero means len(Data).
	Length int
	// Outgoing is true for frames the namespace sent on the interface
	// (PACKET_OUTGOING), false for frames it received.
	Outgoing bool
}

// Stats describes a capture's completeness. A check that finds a flow missing
// should be read together with these: kernel drops or over-limit frames mean
// the capture, not the network, may have lost it.
type Stats struct {
	Frames      int    // frames kept
	Bytes       int64  // bytes kept
	Truncated   int    // frames cut at SnapLen
	OverLimit   int    // frames dropped because MaxCaptureBytes was reached
	KernelDrops uint32 // frames the kernel dropped because the socket buffer was full (known after Stop)
	LinkDown    int    // times the interface went down while capturing (ENETDOWN); capture continues
}

// Capture is a running capture started by Start. Call Stop exactly when done;
// it is safe to call Stop more than once.
type Capture struct {
	nsName, ifName string
	fd             int
	stop           chan struct{}
	done           chan struct{}
	stopOnce       sync.Once

	mu     sync.Mutex
	frames []Frame
	stats  Stats
	err    error // first fatal read error
}

// Start opens an AF_PACKET socket inside the named network namespace nsName
// (as listed by `ip netns`), bound to
// interface ifName there, and captures every frame in both directions until
// Stop is called or ctx ends. When ctx ends the capture stops reading but the
// frames gathered so far are still returned by Stop.
func Start(ctx context.Context, nsName, ifName string) (*Capture, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd := -1
	err := nsutil.DoNamed(nsName, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return fmt.Errorf("look up interface: %w", err)
		}
		// Protocol 0: the socket receives nothing until bind, so no frame from
		// another interface slips in between socket() and bind().
		s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		if err := setupSocket(s, ifi.Index); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("start capture on %s in netns %s: %w", ifName, nsName, err)
	}
	c := &Capture{
		nsName: nsName,
		ifName: ifName,
		fd:     fd,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go c.run(ctx)
	return c, nil
}

func setupSocket(s, ifindex int) error {
	// SO_RCVBUFFORCE ignores rmem_max (needs CAP_NET_ADMIN, which we have when
	// we may enter namespaces); fall back to the capped SO_RCVBUF.
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer); err != nil {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer); err != nil {
			return fmt.Errorf("set receive buffer: %w", err)
		}
	}
	// Kernel receive timestamps are taken when the frame reaches the tap, not
	// when our goroutine gets around to reading it.
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fmt.Errorf("enable timestamps: %w", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(s, sa); err != nil {
		return fmt.Errorf("bind packet socket to ifindex %d: %w", ifindex, err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) run(ctx context.Context) {
	defer close(c.done)
	buf := make([]byte, SnapLen)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
	for {
		select {
		case <-c.stop:
			// Frames already queued on the socket belong to the capture:
			// take them before leaving.
			c.drain(buf, oob)
			return
		case <-ctx.Done():
			c.drain(buf, oob)
			return
		default:
		}
		n, err := unix.Poll(pfd, pollTimeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			c.fail(fmt.Errorf("poll: %w", err))
			return
		}
		if n == 0 {
			continue
		}
		if !c.drain(buf, oob) {
			return
		}
	}
}

// drain reads frames until the socket is empty. It returns false after a
// fatal error.
func (c *Capture) drain(buf, oob []byte) bool {
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_TRUNC)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EWOULDBLOCK):
			return true
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENETDOWN):
			// The kernel reports a link going down once and keeps the socket
			// bound: when the link comes back, frames flow again. Scenarios
			// flap links on purpose, so this is not the end of the capture.
			c.mu.Lock()
			c.stats.LinkDown++
			c.mu.Unlock()
			continue
		default:
			c.fail(fmt.Errorf("read frame: %w", err))
			return false
		}
		ts := timestampFrom(oob[:oobn])
		outgoing := false
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		c.add(buf, n, ts, outgoing)
	}
}

func (c *Capture) add(buf []byte, n int, ts time.Time, outgoing bool) {
	kept := min(n, len(buf))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stats.Bytes+int64(kept) > MaxCaptureBytes {
		c.stats.OverLimit++
		return
	}
	if n > kept {
		c.stats.Truncated++
	}
	c.stats.Frames++
	c.stats.Bytes += int64(kept)
	c.frames = append(c.frames, Frame{
		Time:     ts,
		Data:     append([]byte(nil), buf[:kept]...),
		Length:   n,
		Outgoing: outgoing,
	})
}

func (c *Capture) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("capture on %s in netns %s: %w", c.ifName, c.nsName, err)
	}
	c.mu.Unlock()
}

// timestampFrom extracts the SCM_TIMESTAMPNS control message; without one it
// falls back to the time of reading.
func timestampFrom(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
				continue
			}
			if len(m.Data) < int(unsafe.Sizeof(unix.Timespec{})) {
				continue
			}
			ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(int64(ts.Sec), int64(ts.Nsec))
		}
	}
	return time.Now()
}

// Stats returns counters of the capture so far. KernelDrops is filled in by
// Stop.
func (c *Capture) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Stop ends the capture, closes the socket and returns the frames in arrival
// order. A non-nil error means reading failed part-way; the frames read until
// then are still returned.
func (c *Capture) Stop() ([]Frame, error) {
	c.stopOnce.Do(func() {
		close(c.stop)
		<-c.done
		st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		cerr := unix.Close(c.fd)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err == nil {
			c.stats.KernelDrops = st.Drops
		}
		if cerr != nil && c.err == nil {
			c.err = fmt.Errorf("close capture socket: %w", cerr)
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames, c.err
}
