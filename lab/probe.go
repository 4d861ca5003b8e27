package lab

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
	"golang.org/x/time/rate"
)

// The lab's one ICMP engine. Every check that pings (up's matrix, scenario
// ping windows, DF and path-MTU probes, the bench's round-trip times) sends
// through an icmpConn: a raw ICMP socket opened inside the source namespace
// (it keeps that namespace whatever thread uses it), kernel receive
// timestamps, replies matched by our echo ID and the target's address.

// Endpoint is one thing that can ping and be pinged; one without a Netns is
// only pinged.
type Endpoint struct {
	Name  string // "h1/c1"
	Netns string
	IP    netip.Addr
}

// icmpConn is a raw ICMP socket in one namespace, with its echo ID.
type icmpConn struct {
	fd       int
	id       int
	ns       string
	buf, oob []byte
}

var probeRun atomic.Uint32

// nextEchoID is a fresh ICMP echo ID per socket: conntrack remembers ICMP
// IDs for a while, and a reused one could ride on an old NAT mapping.
func nextEchoID() int {
	return int(probeRun.Add(1)*7919+uint32(os.Getpid())*31) & 0xffff
}

func openICMP(ns string) (*icmpConn, error) {
	fd, err := openIn(ns, func() (int, error) {
		return unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("icmp socket in %s: SO_TIMESTAMPNS: %w", ns, err)
	}
	// Room for the replies of a source with many targets (a raw socket
	// queues every ICMP packet of its namespace). Best effort: without
	// CAP_NET_ADMIN the default stays.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20)
	return &icmpConn{fd: fd, id: nextEchoID(), ns: ns, buf: make([]byte, 65536), oob: make([]byte, unix.CmsgSpace(16)*2)}, nil
}

func (c *icmpConn) close() { unix.Close(c.fd) }

// setDF sets or clears the Don't Fragment bit on what the socket sends (with
// it set, a packet larger than the known path MTU fails with EMSGSIZE).
func (c *icmpConn) setDF(df bool) error {
	v := unix.IP_PMTUDISC_DONT
	if df {
		v = unix.IP_PMTUDISC_PROBE // DF on, without the kernel's own PMTU cache refusing sizes
	}
	return unix.SetsockoptInt(c.fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, v)
}

// echoHeader is the IPv4 and ICMP header bytes of an echo request: an IP
// packet of size bytes carries size-28 bytes of payload.
const echoHeader = 28

// send sends an echo request; size is the whole IP packet (0: ping's
// default 84 bytes).
func (c *icmpConn) send(dst netip.Addr, seq, size int) error {
	if size == 0 {
		size = 84
	}
	if size < echoHeader+8 {
		size = echoHeader + 8
	}
	payload := make([]byte, size-echoHeader)
	copy(payload, "overlaylab-probe")
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: c.id, Seq: seq & 0xffff, Data: payload}}
	wb, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	return unix.Sendto(c.fd, wb, 0, &unix.SockaddrInet4{Addr: dst.As4()})
}

// replyKind is what came back.
type replyKind int

const (
	echoReply  replyKind = iota
	fragNeeded           // ICMP destination unreachable, fragmentation needed (MTU in reply.mtu)
	unreachable
)

type reply struct {
	kind replyKind
	src  netip.Addr // the echo's target (for errors: the target of the quoted echo)
	seq  int
	mtu  int // fragNeeded: the next-hop MTU
	at   time.Time
}

// read waits until deadline for the next reply to one of our echoes; ok is
// false when the deadline passed.
func (c *icmpConn) read(deadline time.Time) (reply, bool, error) {
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return reply{}, false, nil
		}
		tv := unix.NsecToTimeval(max(wait, time.Microsecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return reply{}, false, fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		n, oobn, _, _, err := unix.Recvmsg(c.fd, c.buf, c.oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return reply{}, false, fmt.Errorf("receive in %s: %w", c.ns, err)
		}
		at := time.Now()
		if ts, ok := kernelTimestamp(c.oob[:oobn]); ok {
			at = ts
		}
		if r, ok := parseReply(c.buf[:n], c.id); ok {
			r.at = at
			return r, true, nil
		}
	}
}

// parseReply reads an IPv4 packet as a raw ICMP socket delivers it: an echo
// reply carrying id, or an ICMP error quoting one of our echoes.
func parseReply(pkt []byte, id int) (reply, bool) {
	ihl, ok := ipv4Header(pkt)
	if !ok || len(pkt) < ihl+8 {
		return reply{}, false
	}
	m := pkt[ihl:]
	switch m[0] {
	case byte(ipv4.ICMPTypeEchoReply):
		if m[1] != 0 || int(binary.BigEndian.Uint16(m[4:])) != id {
			return reply{}, false
		}
		src, _ := netip.AddrFromSlice(pkt[12:16])
		return reply{kind: echoReply, src: src, seq: int(binary.BigEndian.Uint16(m[6:]))}, true
	case byte(ipv4.ICMPTypeDestinationUnreachable):
		// The quoted packet: our echo request's IP header and 8 bytes.
		q := m[8:]
		qihl, ok := ipv4Header(q)
		if !ok || len(q) < qihl+8 || q[9] != unix.IPPROTO_ICMP || q[qihl] != byte(ipv4.ICMPTypeEcho) ||
			int(binary.BigEndian.Uint16(q[qihl+4:])) != id {
			return reply{}, false
		}
		dst, _ := netip.AddrFromSlice(q[16:20])
		r := reply{kind: unreachable, src: dst, seq: int(binary.BigEndian.Uint16(q[qihl+6:]))}
		if m[1] == 4 { // fragmentation needed and DF set
			r.kind, r.mtu = fragNeeded, int(binary.BigEndian.Uint16(m[6:]))
		}
		return r, true
	}
	return reply{}, false
}

