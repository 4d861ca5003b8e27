package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// RTTProbe sends ICMP echo requests from a namespace to an address, one
// every Interval, and measures each round trip. Replies are timestamped by
// the kernel (SO_TIMESTAMPNS) when they arrive, so the figure does not
// include the time Go takes to wake the reading goroutine.
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
	// An ID of our own: a raw ICMP socket sees every echo reply in the
	// namespace, including other probers'.
	id := int(uint32(os.Getpid())*31+rttRun.Add(1)*7919) & 0xffff
	total := p.Warmup + p.Count
	sentAt := make([]atomic.Int64, total+1) // by seq; 0 = not sent
	var received atomic.Int64
	rtts := make([]time.Duration, total+1)
	var mu sync.Mutex

	var stop atomic.Bool
	readerDone := make(chan error, 1)
	go func() {
		readerDone <- readReplies(fd, id, &stop, func(seq int, at time.Time) {
			if seq < 1 || seq > total {
				return
			}
			sent := sentAt[seq].Load()
			if sent == 0 {
				return
			}
			rtt := at.Sub(time.Unix(0, sent))
			mu.Lock()
			defer mu.Unlock()
			if rtts[seq] != 0 || rtt > timeout {
				return // a duplicate, or too late to count
			}
			rtts[seq] = max(rtt, 1) // 0 means "no reply"
			if seq > p.Warmup {
				received.Add(1)
			}
		})
	}()
	finish := func() error {
		stop.Store(true)
		err := <-readerDone
		unix.Close(fd)
		return err
	}

	dst := &unix.SockaddrInet4{Addr: p.Dst.As4()}
	payload := make([]byte, 56) // ping's default size
	copy(payload, "overlaylab-rtt")
	tick := time.NewTicker(p.Interval)
	defer tick.Stop()
	for seq := 1; seq <= total; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		wb, err := msg.Marshal(nil)
		if err != nil {
			finish()
			return RTTResult{}, err
		}
		sentAt[seq].Store(time.Now().UnixNano())
		if err := unix.Sendto(fd, wb, 0, dst); err != nil {
			finish()
			return RTTResult{}, fmt.Errorf("rtt probe from %s to %s: send: %w", p.Netns, p.Dst, err)
		}
		select {
		case <-ctx.Done():
			finish()
			return RTTResult{}, ctx.Err()
		case <-tick.C:
		}
	}
	// Late replies: wait until every counted probe answered or the last one
	// timed out.
	deadline := time.Now().Add(timeout)
	for int(received.Load()) < p.Count && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if err := finish(); err != nil {
		return RTTResult{}, fmt.Errorf("rtt probe from %s to %s: %w", p.Netns, p.Dst, err)
	}
	if ctx.Err() != nil {
		return RTTResult{}, ctx.Err()
	}
	r := RTTResult{Sent: p.Count}
	mu.Lock()
	for seq := p.Warmup + 1; seq <= total; seq++ {
		if rtts[seq] > 0 {
			r.RTTs = append(r.RTTs, rtts[seq])
		}
	}
	mu.Unlock()
	r.Received = len(r.RTTs)
	if r.Received == 0 {
		return r, fmt.Errorf("rtt probe from %s to %s: no replies to %d echoes", p.Netns, p.Dst, p.Count)
	}
	return r, nil
}

// rawICMP opens a blocking raw ICMP socket inside a namespace, with kernel
// receive timestamps and a short receive timeout so the reader can notice
// when to stop.
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
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw icmp socket in %s: SO_RCVTIMEO: %w", ns, err)
	}
	return fd, nil
}

// readReplies reads echo replies with our id until stop is set, calling
// got with each reply's sequence number and kernel arrival time. It runs on
// its own goroutine, blocked in recvmsg (a thread of its own while it
// waits), which is what makes its wake-up latency irrelevant.
func readReplies(fd, id int, stop *atomic.Bool, got func(seq int, at time.Time)) error {
	buf := make([]byte, 1500)
	oob := make([]byte, unix.CmsgSpace(16)*2)
	for !stop.Load() {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		at := time.Now()
		if ts, ok := kernelTimestamp(oob[:oobn]); ok {
			at = ts
		}
		seq, ok := parseEchoReply(buf[:n], id)
		if ok {
			got(seq, at)
		}
	}
	return nil
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
