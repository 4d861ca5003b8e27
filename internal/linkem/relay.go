package linkem

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Relay carries frames between two interfaces, impairing each direction as
// its Config says. Each direction has a reader goroutine (read, classify,
// cut, decide, schedule) and, when it delays or rate-limits, a sender
// goroutine that empties the delay line on a timer.
type Relay struct {
	cfg    Config
	host   *packetSock
	bridge *packetSock
	nl     *netlink.Handle // in the relay's namespace: is an interface gone?
	dirs   [2]*direction
	base   time.Time

	dropsMu   sync.Mutex // serialises the PACKET_STATISTICS reads
	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and opens the relay's sockets (inside cfg.Netns when
// set). Frames start flowing when Run is called; Close releases a relay that
// is not run.
func New(cfg Config) (_ *Relay, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("linkem config: %w", err)
	}
	r := &Relay{cfg: cfg, base: time.Now()}
	open := func() error {
		var err error
		if r.host, err = openPacketSock(cfg.HostIf); err != nil {
			return err
		}
		if r.bridge, err = openPacketSock(cfg.BridgeIf); err != nil {
			return err
		}
		return nil
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	var ns netns.NsHandle = -1
	if cfg.Netns != "" {
		if ns, err = nsutil.Handle(cfg.Netns); err != nil {
			return nil, err
		}
		defer ns.Close()
		err = nsutil.DoHandle(ns, open)
	} else {
		err = open()
	}
	if err != nil {
		return nil, err
	}
	if ns >= 0 {
		r.nl, err = netlink.NewHandleAt(ns)
	} else {
		r.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	pool := newBufPool()
	r.dirs[0] = newDirection(DirOut, r.host, r.bridge, cfg.Out, cfg, pool, r.clock)
	r.dirs[1] = newDirection(DirIn, r.bridge, r.host, cfg.In, cfg, pool, r.clock)
	for _, d := range r.dirs {
		if d.line != nil {
			if err := d.startTimer(); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// clock is the relay's time in nanoseconds (monotonic).
func (r *Relay) clock() int64 { return int64(time.Since(r.base)) }

// Close releases the sockets; later calls do nothing.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		for _, s := range []*packetSock{r.host, r.bridge} {
			if s != nil {
				errs = append(errs, s.Close())
			}
		}
		if r.nl != nil {
			r.nl.Close()
		}
		for _, d := range r.dirs {
			if d != nil && d.timer != nil {
				errs = append(errs, d.timer.close())
			}
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// Run relays until ctx is done (then it returns nil) or an interface goes
// away. It closes the relay when it returns.
func (r *Relay) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, d := range r.dirs {
		g.Go(func() error { return r.read(gctx, d) })
		if d.line != nil {
			g.Go(d.sendLoop)
		}
	}
	// Closing the sockets is what wakes the readers.
	stop := context.AfterFunc(gctx, func() { r.Close() })
	defer stop()
	err := g.Wait()
	r.Close()
	for _, d := range r.dirs {
		if d.line != nil {
			for _, p := range d.line.drain() {
				d.pool.put(p)
			}
		}
	}
	if ctx.Err() != nil {
		// Asked to stop: what the goroutines saw of the shutdown (closed
		// sockets and timers) is no error.
		return nil
	}
	return err
}

// read is one direction's reader loop.
func (r *Relay) read(ctx context.Context, d *direction) error {
	for {
		p := d.pool.get(vnetHdrLen + maxFrame)
		n, err := d.from.recv(p.buf[:cap(p.buf)])
		if err != nil {
			d.pool.put(p)
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case errors.Is(err, errTruncated):
				d.stats.errors.Add(1)
				continue
			case errors.Is(err, unix.ENETDOWN):
				// Reported once when the link goes down and once
				// when it is deleted: only the second ends the relay.
				if _, lerr := r.nl.LinkByName(d.from.name); lerr != nil {
					return fmt.Errorf("interface %s is gone: %w", d.from.name, err)
				}
				continue
			}
			return err
		}
		if n < vnetHdrLen+14 {
			d.pool.put(p)
			continue
		}
		p.n = n
		if n <= smallBuf {
			// Keep the large buffer for the next read.
			q := d.pool.get(n)
			copy(q.buf, p.msg())
			d.pool.put(p)
			p = q
		}
		d.handle(p)
	}
}

// Stats returns the counters now.
func (r *Relay) Stats() Stats {
	r.dropsMu.Lock()
	for _, d := range r.dirs {
		if n, err := d.from.kernelDrops(); err == nil {
			d.stats.kernelDrops.Add(n)
		}
	}
	r.dropsMu.Unlock()
	s := Stats{Time: time.Now().UTC(), Seed: r.cfg.Seed, Out: r.dirs[0].stats.snapshot(), In: r.dirs[1].stats.snapshot()}
	for i, c := range []*Counters{&s.Out, &s.In} {
		if l := r.dirs[i].line; l != nil {
			l.mu.Lock()
			c.Held = uint64(l.held)
			l.mu.Unlock()
		}
	}
	return s
}

// DefaultStatsInterval is how often Run rewrites the stats file.
const DefaultStatsInterval = time.Second

// Run is the relay process's body: it relays as cfg says until ctx is done,
// and keeps cfg.StatsFile current (every cfg.StatsInterval, on SIGUSR1 and
// when it ends).
func Run(ctx context.Context, cfg Config) error {
	r, err := New(cfg)
	if err != nil {
		return err
	}
	if cfg.StatsFile == "" {
		return r.Run(ctx)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	interval := cfg.StatsInterval.Std()
	if interval == 0 {
		interval = DefaultStatsInterval
	}
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	write := func() error { return WriteStats(cfg.StatsFile, r.Stats()) }
	if err := write(); err != nil {
		r.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for {
		select {
		case err := <-done:
			if werr := write(); err == nil {
				err = werr
			}
			return err
		case <-tick:
		case <-usr1:
		}
		if err := write(); err != nil {
			fmt.Fprintf(os.Stderr, "linkem: %v\n", err)
		}
	}
}
