package udp

// The fast datapath runs one worker per queue of flannel0. Each worker owns
// a queue (its own descriptor of the multi-queue TUN device), a socket in
// the SO_REUSEPORT group on the backend port, and its buffers, and moves
// packets both ways between them. Nothing is shared between workers but
// the peer table (an immutable snapshot) and the metrics (atomic counters).
//
// A flow stays on one worker, end to end, both ways, so TCP sees no
// reordering that the overlay made:
//
//   - Received (wire → container): the steering program (steer.go) picks
//     the socket from the inner addresses and ports, so every datagram of a
//     flow is read by the same worker, which writes it to its own queue.
//     Writes from one goroutine reach the kernel in order. The sender keeps
//     flows apart in UDP GSO sends (a send is steered by its first
//     datagram), so this holds for GSO sends and UDP GRO batches too, as
//     long as no device on the underlay merges datagrams of different flows
//     itself (GRO on a physical NIC can, for sockets with UDP_GRO; veth does
//     not): such a merged batch goes whole to the worker of its first flow,
//     which notices, logs the first and counts them all in /metrics
//     (checkStray, overlaylab_udp_gro_stray_packets_total).
//   - Sent (container → wire): the kernel picks the TUN queue of a packet
//     leaving through flannel0 (tun_select_queue, "automq"): the queue on
//     which the agent last wrote a packet of the same flow (the kernel
//     remembers flow → queue for every packet written to a queue, by a
//     symmetric hash of the flow, so a flow's two directions match), and
//     otherwise a fixed hash of the flow. A TCP connection's first packet
//     leaves on the hashed queue; from the first packet that comes back (the
//     SYN-ACK, or the first ACK) on, both directions use the queue its
//     received packets are steered to. The change happens while a single
//     packet (the SYN) is in flight, so nothing can overtake anything. One
//     worker reads a queue and sends what it read in order.
//   - A flow idle for the kernel's flow-table timeout (a few seconds)
//     starts over on the hashed queue, and moves back at its next received
//     packet: a burst after an idle spell can have a packet overtaken there
//     (the sender's window is open, a few packets are queued on the old
//     queue when the first ACK comes back). TCP recovers from that like
//     from any reordering on a network; it is rare and never loses data.
//
// Workers=1 is the single-queue datapath of before: one TUN descriptor
// without IFF_MULTI_QUEUE, one socket without SO_REUSEPORT, a goroutine per
// direction. With more, each worker is one goroutine serving both
// directions (serve).

