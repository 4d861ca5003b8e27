package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Long-lived flows and single TCP connection attempts between containers:
// sockets opened inside the source and target namespaces (a socket keeps
// its namespace), traffic paced so that a check measures the path, not the
// machine.

// FlowOptions configure a flow.
type FlowOptions struct {
	Proto string // tcp (default) or udp
	Port  int    // default 5301
	// RateBps paces the sender (default 20 Mbit/s): enough to show a
	// stall at once, far below what the lab carries.
	RateBps uint64
}

// FlowSample is the bytes received by a moment of the flow.
type FlowSample struct {
	At    time.Duration `json:"atNs"`
	Bytes int64         `json:"bytes"`
}

// FlowResult is what a flow saw, at the receiver.
type FlowResult struct {
	Proto    string        `json:"proto"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"durationNs"`
	// MaxStall is the longest time no byte arrived (including the end).
	MaxStall time.Duration `json:"maxStallNs"`
	// Broken says why a TCP connection ended before the flow was stopped
	// (a reset, a timeout); "" while it held.
	Broken  string       `json:"broken,omitempty"`
	Samples []FlowSample `json:"samples"`
}

// RateBps is the flow's average rate at the receiver.
func (r *FlowResult) RateBps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes*8) / r.Duration.Seconds()
}

// Flow is a running flow.
type Flow struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	res     FlowResult
	start   time.Time
	last    time.Time // the last byte received
	closers []io.Closer
}

const sampleEvery = 100 * time.Millisecond

// StartFlow starts a paced flow from one endpoint to another and returns
// once the connection (tcp) is up.
func StartFlow(ctx context.Context, from, to Endpoint, o FlowOptions) (*Flow, error) {
	if o.Proto == "" {
		o.Proto = "tcp"
	}
	if o.Port == 0 {
		o.Port = 5301
	}
	if o.RateBps == 0 {
		o.RateBps = 20e6
	}
	addr := net.JoinHostPort(to.IP.String(), strconv.Itoa(o.Port))
	ctx, cancel := context.WithCancel(ctx)
	f := &Flow{cancel: cancel, done: make(chan struct{}), res: FlowResult{Proto: o.Proto}}
	var err error
	switch o.Proto {
	case "tcp":
		err = f.startTCP(ctx, from, to, addr, o)
	case "udp":
		err = f.startUDP(ctx, from, to, addr, o)
	default:
		err = fmt.Errorf("flow proto %q: use tcp or udp", o.Proto)
	}
	if err != nil {
		cancel()
		f.closeAll()
		return nil, err
	}
	return f, nil
}

// listenIn listens on a TCP address inside the named namespace.
func listenIn(ctx context.Context, ns, addr string) (net.Listener, error) {
	return openIn(ns, func() (net.Listener, error) { return (&net.ListenConfig{}).Listen(ctx, "tcp4", addr) })
}

func (f *Flow) closeAll() {
	for _, c := range f.closers {
		c.Close()
	}
}

// received records n bytes at the receiver.
func (f *Flow) received(n int) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if gap := now.Sub(f.last); gap > f.res.MaxStall {
		f.res.MaxStall = gap
	}
	f.last = now
	f.res.Bytes += int64(n)
}

func (f *Flow) broke(why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.res.Broken == "" {
		f.res.Broken = why
	}
}

func (f *Flow) startTCP(ctx context.Context, from, to Endpoint, addr string, o FlowOptions) error {
	ln, err := listenIn(ctx, to.Netns, addr)
	if err != nil {
		return fmt.Errorf("flow: listen on %s in %s: %w", addr, to.Netns, err)
	}
	f.closers = append(f.closers, ln)
	dial := nsutil.DialContext(from.Netns)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := dial(dctx, "tcp4", addr)
	if err != nil {
		return fmt.Errorf("flow: connect %s → %s: %w", from.Name, addr, err)
	}
	f.closers = append(f.closers, c)
	srv, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("flow: accept on %s: %w", addr, err)
	}
	f.closers = append(f.closers, srv)
	f.begin()
	go f.send(ctx, c, o.RateBps, 32<<10)
	go f.receive(ctx, srv)
	return nil
}