func ipv4Header(pkt []byte) (int, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	return ihl, ihl >= 20 && len(pkt) >= ihl
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

// ProbeOptions tune Probe.
type ProbeOptions struct {
	// Interval between rounds: each round sends one echo to every pair
	// still probed.
	Interval time.Duration
	// UntilAnswered probes a pair only until it answered once and ends
	// when every pair has (a connectivity check); otherwise every pair is
	// probed every round until ctx ends (a window that counts loss).
	UntilAnswered bool
	// Size is each echo's IP packet size (0: 84, as ping); DF sets the
	// Don't Fragment bit.
	Size int
	DF   bool
	// Rate caps echo requests per second over all sources (0: probeRate).
	Rate int
	// ReplyTimeout is how late a reply may come and still count (default
	// 1 s, as `ping -W 1`): a reply that sat in a queue through an outage
	// is not an answer.
	ReplyTimeout time.Duration
}

// Counts is what a probe saw: Sent[i][j] echoes from i to j and
// Received[i][j] timely replies to them.
type Counts struct {
	Sent, Received [][]int
}

// probeRate caps echo requests per second over all sources: a burst of
// thousands at once would overflow TUN queues and socket buffers and be
// lost on every retry alike. ProbeOptions.Rate may raise it for a large
// lab, whose echoes spread over many sources and many agents.
const probeRate = 5000

// Probe sends echoes between the pairs selected by pair(i, j) (sources need
// a Netns) and counts sends and timely replies per pair. It returns when
// ctx ends or, with UntilAnswered, when every pair answered.
func Probe(ctx context.Context, eps []Endpoint, pair func(i, j int) bool, o ProbeOptions) (*Counts, error) {
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = time.Second
	}
	n := len(eps)
	c := &Counts{Sent: make([][]int, n), Received: make([][]int, n)}
	for i := range n {
		c.Sent[i] = make([]int, n)
		c.Received[i] = make([]int, n)
	}
	if o.Rate <= 0 {
		o.Rate = probeRate
	}
	lim := rate.NewLimiter(rate.Limit(o.Rate), 200)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards c across sources
	errs := make([]error, n)
	for i := range n {
		var targets []int
		for j := range n {
			if j != i && eps[i].Netns != "" && pair(i, j) {
				targets = append(targets, j)
			}
		}
		if len(targets) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = probeFrom(ctx, eps, i, targets, c, &mu, lim, o)
		}()
	}
	wg.Wait()
	return c, errors.Join(errs...)
}

// probeFrom runs one source's socket: a sender that goes round the targets
// at the shared rate, and a reader that takes replies as they come, so that
// a source with hundreds of targets never lets replies pile up in its
// socket while it is still sending.
func probeFrom(ctx context.Context, eps []Endpoint, i int, targets []int, c *Counts, mu *sync.Mutex, lim *rate.Limiter, o ProbeOptions) error {
	conn, err := openICMP(eps[i].Netns)
	if err != nil {
		return err
	}
	defer conn.close()
	if o.DF {
		if err := conn.setDF(true); err != nil {
			return fmt.Errorf("DF on the icmp socket in %s: %w", eps[i].Netns, err)
		}
	}
	t := &tracker{byIP: map[netip.Addr]int{}, inflight: map[int]pending{}, answered: map[int]bool{},
		want: len(targets), until: o.UntilAnswered, all: make(chan struct{})}
	for _, j := range targets {
		t.byIP[eps[j].IP] = j
	}
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		readErr <- t.read(conn, stop, o.ReplyTimeout, func(j int) {
			mu.Lock()
			c.Received[i][j]++
			mu.Unlock()
		})
	}()
	finish := func(collect bool) error {
		if collect { // the last round's replies may still be on their way
			select {
			case <-t.all:
			case <-time.After(o.ReplyTimeout):
			}
		}
		close(stop)
		return <-readErr
	}
	seq := 0
	for {
		for _, j := range targets {
			if t.done(j) {
				continue
			}
			if err := lim.Wait(ctx); err != nil {
				return finish(true) // the end: what answered is counted
			}
			seq = (seq + 1) & 0xffff
			t.sent(seq, j)
			mu.Lock()
			c.Sent[i][j]++
			mu.Unlock()
			// A send error (EMSGSIZE for a DF echo above the known path
			// MTU, a route that is gone) is an unanswered probe.
			_ = conn.send(eps[j].IP, seq, o.Size)
		}
		select {
		case <-t.all:
			return finish(false)
		case <-ctx.Done():
			return finish(true)
		case err := <-readErr: // the socket failed
			close(stop)
			return err
		case <-time.After(o.Interval):
		}
	}
}

