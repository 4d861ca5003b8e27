package linkem

import (
	"fmt"
	"sync"
	"time"
)

// frameSender writes frames out (a packetSock; a test captures them).
type frameSender interface {
	send(frames [][]byte, refused func(i int)) error
}

// direction is one way through the relay.
type direction struct {
	name  Direction
	from  *packetSock
	to    frameSender
	imp   Impairment
	cls   *classifier
	dice  *dice
	line  *line      // nil: nothing is ever delayed or rate-limited
	timer *lineTimer // wakes the sender; with line, once the relay runs
	split bool       // cut GSO frames: decisions are per wire packet
	pool  *bufPool
	clock func() int64
	stats counters

	// wmu serialises writes to `to` (the reader's immediate sends and the
	// sender's timed ones) and guards out.
	wmu sync.Mutex
	out [][]byte
	// now collects what one read sends at once; only the reader uses it.
	now []*pkt
}

func newDirection(name Direction, from *packetSock, to frameSender, imp Impairment, cfg Config, pool *bufPool, clock func() int64) *direction {
	d := &direction{
		name:  name,
		from:  from,
		to:    to,
		imp:   imp,
		cls:   newClassifier(imp.Match, cfg.Overlay, cfg.Control),
		dice:  newDice(cfg.Seed, name, imp),
		split: imp.Loss > 0 || imp.Duplicate > 0 || imp.Corrupt > 0 || imp.Reorder > 0 || imp.Rate > 0,
		pool:  pool,
		clock: clock,
	}
	if imp.Delay > 0 || imp.Jitter > 0 || imp.Rate > 0 {
		d.line = newLine(imp)
	}
	return d
}

// handle takes one frame read from the wire through classification,
// segmentation and the decisions, and sends or schedules what survives.
func (d *direction) handle(p *pkt) {
	h := decodeVnetHdr(p.buf)
	f := p.frame()
	var lay gsoLayout
	layOK := false
	if h.isGSO() {
		var err error
		lay, err = layoutOf(h, f)
		layOK = err == nil
	}
	if layOK {
		p.segs = lay.segments()
		p.wireBytes = len(f) + (p.segs-1)*lay.hdrEnd()
	} else {
		p.segs, p.wireBytes = 1, len(f)
	}
	d.stats.packetsIn.Add(uint64(p.segs))
	d.stats.bytesIn.Add(uint64(p.wireBytes))

	// A tunnelled GSO frame (VXLAN around a TSO segment) cannot go back
	// through a packet socket whole (the virtio-net header has no way to
	// say "tunnel"), so it is always cut here.
	tunnel := layOK && lay.outerIP >= 0
	matched := d.cls.matches(f)
	if matched {
		d.stats.matched.Add(uint64(p.segs))
	}
	if layOK && (tunnel || (matched && d.split) || d.imp.MTU > 0) {
		d.stats.segmented.Add(1)
		// Each segment leaves with its outermost IPv4 total length set to
		// its length from that header on: judge it before cutting it.
		wireIP := lay.ip
		if tunnel {
			wireIP = lay.outerIP
		}
		for i := range p.segs {
			n := lay.segLen(i)
			if d.imp.MTU > 0 && n-wireIP > d.imp.MTU {
				d.stats.droppedMTU.Add(1)
				continue
			}
			q := d.pool.get(vnetHdrLen + n)
			clear(q.buf[:vnetHdrLen]) // complete checksums, no offload left
			lay.cut(f, i, q.buf[vnetHdrLen:])
			q.wireBytes = n
			if matched {
				d.impair(q, vnetHdr{})
			} else {
				d.now = append(d.now, q)
			}
		}
		d.pool.put(p)
	} else if !layOK && d.tooBig(f) {
		d.stats.droppedMTU.Add(uint64(p.segs))
		d.pool.put(p)
	} else if matched {
		d.impair(p, h)
	} else {
		d.now = append(d.now, p)
	}
	d.flush()
}

