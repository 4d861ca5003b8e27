package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// RTTProbe sends ICMP echo requests from a namespace to an address, one
// every Interval, and measures each round trip. It works as ping does: one
// thread sends a request, then waits in recvmsg for replies until the next
// one is due. Replies are timestamped by the kernel (SO_TIMESTAMPNS) when
// they arrive, so the figure does not include the prober's own wakeup; and
// no other thread of the prober runs meanwhile (a second goroutine blocked in
// recvmsg makes the Go scheduler move threads around on every reply, which
// measurably lengthens a round trip that itself wakes threads).
type RTTProbe struct {
	Netns    string
	Dst      netip.Addr
	Warmup   int // probes sent first and not counted (neighbour caches, first-packet paths)
	Count    int // counted probes
	Interval time.Duration
	Timeout  time.Duration // how long a reply may take to count (default 1s)
}

// RTTResult holds the round trips of the probes that were answered.
type RTTResult struct {
	Sent     int
	Received int
	RTTs     []time.Duration
}

// Micros returns the round trips in microseconds.
func (r RTTResult) Micros() []float64 {
	out := make([]float64, len(r.RTTs))
	for i, d := range r.RTTs {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	return out
}

var rttRun atomic.Uint32

// Run sends the probes and collects the replies.
func (p RTTProbe) Run(ctx context.Context) (RTTResult, error) {
	if p.Count < 1 || p.Interval <= 0 {
		return RTTResult{}, fmt.Errorf("rtt probe: count %d, interval %s", p.Count, p.Interval)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	fd, err := rawICMP(p.Netns)
	if err != nil {
		return RTTResult{}, err
	}
	defer unix.Close(fd)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	// An ID of our own: a raw ICMP socket sees every echo reply in the
	// namespace, including other probers'.
	id := int(uint32(os.Getpid())*31+rttRun.Add(1)*7919) & 0xffff
	total := p.Warmup + p.Count
	sentAt := make([]time.Time, total+1) // by seq; zero = not sent
	rtts := make([]time.Duration, total+1)
	received := 0
	got := func(seq int, at time.Time) {
		if seq < 1 || seq > total || sentAt[seq].IsZero() || rtts[seq] != 0 {
			return // not ours, or a duplicate
		}
		if rtt := at.Sub(sentAt[seq]); rtt <= timeout {
			rtts[seq] = max(rtt, 1) // 0 means "no reply"
			if seq > p.Warmup {
				received++
			}
		}
	}
	rd := newReplyReader(fd, id)
	fail := func(err error) (RTTResult, error) {
		return RTTResult{}, fmt.Errorf("rtt probe from %s to %s: %w", p.Netns, p.Dst, err)
	}

	dst := &unix.SockaddrInet4{Addr: p.Dst.As4()}
	payload := make([]byte, 56) // ping's default size
	copy(payload, "overlaylab-rtt")
	start := time.Now()
	for seq := 1; seq <= total; seq++ {
		if err := ctx.Err(); err != nil {
			return RTTResult{}, err
		}
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		wb, err := msg.Marshal(nil)
		if err != nil {
			return RTTResult{}, err
		}
		sentAt[seq] = time.Now()
		if err := unix.Sendto(fd, wb, 0, dst); err != nil {
			return fail(fmt.Errorf("send: %w", err))
		}
		// Wait for this reply (or the next send), then sleep until the
		// next send is due, as ping does: sleeping in the Go scheduler
		// rather than in recvmsg's coarse timeout measured closer to ping.
		next := start.Add(time.Duration(seq) * p.Interval)
		if err := rd.until(next, seq, got); err != nil {
			return fail(err)
		}
		time.Sleep(time.Until(next))
	}
	// Late replies: until every counted probe answered or the last one
	// timed out.
	deadline := time.Now().Add(timeout)
	for received < p.Count && time.Now().Before(deadline) && ctx.Err() == nil {
		next := time.Now().Add(50 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		if err := rd.until(next, 0, got); err != nil {
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		return RTTResult{}, err
	}
	r := RTTResult{Sent: p.Count}
	for seq := p.Warmup + 1; seq <= total; seq++ {
		if rtts[seq] > 0 {
			r.RTTs = append(r.RTTs, rtts[seq])
		}
	}
	r.Received = len(r.RTTs)
	if r.Received == 0 {
		return r, fmt.Errorf("rtt probe from %s to %s: no replies to %d echoes", p.Netns, p.Dst, p.Count)
	}
	return r, nil
}

// rawICMP opens a blocking raw ICMP socket inside a namespace, with kernel
// receive timestamps.
func rawICMP(ns string) (int, error) {
	fd := -1
	err := nsutil.DoNamed(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("raw icmp socket in %s: %w", ns, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw icmp socket in %s: SO_TIMESTAMPNS: %w", ns, err)
	}
	return fd, nil
}

// replyReader reads echo replies carrying one id from a blocking socket.
type replyReader struct {
	fd, id   int
	buf, oob []byte
}

func newReplyReader(fd, id int) *replyReader {
	return &replyReader{fd: fd, id: id, buf: make([]byte, 1500), oob: make([]byte, unix.CmsgSpace(16)*2)}
}

// until reads replies, calling got with each one's sequence number and
// kernel arrival time, until the deadline passes or the reply to want
// (when not 0) came.
func (r *replyReader) until(deadline time.Time, want int, got func(seq int, at time.Time)) error {
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil
		}
		tv := unix.NsecToTimeval(max(wait, time.Microsecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		n, oobn, _, _, err := unix.Recvmsg(r.fd, r.buf, r.oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		at := time.Now()
		if ts, ok := kernelTimestamp(r.oob[:oobn]); ok {
			at = ts
		}
		if seq, ok := parseEchoReply(r.buf[:n], r.id); ok {
			got(seq, at)
			if seq == want {
				return nil
			}
		}
	}
}

// parseEchoReply takes an IPv4 packet as a raw socket delivers it and
// returns the sequence number of an echo reply carrying id.
func parseEchoReply(pkt []byte, id int) (int, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl+8 {
		return 0, false
	}
	m := pkt[ihl:]
	if m[0] != byte(ipv4.ICMPTypeEchoReply) || m[1] != 0 {
		return 0, false
	}
	if int(m[4])<<8|int(m[5]) != id {
		return 0, false
	}
	return int(m[6])<<8 | int(m[7]), true
}

// kernelTimestamp finds SCM_TIMESTAMPNS among control messages.
func kernelTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		// struct timespec: two longs, 8 bytes each on 64-bit, 4 on 32-bit.
		switch len(m.Data) {
		case 16:
			sec, nsec := binary.NativeEndian.Uint64(m.Data), binary.NativeEndian.Uint64(m.Data[8:])
			return time.Unix(int64(sec), int64(nsec)), true
		case 8:
			sec, nsec := binary.NativeEndian.Uint32(m.Data), binary.NativeEndian.Uint32(m.Data[4:])
			return time.Unix(int64(int32(sec)), int64(int32(nsec))), true
		}
	}
	return time.Time{}, false
}
