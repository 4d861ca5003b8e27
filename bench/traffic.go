package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// sendBuf is what the sender writes per call.
const sendBuf = 128 << 10

// Transfer describes one TCP throughput measurement: streams connections
// from a socket made in FromNetns to a listener made in ToNetns at ToIP.
type Transfer struct {
	FromNetns string
	ToNetns   string
	ToIP      netip.Addr
	Streams   int
	Duration  time.Duration // the whole transfer, warm-up included
	Warmup    time.Duration // not measured
	// During, when set, runs while the measured interval lasts (from the end
	// of the warm-up until the end of the transfer); Transfer waits for it.
	During func(ctx context.Context)
}

// TransferResult is what the receiver counted over the measured interval.
type TransferResult struct {
	Bytes    int64
	Interval time.Duration
}

// Gbps is the received goodput in Gbit/s.
func (r TransferResult) Gbps() float64 {
	if r.Interval <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Interval.Seconds() / 1e9
}

// sink accepts connections and discards what they carry, counting bytes.
type sink struct {
	ln    net.Listener
	bytes atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// listenIn opens a TCP listener inside a namespace; the listening socket
// (and every connection it accepts) stays in that namespace.
func listenIn(ns string, ip netip.Addr) (net.Listener, error) {
	var ln net.Listener
	err := nsutil.DoNamed(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(ip.String(), "0"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", ip, ns, err)
	}
	return ln, nil
}

func newSink(ln net.Listener) *sink {
	s := &sink{ln: ln}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 256<<10)
			for {
				n, err := c.Read(buf)
				s.bytes.Add(int64(n))
				if err != nil {
					// EOF or a reset when the sender stops, or our own
					// close: the count is what matters.
					return
				}
			}
		}()
	}
}

// close stops accepting, closes every connection and waits for the readers.
func (s *sink) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Run performs the transfer: the receiver listens, the sender opens
// Streams connections and writes 128 KiB buffers as fast as they are
// taken; the receiver's byte count is sampled after the warm-up and at the
// end, and the difference over the elapsed time is the result.
func (t Transfer) Run(ctx context.Context) (TransferResult, error) {
	if t.Streams < 1 {
		return TransferResult{}, fmt.Errorf("transfer: %d streams", t.Streams)
	}
	if t.Duration <= t.Warmup {
		return TransferResult{}, fmt.Errorf("transfer: duration %s must exceed the warm-up %s", t.Duration, t.Warmup)
	}
	ln, err := listenIn(t.ToNetns, t.ToIP)
	if err != nil {
		return TransferResult{}, err
	}
	s := newSink(ln)
	defer s.close()
	addr := ln.Addr().String()

	dial := nsutil.DialContext(t.FromNetns)
	conns := make([]net.Conn, 0, t.Streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range t.Streams {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := dial(dctx, "tcp4", addr)
		cancel()
		if err != nil {
			return TransferResult{}, fmt.Errorf("connect %d/%d from %s to %s: %w", i+1, t.Streams, t.FromNetns, addr, err)
		}
		conns = append(conns, c)
	}

	var stopping atomic.Bool
	var wg sync.WaitGroup
	sendErrs := make([]error, len(conns))
	buf := make([]byte, sendBuf)
	for i := range buf {
		buf[i] = byte(i * 7) // not all zeroes, in case anything on the path compresses
	}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopping.Load() {
				if _, err := c.Write(buf); err != nil {
					if !stopping.Load() {
						sendErrs[i] = err
					}
					return
				}
			}
		}()
	}
	stopSenders := func() {
		stopping.Store(true)
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}

	start := time.Now()
	if err := sleepCtx(ctx, t.Warmup); err != nil {
		stopSenders()
		return TransferResult{}, err
	}
	b0, t0 := s.bytes.Load(), time.Now()
	var during sync.WaitGroup
	dctx, dcancel := context.WithDeadline(ctx, start.Add(t.Duration))
	if t.During != nil {
		during.Add(1)
		go func() {
			defer during.Done()
			t.During(dctx)
		}()
	}
	err = sleepCtx(ctx, time.Until(start.Add(t.Duration)))
	b1, t1 := s.bytes.Load(), time.Now()
	dcancel()
	during.Wait()
	stopSenders()
	if err != nil {
		return TransferResult{}, err
	}
	if err := errors.Join(sendErrs...); err != nil {
		return TransferResult{}, fmt.Errorf("send to %s: %w", addr, err)
	}
	r := TransferResult{Bytes: b1 - b0, Interval: t1.Sub(t0)}
	if r.Bytes <= 0 {
		return r, fmt.Errorf("transfer to %s: nothing received in %s", addr, r.Interval.Round(time.Millisecond))
	}
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