// impair applies the decisions to one matched packet (a wire packet, or a
// GSO frame that crosses whole) and sends or schedules it.
func (d *direction) impair(p *pkt, h vnetHdr) {
	f := p.frame()
	l3, end, isIP := ipExtent(f)
	ipLen := 0
	if isIP && !h.isGSO() {
		// A GSO frame that crosses whole is checksummed by the kernel
		// after us, which would hide a corruption: it is never corrupted.
		ipLen = end - l3
	}
	v := d.dice.roll(ipLen)
	if v.drop {
		d.stats.droppedLoss.Add(uint64(p.segs))
		d.pool.put(p)
		return
	}
	var dup *pkt
	if v.duplicate {
		dup = d.pool.clone(p)
		d.stats.duplicated.Add(uint64(p.segs))
	}
	if v.corruptAt >= 0 {
		if h.flags&vnetNeedsCsum != 0 {
			// Fill in the checksum the kernel would have, then
			// corrupt: the receiver must see a packet that fails it.
			if err := finishChecksum(f, int(h.csumStart), int(h.csumOffset)); err == nil {
				h.flags &^= vnetNeedsCsum
				h.encode(p.buf)
			}
		}
		if h.flags&vnetNeedsCsum == 0 {
			f[l3+v.corruptAt] ^= 1 << v.corruptBit
			d.stats.corrupted.Add(1)
		}
	}
	if v.reorder {
		d.stats.reordered.Add(uint64(p.segs))
	}
	delay := max(0, d.imp.Delay.Std()+v.jitter)
	d.schedule(p, delay, v.reorder)
	if dup != nil {
		d.schedule(dup, delay, v.reorder)
	}
}

// schedule hands p to the delay line, or to the immediate batch when it
// leaves at once.
func (d *direction) schedule(p *pkt, delay time.Duration, reorder bool) {
	if d.line == nil {
		d.now = append(d.now, p)
		return
	}
	direct, r := d.line.push(p, d.clock(), delay, reorder)
	switch {
	case r == queueFull:
		d.stats.droppedQueue.Add(uint64(p.segs))
		d.pool.put(p)
	case direct:
		d.now = append(d.now, p)
	}
}

// flush sends the immediate batch.
func (d *direction) flush() {
	if len(d.now) == 0 {
		return
	}
	d.send(d.now)
	clear(d.now)
	d.now = d.now[:0]
}

// send writes pkts to the far side, counts them and returns their buffers.
func (d *direction) send(pkts []*pkt) {
	d.wmu.Lock()
	d.out = d.out[:0]
	for _, p := range pkts {
		d.out = append(d.out, p.msg())
	}
	var segs, bytes uint64
	for _, p := range pkts {
		segs += uint64(p.segs)
		bytes += uint64(p.wireBytes)
	}
	_ = d.to.send(d.out, func(i int) {
		segs -= uint64(pkts[i].segs)
		bytes -= uint64(pkts[i].wireBytes)
		d.stats.errors.Add(uint64(pkts[i].segs))
	})
	d.wmu.Unlock()
	for _, p := range pkts {
		d.pool.put(p)
	}
	d.stats.packetsOut.Add(segs)
	d.stats.bytesOut.Add(bytes)
}

// sendBatch is the most packets the sender writes in one call.
const sendBatch = 64

// startTimer gives the delay line its timer (the sender's alarm clock).
func (d *direction) startTimer() error {
	t, err := newLineTimer()
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	d.timer = t
	d.line.mu.Lock()
	d.line.onHead = func(at, now int64) {
		if at < 0 {
			t.stop()
		} else {
			t.arm(time.Duration(at - now))
		}
	}
	d.line.mu.Unlock()
	return nil
}

// sendLoop sends the delay line's packets when they are due, until the timer
// is closed.
func (d *direction) sendLoop() error {
	batch := make([]*pkt, 0, sendBatch)
	for {
		// due re-arms the timer for whatever stays in the line.
		batch, _ = d.line.due(d.clock(), batch[:0])
		if len(batch) > 0 {
			d.send(batch)
			clear(batch)
			continue
		}
		if err := d.timer.wait(); err != nil {
			return err
		}
	}
}

// tooBig reports whether a wire packet exceeds the hop's MTU (its IP
// length: an IPv4 total length, or an IPv6 packet's header and payload).
func (d *direction) tooBig(f []byte) bool {
	if d.imp.MTU == 0 {
		return false
	}
	l3, end, ok := ipExtent(f)
	return ok && end-l3 > d.imp.MTU
}
