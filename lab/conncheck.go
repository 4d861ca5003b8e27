package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/time/rate"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Endpoint is one thing that can ping and be pinged; one without a Netns is
// only pinged.
type Endpoint struct {
	Name  string // "h1/c1"
	Netns string
	IP    netip.Addr
}

// Matrix is the outcome of a connectivity check: for each ordered pair, did an
// echo request get its reply.
type Matrix struct {
	Endpoints []Endpoint
	Expected  [][]bool
	Actual    [][]bool
	// Probed marks the pairs that were probed; a sampled matrix leaves
	// some out, and they count neither way.
	Probed [][]bool
}

// Pairs counts the probed pairs.
func (m *Matrix) Pairs() int {
	n := 0
	for i := range m.Probed {
		for j := range m.Probed[i] {
			if m.Probed[i][j] {
				n++
			}
		}
	}
	return n
}

// OK reports whether actual equals expected on every probed pair.
func (m *Matrix) OK() bool { return m.Failures() == 0 }

// Failures counts the probed pairs where actual differs from expected.
func (m *Matrix) Failures() int {
	n := 0
	for i := range m.Expected {
		for j := range m.Expected[i] {
			if m.Probed[i][j] && m.Expected[i][j] != m.Actual[i][j] {
				n++
			}
		}
	}
	return n
}

// maxDrawn is the largest matrix drawn as a grid; beyond it only the wrong
// pairs are listed.
const maxDrawn = 24