import (
	"context"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// maxWorkers is the kernel's limit on the queues of a TUN device
// (MAX_TAP_QUEUES).
const maxWorkers = MaxWorkers

// MaxWorkers is the most --udp-workers the backend takes.
const MaxWorkers = 256

// workerCount resolves the Workers option: 0 is one worker per CPU the Go
// runtime will run this process on at once (GOMAXPROCS, which Go derives
// from the CPU affinity mask, sched_getaffinity, and the cgroup CPU limit,
// and which a user or a lab can lower). GOMAXPROCS rather than the affinity
// mask alone: more workers than Ps cannot run at the same time, since the
// hot syscalls are raw and keep their thread's P, so two workers on one P
// only take turns. A count asked for explicitly raises GOMAXPROCS to match
// (prepareFast).
func workerCount(opt int) (int, error) {
	switch {
	case opt < 0 || opt > maxWorkers:
		return 0, fmt.Errorf("--udp-workers %d: must be 0 (one per CPU) to %d (flannel0's queue limit)", opt, maxWorkers)
	case opt > 0:
		return opt, nil
	}
	return min(runtime.GOMAXPROCS(0), maxWorkers), nil
}

// worker is one queue's datapath.
type worker struct {
	b  *UDP
	id int
	q  *fastQueue
	// strays counts datagrams steered here that belong to another worker's
	// flow: they came behind another flow's datagram in one GRO batch of
	// the underlay (see above). The first is logged.
	strays uint64
}

// runFast runs every worker until ctx is done or one loop fails: a single
// worker as two goroutines, one per direction (the datapath as it was
// before workers); several as one goroutine each (serve).
func (b *UDP) runFast(ctx context.Context) error {
	f := b.fast
	errc := make(chan error, 2*len(f.queues))
	loops := 0
	for i, q := range f.queues {
		w := &worker{b: b, id: i, q: q}
		if q.ep != nil {
			go func() { errc <- w.serve() }()
			loops++
			continue
		}
		go func() { errc <- w.tunToUDP() }()
		go func() { errc <- w.udpToTun() }()
		loops += 2
	}
	var first error
	left := loops
	select {
	case <-ctx.Done():
	case first = <-errc:
		left--
	}
	f.stop()
	for range left {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// serve runs both directions of the worker on one goroutine: it waits
// until its queue or its socket has something, then runs a round of each,
// alternately, until neither has anything left.
//
// With several workers this is cheaper than a goroutine per direction
// (measured on 2 CPUs, 2 workers, GOMAXPROCS 2, medians of 14 interleaved
// runs: one TCP stream 6.00 instead of 4.90 Gbit/s with 13 % less agent CPU
// per byte; four streams the same within noise): a flow's two directions
// are steered to the same worker, so its data and its acknowledgments are
// handled by one thread one after the other, as the single worker's two
// goroutines on one P are, instead of waking a second thread on another
// CPU for every batch of acknowledgments.
func (w *worker) serve() error {
	tx, rx := w.newTx(), w.newRx()
	for {
		if err := w.q.ep.wait(); err != nil {
			return nilIfStopped(err)
		}
		for {
			sent, err := w.tunRound(tx, false)
			if err != nil {
				return nilIfStopped(err)
			}
			got, err := w.udpRound(rx, false)
			if err != nil {
				return nilIfStopped(err)
			}
			if !sent && !got {
				break
			}
		}
	}
}

// tunReads is how many TUN reads one send batch gathers at most: the first
// waits, the others only take what is already queued.
const tunReads = 8

// txState is the send direction's buffers, allocated once per worker.
type txState struct {
	bufs  [][]byte
	batch *sendBatch
	s     *sender
	plan  gsoPlanner
	gso   bool
	icmp  []byte
}

func (w *worker) newTx() *txState {
	d := w.q.dev
	st := &txState{
		bufs:  carve(tunReads, d.hdrLen()+bufSize),
		batch: newSendBatch(tunReads * tunBatch),
		gso:   w.b.fast.feat.gso,
		icmp:  make([]byte, vnetHdrLen+20+8+60+8),
	}
	st.s = newSender(w.q.rc, cap(st.batch.dgrams))
	st.plan.msgs = make([]gsoMsg, 0, cap(st.batch.dgrams))
	return st
}

// tunToUDP runs the send direction until the worker is stopped.
func (w *worker) tunToUDP() error {
	st := w.newTx()
	for {
		if _, err := w.tunRound(st, true); err != nil {
			return nilIfStopped(err)
		}
	}
}

// tunRound reads what the worker's queue holds (up to tunReads reads; with
// wait the first read waits for a packet), cuts large segments into
// datagrams without copying their payload and sends the whole batch with
// one sendmmsg, runs of equal-size datagrams of one flow to one peer as one
// UDP GSO message each. It says whether it read anything.
func (w *worker) tunRound(st *txState, wait bool) (bool, error) {
	b, d, batch := w.b, w.q.dev, st.batch
	batch.reset()
	// One table for the whole batch, loaded once its first packet is in
	// (the first read may block: a table loaded before it could be long
	// stale), as udpRound does; a peer change reaches the next batch.
	var t *table
	read := false
	for i := range tunReads {
		n, err := d.read(st.bufs[i], i > 0 || !wait)
		if err != nil {
			if stopped(err) {
				return read, err
			}
			return read, fmt.Errorf("read %s queue %d: %w", b.dev, w.id, err)
		}
		if n < 0 {
			break // nothing (more) queued
		}
		read = true
		if t == nil {
			t = b.tab.Load()
		}
		if err := w.queueTunPacket(batch, t, st.bufs[i][:n], st.icmp); err != nil {
			return read, err
		}
		if batch.room() < tunBatch {
			break
		}
	}
	if len(batch.dgrams) == 0 {
		return read, nil
	}
	st.plan.reset()
	for i, g := range batch.dgrams {
		st.plan.add(i, g.size, g.dst, g.flow, st.gso)
	}
	st.plan.unbundle(b.mtu, batch.size)
	if err := w.sendPlanned(st.s, &st.plan, batch, &st.gso); err != nil {
		if stopped(err) {
			return read, err
		}
		return read, fmt.Errorf("send udp: %w", err)
	}
	return read, nil
}

// nilIfStopped turns the error that only says the loops were told to stop
// into a clean end.
func nilIfStopped(err error) error {
	if stopped(err) {
		return nil
	}
	return err
}

// queueTunPacket routes what one TUN read returned by the table t and adds
// its datagrams to the batch; a packet for no peer gets an ICMP net
// unreachable back.
func (w *worker) queueTunPacket(batch *sendBatch, t *table, buf, icmp []byte) error {
	b, d := w.b, w.q.dev
	h, pkt, err := d.split(buf)
	if err != nil {
		b.metrics.Drop(backend.DropMalformed)
		return nil
	}
	_, dst, err := ipv4Addrs(pkt)
	if err != nil {
		b.metrics.Drop(dropReason(err))
		return nil
	}
	r, ok := t.lookup(dst)
	if !ok {
		b.metrics.Drop(backend.DropNoRoute)
		if m := netUnreachable(icmp[vnetHdrLen:], pkt); m > 0 {
			clear(icmp[:vnetHdrLen])
			out := icmp[vnetHdrLen-d.hdrLen() : vnetHdrLen+m]
			if err := d.write(out); err != nil && stopped(err) {
				return err
			}
		}
		return nil
	}
	// One read is one flow (a packet, or a large segment of one TCP or UDP
	// flow): its datagrams share the steering hash.
	flow, _ := flowHash(pkt)
	first := len(batch.dgrams)
	if _, err := batch.addTunPacket(h, pkt, r.dst); err != nil {
		b.metrics.Drop(backend.DropMalformed)
		b.log.Debug("tun read", "err", err, "gso_type", h.gsoType, "gso_size", h.gsoSize, "len", len(pkt))
	}
	for i := first; i < len(batch.dgrams); i++ {
		batch.dgrams[i].flow = flow
	}
	return nil
}

// sendPlanned sends the planned messages, counting per datagram. A UDP GSO
// message the kernel refuses is sent again one datagram per message; EIO
// (the egress device cannot checksum for us) turns UDP GSO off for good.
func (w *worker) sendPlanned(s *sender, plan *gsoPlanner, batch *sendBatch, gso *bool) error {
	b := w.b
	s.build(plan.msgs, batch)
	for i := 0; i < len(plan.msgs); {
		sent, errno, err := s.send(i, len(plan.msgs))
		if err != nil {
			return err
		}
		if sent == 0 && errno == 0 {
			errno = unix.EIO // the kernel sent nothing and said nothing: never spin on it
		}
		var pkts, bytes int
		for _, m := range plan.msgs[i : i+sent] {
			pkts += m.n
			bytes += m.bytes
		}
		b.metrics.EncapPackets.Add(uint64(pkts))
		b.metrics.EncapBytes.Add(uint64(bytes))
		i += sent
		if errno == 0 {
			continue
		}
		m := plan.msgs[i]
		if m.n == 1 {
			b.metrics.Drop(backend.DropSendError)
			i++
			continue
		}
		// Re-plan the rest of the batch without GSO and go on.
		if errno == unix.EIO && *gso {
			*gso = false
			b.log.Warn("UDP GSO refused by the kernel; sending one datagram per message from now on", "err", errno, "worker", w.id)
		} else {
			b.log.Debug("UDP GSO message refused; resending its datagrams one by one", "err", errno, "segments", m.n, "size", m.size)
		}
		first := m.first
		plan.reset()
		for j := first; j < len(batch.dgrams); j++ {
			g := batch.dgrams[j]
			plan.add(j, g.size, g.dst, g.flow, false)
		}
		s.build(plan.msgs, batch)
		i = 0
	}
	return nil
}

// rxState is the receive direction's buffers, allocated once per worker.
type rxState struct {
	r *receiver
	c *coalescer
}

func (w *worker) newRx() *rxState {
	return &rxState{
		r: newReceiver(w.q.rc, recvBatch, bufSize, w.b.fast.feat.gro),
		c: newCoalescer(recvBatch*maxGSOSegments, w.q.dev.vnet),
	}
}

// udpToTun runs the receive direction until the worker is stopped.
func (w *worker) udpToTun() error {
	st := w.newRx()
	for {
		if _, err := w.udpRound(st, true); err != nil {
			return nilIfStopped(err)
		}
	}
}

// udpRound receives one batch with recvmmsg (with wait, waiting for one),
// splits UDP GRO buffers into datagrams, admits each and writes them to the
// worker's queue, a flow's consecutive TCP segments merged into one large
// segment. It says whether it received anything. Writing to the device
// fails only when the worker is stopped.
func (w *worker) udpRound(st *rxState, wait bool) (bool, error) {
	b, r, c := w.b, st.r, st.c
	n, err := r.recv(wait)
	if err != nil {
		if stopped(err) {
			return false, err
		}
		return false, fmt.Errorf("read udp (worker %d): %w", w.id, err)
	}
	if n == 0 {
		return false, nil
	}
	t := b.tab.Load()
	// A single worker has nobody to take strays from: no check per segment.
	workers := len(b.fast.queues)
	c.reset()
	for i := range n {
		from, data, segSize, trunc := r.msg(i)
		// The sender first: nothing a stranger sent is looked at
		// (docs/SECURITY.md), and all of it counts as not_peer.
		peer, known := t.peerOf(from)
		if !known {
			for range datagrams(len(data), segSize) {
				b.metrics.Drop(backend.DropNotPeer)
			}
			continue
		}
		if trunc || len(data) == 0 {
			b.metrics.Drop(backend.DropMalformed)
			continue
		}
		strays := workers > 1 && segSize > 0 && len(data) > segSize
		for rest := data; len(rest) > 0; {
			var seg []byte
			seg, rest = nextSegment(rest, segSize)
			if strays {
				w.checkStray(seg, workers)
			}
			src, dst, err := ipv4Addrs(seg)
			if err != nil {
				b.metrics.Drop(dropReason(err))
				continue
			}
			if reason, ok := t.admitFrom(peer, true, src, dst); !ok {
				b.metrics.Drop(reason)
				continue
			}
			if c.full() {
				if err := w.writeTun(c); err != nil {
					return true, err
				}
			}
			c.add(seg, from.As4())
		}
	}
	return true, w.writeTun(c)
}

// checkStray counts a datagram of a GRO batch that the steering (over n
// workers) would have given to another worker, and logs the first: on such
// an underlay a flow's datagrams can reach two workers, and TCP can see
// them out of order.
func (w *worker) checkStray(seg []byte, n int) {
	if h, ok := flowHash(seg); ok && int(h%uint32(n)) != w.id {
		if w.strays == 0 {
			w.b.log.Warn("a UDP GRO batch mixes flows of several workers (the underlay device merges datagrams of different flows): "+
				"flows can be reordered; use --udp-workers=1, or turn the device's UDP GRO off", "worker", w.id)
		}
		w.strays++
		w.b.metrics.GROStrays.Add(1)
	}
}

// writeTun writes the coalescer's packets, one writev each, and empties it.
// A packet the kernel refuses is counted and logged; only a stop ends the
// loop.
func (w *worker) writeTun(c *coalescer) error {
	b := w.b
	c.finish()
	var pkts, bytes uint64
	for _, p := range c.pkts {
		err := w.q.dev.writev(c.iovs[p.iov0:p.iov1])
		switch {
		case err == nil:
			pkts += uint64(p.segs)
			bytes += uint64(p.bytes)
		case stopped(err):
			b.metrics.DecapPackets.Add(pkts)
			b.metrics.DecapBytes.Add(bytes)
			return err
		default:
			for range p.segs {
				b.metrics.Drop(backend.DropWriteError)
			}
			b.log.Debug("tun write", "err", err, "segments", p.segs, "bytes", p.bytes, "worker", w.id)
		}
	}
	b.metrics.DecapPackets.Add(pkts)
	b.metrics.DecapBytes.Add(bytes)
	c.reset()
	return nil
}