func (f *Flow) startUDP(ctx context.Context, from, to Endpoint, addr string, o FlowOptions) error {
	pc, err := openIn(to.Netns, func() (net.PacketConn, error) {
		return (&net.ListenConfig{}).ListenPacket(ctx, "udp4", addr)
	})
	if err != nil {
		return fmt.Errorf("flow: listen on udp %s in %s: %w", addr, to.Netns, err)
	}
	f.closers = append(f.closers, pc)
	dial := nsutil.DialContext(from.Netns)
	c, err := dial(ctx, "udp4", addr)
	if err != nil {
		return fmt.Errorf("flow: udp socket %s → %s: %w", from.Name, addr, err)
	}
	f.closers = append(f.closers, c)
	f.begin()
	go f.send(ctx, c, o.RateBps, 1200)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			f.received(n)
		}
	}()
	return nil
}

func (f *Flow) begin() {
	f.start = time.Now()
	f.last = f.start
	go f.sample()
}

// sample records the byte count every sampleEvery, for the report's plot.
func (f *Flow) sample() {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case now := <-t.C:
			f.mu.Lock()
			f.res.Samples = append(f.res.Samples, FlowSample{At: now.Sub(f.start), Bytes: f.res.Bytes})
			f.mu.Unlock()
		}
	}
}

// send writes chunks paced to rate until ctx ends. A write error on a TCP
// connection (reset, timeout) breaks the flow.
func (f *Flow) send(ctx context.Context, c net.Conn, rate uint64, chunk int) {
	buf := make([]byte, chunk)
	every := time.Duration(float64(chunk*8) / float64(rate) * float64(time.Second))
	next := time.Now()
	for ctx.Err() == nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, err := c.Write(buf)
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			continue // a full send buffer during an outage: keep trying
		case errors.Is(err, syscall.ECONNREFUSED) && c.LocalAddr().Network() == "udp":
			// An ICMP unreachable for a datagram: the path, not the flow.
		case ctx.Err() != nil:
			return
		default:
			if c.LocalAddr().Network() == "tcp" {
				f.broke("send: " + err.Error())
				return
			}
		}
		next = next.Add(every)
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		} else {
			next = time.Now()
		}
	}
}

func (f *Flow) receive(ctx context.Context, c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			f.received(n)
		}
		if err != nil {
			if ctx.Err() == nil {
				f.broke("receive: " + err.Error())
			}
			return
		}
	}
}

// Stop ends the flow and returns what it saw.
func (f *Flow) Stop() FlowResult {
	end := time.Now()
	f.cancel()
	close(f.done)
	f.closeAll()
	f.mu.Lock()
	defer f.mu.Unlock()
	if gap := end.Sub(f.last); gap > f.res.MaxStall {
		f.res.MaxStall = gap
	}
	f.res.Duration = end.Sub(f.start)
	f.res.Samples = append(f.res.Samples, FlowSample{At: f.res.Duration, Bytes: f.res.Bytes})
	return f.res
}

// TCP connection outcomes.
const (
	TCPConnect = "connect"
	TCPRefused = "refused"
	TCPTimeout = "timeout"
)

// TryTCP makes one TCP connection attempt from one endpoint to another's
// port, listening there first when listen is set, and says how it ended:
// connect, refused (a reset) or timeout (no answer within timeout).
func TryTCP(ctx context.Context, from, to Endpoint, port int, listen bool, timeout time.Duration) (string, error) {
	addr := net.JoinHostPort(to.IP.String(), strconv.Itoa(port))
	if listen {
		ln, err := listenIn(ctx, to.Netns, addr)
		if err != nil {
			return "", fmt.Errorf("tcp: listen on %s in %s: %w", addr, to.Netns, err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := nsutil.DialContext(from.Netns)(dctx, "tcp4", addr)
	if err == nil {
		c.Close()
		return TCPConnect, nil
	}
	if got, ok := tcpOutcome(err); ok {
		return got, nil
	}
	return "", fmt.Errorf("tcp %s → %s: %w", from.Name, addr, err)
}

// tcpOutcome names what a failed connection attempt met; ok=false for an
// error that is not an answer from the network.
func tcpOutcome(err error) (string, bool) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return TCPRefused, true
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT):
		// The dialer puts ctx's deadline on the socket too: whichever
		// fires first, context's or the socket's (os.ErrDeadlineExceeded,
		// "i/o timeout"), it is the same timeout.
		return TCPTimeout, true
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return "unreachable", true
	}
	return "", false
}