// String draws expected vs actual side by side; a wrong cell is marked.
func (m *Matrix) String() string {
	var b strings.Builder
	w := 6
	for _, e := range m.Endpoints {
		w = max(w, len(e.Name)+1)
	}
	cell := func(exp, act bool) string {
		switch {
		case exp && act:
			return "ok"
		case !exp && !act:
			return "-"
		case exp && !act:
			return "FAIL"
		default:
			return "LEAK"
		}
	}
	if len(m.Endpoints) > maxDrawn {
		fmt.Fprintf(&b, "%d endpoints, %d pairs probed; wrong pairs:\n", len(m.Endpoints), m.Pairs())
		shown := 0
		for i, src := range m.Endpoints {
			for j, dst := range m.Endpoints {
				if !m.Probed[i][j] || m.Expected[i][j] == m.Actual[i][j] {
					continue
				}
				if shown++; shown > 50 {
					continue
				}
				fmt.Fprintf(&b, "  %s -> %s: %s\n", src.Name, dst.Name, cell(m.Expected[i][j], m.Actual[i][j]))
			}
		}
		if shown > 50 {
			fmt.Fprintf(&b, "  ... and %d more\n", shown-50)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%-*s", w, "from\\to")
	for _, e := range m.Endpoints {
		fmt.Fprintf(&b, " %-*s", w, e.Name)
	}
	b.WriteString("\n")
	for i, src := range m.Endpoints {
		fmt.Fprintf(&b, "%-*s", w, src.Name)
		for j := range m.Endpoints {
			s := ""
			if m.Probed[i][j] {
				s = cell(m.Expected[i][j], m.Actual[i][j])
			}
			fmt.Fprintf(&b, " %-*s", w, s)
		}
		b.WriteString("\n")
	}
	b.WriteString("ok: reply as expected; -: no reply, as expected; FAIL: expected a reply, got none; LEAK: got a reply that should not exist\n")
	return b.String()
}

// PingMatrix probes every ordered pair of distinct endpoints with ICMP echo
// from inside the source namespace, all in parallel, retrying unanswered
// pairs every interval until each expected pair answered or ctx ends. expect
// says which pairs should answer (nil: all).
func PingMatrix(ctx context.Context, eps []Endpoint, expect func(i, j int) bool, interval time.Duration) (*Matrix, error) {
	return pingMatrix(ctx, eps, nil, expect, interval)
}

// PingSample probes only the pairs probe selects, each expected to answer:
// the check for labs too large to probe every pair.
func PingSample(ctx context.Context, eps []Endpoint, probe func(i, j int) bool, interval time.Duration) (*Matrix, error) {
	return pingMatrix(ctx, eps, probe, nil, interval)
}

// probeRate caps echo requests per second over all sources: a burst of
// thousands at once would overflow TUN queues and socket buffers and be
// lost on every retry alike.
const probeRate = 5000

func pingMatrix(ctx context.Context, eps []Endpoint, probe, expect func(i, j int) bool, interval time.Duration) (*Matrix, error) {
	n := len(eps)
	m := &Matrix{Endpoints: eps, Expected: make([][]bool, n), Actual: make([][]bool, n), Probed: make([][]bool, n)}
	for i := range n {
		m.Expected[i] = make([]bool, n)
		m.Actual[i] = make([]bool, n)
		m.Probed[i] = make([]bool, n)
		for j := range n {
			m.Probed[i][j] = i != j && eps[i].Netns != "" && (probe == nil || probe(i, j))
			m.Expected[i][j] = m.Probed[i][j] && (expect == nil || expect(i, j))
		}
	}
	lim := rate.NewLimiter(probeRate, 200)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		if eps[i].Netns == "" {
			continue // a target only (an address outside the lab's containers)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = probeFrom(ctx, eps, i, m, &mu, interval, lim)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

var probeRun atomic.Uint32

// nextEchoID is the ICMP echo ID of source i's next probe run. A fresh ID
// per run: conntrack remembers ICMP IDs for a while, and a reused one could
// ride on an old NAT mapping.
func nextEchoID(i int) int {
	return int(probeRun.Add(1)*7919+uint32(os.Getpid())*31+uint32(i)) & 0xffff
}

// probeFrom owns one raw ICMP socket in the source namespace. Raw ICMP
// sockets see every reply in the namespace, so replies are matched by our
// echo ID and the target's address.
func probeFrom(ctx context.Context, eps []Endpoint, i int, m *Matrix, mu *sync.Mutex, interval time.Duration, lim *rate.Limiter) error {
	conn, err := icmpSocket(eps[i].Netns)
	if err != nil {
		return err
	}
	defer conn.Close()
	id := nextEchoID(i)

	want := map[netip.Addr]int{}
	for j, dst := range eps {
		if m.Probed[i][j] {
			want[dst.IP] = j
		}
	}
	got := map[int]bool{}
	pending := func() []int {
		var p []int
		for j := range eps {
			if m.Probed[i][j] && !got[j] {
				p = append(p, j)
			}
		}
		return p
	}
	done := func() bool {
		// Stop early once every pair that should answer has; pairs that
		// should not answer keep being probed until the deadline only if
		// some expected pair is still missing.
		mu.Lock()
		defer mu.Unlock()
		for j := range eps {
			if m.Expected[i][j] && !got[j] {
				return false
			}
		}
		return true
	}
	buf := make([]byte, 1500)
	seq := 0
	for {
		for _, j := range pending() {
			if err := lim.Wait(ctx); err != nil {
				return nil // the deadline: what answered is in the matrix
			}
			seq++
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("overlaylab-probe")}}
			wb, _ := msg.Marshal(nil)
			_, _ = conn.WriteTo(wb, &net.IPAddr{IP: eps[j].IP.AsSlice()})
		}
		round := time.Now().Add(interval)
		if dl, ok := ctx.Deadline(); ok && dl.Before(round) {
			round = dl
		}
		for time.Now().Before(round) {
			ip, _, err := readReply(conn, buf, id, round)
			if err != nil {
				break
			}
			if j, ok := want[ip]; ok {
				got[j] = true
				mu.Lock()
				m.Actual[i][j] = true
				mu.Unlock()
			}
		}
		if done() || ctx.Err() != nil {
			return nil
		}
	}
}

// replyTimeout is how long a probe waits for its reply.
const replyTimeout = time.Second

// Counts is what a probing window saw: Sent[i][j] echoes from i to j and
// Received[i][j] replies to them.
type Counts struct {
	Sent, Received [][]int
}

// ProbeWindow sends one echo per selected pair every interval until ctx
// ends and counts the replies (late replies up to one interval after the
// end still count). pair(i, j) selects the pairs; sources need a Netns.
func ProbeWindow(ctx context.Context, eps []Endpoint, pair func(i, j int) bool, interval time.Duration) (*Counts, error) {
	n := len(eps)
	c := &Counts{Sent: make([][]int, n), Received: make([][]int, n)}
	for i := range n {
		c.Sent[i] = make([]int, n)
		c.Received[i] = make([]int, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		if eps[i].Netns == "" {
			continue
		}
		var targets []int
		for j := range n {
			if j != i && pair(i, j) {
				targets = append(targets, j)
			}
		}
		if len(targets) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = windowFrom(ctx, eps, i, targets, c, interval)
		}()
	}
	wg.Wait()
	return c, errors.Join(errs...)
}

func windowFrom(ctx context.Context, eps []Endpoint, i int, targets []int, c *Counts, interval time.Duration) error {
	conn, err := icmpSocket(eps[i].Netns)
	if err != nil {
		return err
	}
	defer conn.Close()
	id := nextEchoID(i)
	byIP := map[netip.Addr]int{}
	for _, j := range targets {
		byIP[eps[j].IP] = j
	}
	// seq -> probe, so each reply counts once, and only if it came back
	// within replyTimeout (a reply to a probe that sat in a queue through an
	// outage is not an answer, as with ping -W).
	type probe struct {
		to   int
		sent time.Time
	}
	pending := map[int]probe{}
	buf := make([]byte, 1500)
	seq := 0
	tick := time.NewTicker(interval)
	defer tick.Stop()
	send := func() {
		for _, j := range targets {
			seq = (seq + 1) & 0xffff
			pending[seq] = probe{to: j, sent: time.Now()}
			msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("overlaylab-window")}}
			wb, _ := msg.Marshal(nil)
			c.Sent[i][j]++
			_, _ = conn.WriteTo(wb, &net.IPAddr{IP: eps[j].IP.AsSlice()})
		}
	}
	read := func(until time.Time) {
		for time.Now().Before(until) {
			ip, seq, err := readReply(conn, buf, id, until)
			if err != nil {
				return
			}
			p, ok := pending[seq]
			if from, known := byIP[ip]; !ok || !known || from != p.to {
				continue
			}
			delete(pending, seq)
			if time.Since(p.sent) <= replyTimeout {
				c.Received[i][p.to]++
			}
		}
	}
	send()
	for {
		select {
		case <-ctx.Done():
			read(time.Now().Add(interval))
			return nil
		case <-tick.C:
			send()
		default:
			read(time.Now().Add(interval / 4))
		}
	}
}

// readReply waits until deadline for the next echo reply carrying id and
// returns its source and sequence number; other ICMP is skipped. It fails
// when the deadline passes.
func readReply(conn *icmp.PacketConn, buf []byte, id int, deadline time.Time) (netip.Addr, int, error) {
	_ = conn.SetReadDeadline(deadline)
	for {
		k, peer, err := conn.ReadFrom(buf)
		if err != nil {
			return netip.Addr{}, 0, err
		}
		rm, err := icmp.ParseMessage(1, buf[:k])
		if err != nil || rm.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := rm.Body.(*icmp.Echo)
		if !ok || echo.ID != id {
			continue
		}
		ip, ok := netip.AddrFromSlice(peer.(*net.IPAddr).IP)
		if !ok {
			continue
		}
		return ip.Unmap(), echo.Seq, nil
	}
}

// icmpSocket opens a raw ICMP socket inside a namespace.
func icmpSocket(ns string) (*icmp.PacketConn, error) {
	var conn *icmp.PacketConn
	err := nsutil.DoNamed(ns, func() error {
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	return conn, nil
}
