package linkem

import (
	"sync"
	"time"
)

// pkt is one frame on its way through the relay: a virtio-net header and the
// frame, in a buffer from the pool.
type pkt struct {
	buf       []byte // capacity from the pool; buf[:n] is the message
	n         int
	segs      int   // wire packets it stands for (a GSO frame: its segments)
	wireBytes int   // bytes those take on the wire
	at        int64 // when it leaves, in the line's clock
	large     bool
}

func (p *pkt) msg() []byte   { return p.buf[:p.n] }
func (p *pkt) frame() []byte { return p.buf[vnetHdrLen:p.n] }

// smallBuf holds a full-size Ethernet frame with tags and the virtio-net
// header; anything larger (GSO frames, jumbo frames) takes a large buffer.
const smallBuf = 2048

// bufPool recycles packet buffers in two sizes so a busy relay allocates
// next to nothing per frame.
type bufPool struct{ small, large sync.Pool }

func newBufPool() *bufPool {
	p := &bufPool{}
	p.small.New = func() any { return &pkt{buf: make([]byte, smallBuf)} }
	p.large.New = func() any { return &pkt{buf: make([]byte, vnetHdrLen+maxFrame), large: true} }
	return p
}

// get returns a packet with room for n bytes.
func (bp *bufPool) get(n int) *pkt {
	var p *pkt
	if n <= smallBuf {
		p = bp.small.Get().(*pkt)
	} else {
		p = bp.large.Get().(*pkt)
	}
	p.n, p.segs, p.wireBytes, p.at = n, 1, 0, 0
	return p
}

func (bp *bufPool) put(p *pkt) {
	if p.large {
		bp.large.Put(p)
	} else {
		bp.small.Put(p)
	}
}

// clone copies p into a fresh buffer.
func (bp *bufPool) clone(p *pkt) *pkt {
	q := bp.get(p.n)
	copy(q.buf, p.msg())
	q.segs, q.wireBytes, q.at = p.segs, p.wireBytes, p.at
	return q
}

// fifo is a growable ring of packets.
type fifo struct {
	ring       []*pkt
	head, size int
}

func (q *fifo) push(p *pkt) {
	if q.size == len(q.ring) {
		grown := make([]*pkt, max(16, 2*len(q.ring)))
		for i := range q.size {
			grown[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = grown, 0
	}
	q.ring[(q.head+q.size)%len(q.ring)] = p
	q.size++
}

func (q *fifo) peek() *pkt {
	if q.size == 0 {
		return nil
	}
	return q.ring[q.head]
}

func (q *fifo) pop() *pkt {
	p := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.size--
	return p
}

// bucket is the rate limit: a token bucket whose schedule is computed when a
// packet arrives (it leaves once the bucket holds its bytes), so no timer
// runs per packet. The packets waiting for tokens form the rate queue.
type bucket struct {
	rate   float64 // bytes per nanosecond
	burst  float64 // bytes
	queue  float64 // bytes that may wait for tokens
	tokens float64 // at time last
	last   int64
}

func newBucket(imp Impairment) *bucket {
	bps := float64(imp.Rate) / 8 // bytes per second
	burst, queue := float64(imp.RateBurst), float64(imp.RateQueue)
	if burst == 0 {
		burst = max(bps/100, 16<<10)
	}
	if queue == 0 {
		queue = max(bps/20, 64<<10)
	}
	return &bucket{rate: bps / 1e9, burst: burst, queue: queue, tokens: burst}
}

// depart schedules size bytes arriving at now and returns when they leave;
// ok is false when the queue ahead is full (the packet is dropped).
func (b *bucket) depart(now int64, size int) (at int64, ok bool) {
	start := max(now, b.last)
	if float64(start-now)*b.rate > b.queue {
		return 0, false
	}
	tokens := min(b.burst, b.tokens+float64(start-b.last)*b.rate) - float64(size)
	at = start
	if tokens < 0 {
		at += int64(-tokens/b.rate) + 1
		tokens = 0
	}
	b.tokens, b.last = tokens, at
	return at, true
}

// line is one direction's delay line: delayed packets in one queue, packets
// chosen for reordering (which skip the delay) in another. Each queue's
// departure times never decrease, so the earliest packet is always at one of
// the two heads and no heap is needed.
type line struct {
	mu        sync.Mutex
	delayed   fifo
	prompt    fifo
	held      int
	heldBytes int // buffer memory held
	limit     int
	// lastAt is the departure of the last delayed packet: jitter moves a
	// packet later but never ahead of the one before it.
	lastAt int64
	bucket *bucket // nil without a rate
	// onHead, when set, is told (under the lock) when the first departure
	// changes: at is the new one, -1 when the line is empty.
	onHead func(at, now int64)
}

func newLine(imp Impairment) *line {
	l := &line{limit: imp.Limit}
	if l.limit == 0 {
		l.limit = DefaultLimit
	}
	if imp.Rate > 0 {
		l.bucket = newBucket(imp)
	}
	return l
}

// dropReason says why push refused a packet.
type dropReason int

const (
	accepted dropReason = iota
	queueFull
)

// push schedules p, arriving at now, to leave after delay (or as soon as the
// rate allows when reorder). If it can leave at once and nothing is waiting,
// direct is true and p is not queued: the caller sends it.
func (l *line) push(p *pkt, now int64, delay time.Duration, reorder bool) (direct bool, r dropReason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held >= l.limit || l.heldBytes+cap(p.buf) > maxHeldBytes {
		return false, queueFull
	}
	at := now
	if l.bucket != nil {
		var ok bool
		if at, ok = l.bucket.depart(now, p.wireBytes); !ok {
			return false, queueFull
		}
	}
	q := &l.prompt
	if !reorder {
		at = max(at+int64(delay), l.lastAt)
		l.lastAt = at
		q = &l.delayed
	}
	if at <= now && l.delayed.size == 0 && l.prompt.size == 0 {
		return true, accepted
	}
	p.at = at
	wasFirst := l.next() == nil || at < l.next().at
	q.push(p)
	l.held++
	l.heldBytes += cap(p.buf)
	if wasFirst && l.onHead != nil {
		l.onHead(at, now)
	}
	return false, accepted
}

// next is the packet that leaves first (nil when empty). Ties go to the
// prompt queue: a reordered packet overtakes.
func (l *line) next() *pkt {
	d, p := l.delayed.peek(), l.prompt.peek()
	switch {
	case d == nil:
		return p
	case p == nil:
		return d
	case p.at <= d.at:
		return p
	}
	return d
}

// due moves up to cap(out) packets due at now into out and returns them with
// the departure of the next one still held (-1 when none).
func (l *line) due(now int64, out []*pkt) ([]*pkt, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.take(now, out)
	n := int64(-1)
	if p := l.next(); p != nil {
		n = p.at
	}
	if l.onHead != nil {
		l.onHead(n, now)
	}
	return next, n
}

func (l *line) take(now int64, out []*pkt) []*pkt {
	for len(out) < cap(out) {
		p := l.next()
		if p == nil || p.at > now {
			return out
		}
		if p == l.prompt.peek() {
			l.prompt.pop()
		} else {
			l.delayed.pop()
		}
		l.held--
		l.heldBytes -= cap(p.buf)
		out = append(out, p)
	}
	return out
}

// drain empties the line (at shutdown) and returns what it held.
func (l *line) drain() []*pkt {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*pkt
	for _, q := range []*fifo{&l.delayed, &l.prompt} {
		for q.size > 0 {
			out = append(out, q.pop())
		}
	}
	l.held, l.heldBytes = 0, 0
	return out
}