// pending is an echo on its way: its target and when it left.
type pending struct {
	to   int
	sent time.Time
}

// tracker is one source's echoes in flight and the targets that answered,
// shared by its sender and its reader.
type tracker struct {
	mu       sync.Mutex
	byIP     map[netip.Addr]int
	inflight map[int]pending
	answered map[int]bool
	want     int
	until    bool          // UntilAnswered
	all      chan struct{} // closed when every target answered (until only)
}

func (t *tracker) sent(seq, to int) {
	t.mu.Lock()
	t.inflight[seq] = pending{to: to, sent: time.Now()}
	t.mu.Unlock()
}

// done says that target j needs no more echoes.
func (t *tracker) done(j int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.until && t.answered[j]
}

// read takes replies until stop is closed, calling answer for each timely
// reply to one of our echoes from the target it went to. It returns nil
// when stopped, or the socket's error.
func (t *tracker) read(conn *icmpConn, stop <-chan struct{}, timeout time.Duration, answer func(j int)) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		r, ok, err := conn.read(time.Now().Add(50 * time.Millisecond))
		if err != nil {
			return err
		}
		if !ok || r.kind != echoReply {
			continue
		}
		t.mu.Lock()
		p, known := t.inflight[r.seq]
		if known && t.byIP[r.src] == p.to {
			delete(t.inflight, r.seq)
			if r.at.Sub(p.sent) <= timeout {
				answer(p.to)
				if !t.answered[p.to] {
					t.answered[p.to] = true
					if t.until && len(t.answered) == t.want {
						close(t.all)
					}
				}
			}
		}
		t.mu.Unlock()
	}
}

// RTTProbe measures round trips from a namespace to one address, as ping
// does: one echo, wait for its reply (or the next send time), sleep.
type RTTProbe struct {
	Netns    string
	Dst      netip.Addr
	Warmup   int // probes sent first and not counted (neighbour caches, first-packet paths)
	Count    int // counted probes
	Interval time.Duration
	Timeout  time.Duration // how long a reply may take to count (default 1s)
}

// RTTResult holds the round trips of the counted probes that were answered.
type RTTResult struct {
	Sent     int
	Received int
	RTTs     []time.Duration
}

// Run sends the probes and measures each reply by the kernel's receive
// timestamp.
func (p RTTProbe) Run(ctx context.Context) (RTTResult, error) {
	if p.Count < 1 || p.Interval <= 0 {
		return RTTResult{}, fmt.Errorf("rtt probe: count %d, interval %s", p.Count, p.Interval)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	conn, err := openICMP(p.Netns)
	if err != nil {
		return RTTResult{}, err
	}
	defer conn.close()
	total := p.Warmup + p.Count
	sentAt := make([]time.Time, total+1) // by seq; zero = not sent
	rtts := make([]time.Duration, total+1)
	received := 0
	got := func(r reply) bool {
		if r.kind != echoReply || r.src != p.Dst || r.seq < 1 || r.seq > total || sentAt[r.seq].IsZero() || rtts[r.seq] != 0 {
			return false // not ours, or a duplicate
		}
		if rtt := r.at.Sub(sentAt[r.seq]); rtt <= timeout {
			rtts[r.seq] = max(rtt, 1) // 0 means "no reply"
			if r.seq > p.Warmup {
				received++
			}
		}
		return true
	}
	fail := func(err error) (RTTResult, error) {
		return RTTResult{}, fmt.Errorf("rtt probe from %s to %s: %w", p.Netns, p.Dst, err)
	}
	start := time.Now()
	for seq := 1; seq <= total; seq++ {
		if err := ctx.Err(); err != nil {
			return RTTResult{}, err
		}
		sentAt[seq] = time.Now()
		if err := conn.send(p.Dst, seq, 0); err != nil {
			return fail(fmt.Errorf("send: %w", err))
		}
		next := start.Add(time.Duration(seq) * p.Interval)
		for {
			r, ok, err := conn.read(next)
			if err != nil {
				return fail(err)
			}
			if !ok || (got(r) && r.seq == seq) {
				break
			}
		}
		time.Sleep(time.Until(next))
	}
	deadline := time.Now().Add(timeout)
	for received < p.Count && time.Now().Before(deadline) && ctx.Err() == nil {
		r, ok, err := conn.read(deadline)
		if err != nil {
			return fail(err)
		}
		if ok {
			got(r)
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

// Micros returns the round trips in microseconds.
func (r RTTResult) Micros() []float64 {
	out := make([]float64, len(r.RTTs))
	for i, d := range r.RTTs {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	return out
}
