package subnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// WatchConfig calls fn with the current config and then again on every change
// of the config key, until ctx is done (it then returns ctx.Err()). A deleted
// or missing key is reported as an error wrapping ErrNoConfig, a malformed
// value as the config.Parse error. After a compaction or a disconnect it
// re-reads the key and reports it if it changed meanwhile. fn runs on the
// watching goroutine; the next change waits until it returns.
func (m *Manager) WatchConfig(ctx context.Context, fn func(*config.Config, error)) error {
	key := m.ConfigKey()
	lastMod := int64(-1) // ModRevision last reported; 0 = reported missing; -1 = nothing yet
	report := func(kv *mvccpb.KeyValue) {
		if kv == nil {
			lastMod = 0
			fn(nil, fmt.Errorf("config %s: %w", key, ErrNoConfig))
			return
		}
		lastMod = kv.ModRevision
		fn(m.parseConfig(kv.Value))
	}

	bo := newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rctx, cancel := m.reqCtx(ctx)
		resp, err := m.cli.Get(rctx, key)
		cancel()
		if err != nil {
			d := bo.next()
			m.log.Warn("read network config failed; retrying", "key", key, "err", err, "retryIn", d)
			if m.pause(ctx, d) != nil {
				return ctx.Err()
			}
			continue
		}
		bo.reset()
		switch {
		case len(resp.Kvs) == 0 && lastMod != 0:
			report(nil)
		case len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision != lastMod:
			report(resp.Kvs[0])
		}

		err = func() error {
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			defer cancel()
			for wr := range m.cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
				if err := wr.Err(); err != nil {
					return err
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						report(nil)
					} else {
						report(ev.Kv)
					}
				}
			}
			return errors.New("watch closed")
		}()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			m.log.Info("config watch compacted; re-reading", "key", key)
			continue
		}
		d := bo.next()
		m.log.Warn("config watch failed; retrying", "key", key, "err", err, "retryIn", d)
		if m.pause(ctx, d) != nil {
			return ctx.Err()
		}
	}
}

// WatchLeases streams changes of the lease set after fromRevision to handle,
// until ctx is done (it then returns ctx.Err()).
//
// A Put (new lease, or a changed or taken-over one) is reported as Added with
// the new lease; a Delete or expiry as Removed with the lease last reported.
// With fromRevision > 0 (the revision returned by Leases) the watcher starts
// from the lease set at that revision, i.e. what the caller already knows;
// with fromRevision <= 0 it first reports every current lease as Added.
//
// The stream survives compaction and etcd restarts/disconnects: it re-lists,
// reports the difference between the listing and what it has reported so far,
// and resumes from the listing's revision. handle runs on the watching
// goroutine; a slow handle delays, but never loses, events.
func (m *Manager) WatchLeases(ctx context.Context, fromRevision int64, handle func([]Event)) error {
	return m.WatchLeasesWithResync(ctx, fromRevision, handle, nil)
}

// WatchLeasesWithResync is WatchLeases that also calls resync (when not nil)
// after every re-list (a start without a revision, a compaction, a lost
// connection) with the complete lease set of that listing, once handle has
// received the difference. Events alone cannot tell a caller about removals
// it missed (for example when its start revision was already compacted);
// the full set lets it drop whatever no lease justifies any more. resync
// runs on the watching goroutine, like handle.
func (m *Manager) WatchLeasesWithResync(ctx context.Context, fromRevision int64, handle func([]Event), resync func([]Lease)) error {
	w := &leaseWatcher{m: m, handle: handle, resync: resync, reported: map[netip.Prefix]Lease{}}
	return w.run(ctx, fromRevision, false)
}

// WatchLeasesFrom is WatchLeasesWithResync for a caller that holds the lease
// set at fromRevision (what Leases returned with it): the watcher starts
// from that set instead of reading it from etcd again, one list fewer per
// agent when hundreds start at once.
func (m *Manager) WatchLeasesFrom(ctx context.Context, known []Lease, fromRevision int64, handle func([]Event), resync func([]Lease)) error {
	w := &leaseWatcher{m: m, handle: handle, resync: resync, reported: make(map[netip.Prefix]Lease, len(known))}
	for _, l := range known {
		w.reported[l.Subnet] = l
	}
	return w.run(ctx, fromRevision, fromRevision > 0)
}

type leaseWatcher struct {
	m        *Manager
	handle   func([]Event)
	resync   func([]Lease)
	reported map[netip.Prefix]Lease // the caller's view: what has been reported and not removed
	// graceUntil, after etcd's store was reset, is until when a lease the
	// new store lacks stays in the caller's view: its owner re-creates it
	// within one reset check, and a datapath must not drop a peer whose
	// lease is only being written again.
	graceUntil time.Time
}

// errGraceOver ends a watch stream when the grace after a store reset is
// over, so that a re-list removes the leases nobody re-created.
var errGraceOver = errors.New("grace after the store reset is over")

// storeResetGrace is how long after a store reset missing leases are kept:
// three reset checks, enough for every live owner to notice and re-create
// its lease.
func (m *Manager) storeResetGrace() time.Duration { return 3 * m.resetCheckInterval() }

func (w *leaseWatcher) run(ctx context.Context, fromRevision int64, known bool) error {
	m := w.m
	rev := fromRevision // everything up to rev is reflected in w.reported
	seeded := fromRevision <= 0 || known
	resync := fromRevision <= 0
	bo := newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !seeded {
			err := w.seed(ctx, fromRevision)
			switch {
			case err == nil:
				seeded = true
			case errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev):
				// The caller's view can no longer be reconstructed; the best
				// we can do is report every current lease. Removals the
				// caller missed in between stay unknown to it. A revision
				// from the future means the store was reset since the
				// caller listed it: its owners are re-creating the leases.
				m.log.Warn("cannot read leases at the start revision; reporting the full current set", "revision", fromRevision, "err", err)
				seeded, resync = true, true
				if errors.Is(err, rpctypes.ErrFutureRev) {
					w.startGrace()
				}
			default:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d := bo.next()
				m.log.Warn("read leases at start revision failed; retrying", "revision", fromRevision, "err", err, "retryIn", d)
				if m.pause(ctx, d) != nil {
					return ctx.Err()
				}
				continue
			}
		}
		if resync {
			snap, err := m.list(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d := bo.next()
				m.log.Warn("re-list leases failed; retrying", "err", err, "retryIn", d)
				if m.pause(ctx, d) != nil {
					return ctx.Err()
				}
				continue
			}
			keep := time.Now().Before(w.graceUntil)
			if evs := w.diff(snap.leases, keep); len(evs) > 0 {
				w.handle(evs)
			}
			// The full set is the truth only outside a store reset's grace;
			// within it, what the new store lacks may be on its way back.
			if w.resync != nil && !keep {
				w.resync(w.view())
			}
			rev, resync = snap.rev, false
			bo.reset()
		}

		if m.testHookBeforeWatch != nil {
			m.testHookBeforeWatch(rev)
		}
		var err error
		rev, err = w.stream(ctx, rev, bo)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resync = true
		if errors.Is(err, errGraceOver) {
			m.log.Info("grace after etcd's reset is over; re-listing leases")
			w.graceUntil = time.Time{}
			continue
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			// No pause: nothing is wrong with etcd, we only fell behind.
			m.log.Info("lease watch compacted; re-listing", "revision", rev)
			continue
		}
		if errors.Is(err, ErrStoreReset) {
			m.log.Warn("etcd's data was replaced; re-listing leases", "err", err)
			w.startGrace()
			continue
		}
		d := bo.next()
		m.log.Warn("lease watch failed; re-listing", "revision", rev, "err", err, "retryIn", d)
		if m.pause(ctx, d) != nil {
			return ctx.Err()
		}
	}
}

// seed loads the lease set at rev as the caller's starting view.
func (w *leaseWatcher) seed(ctx context.Context, rev int64) error {
	m := w.m
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("list leases at revision %d: %w", rev, err)
	}
	for _, kv := range resp.Kvs {
		if l, err := kvToLease(m.SubnetsPrefix(), kv); err == nil {
			w.reported[l.Subnet] = l
		}
	}
	return nil
}

// stream follows the watch from rev+1 and returns the last revision whose
// events were handled, with the reason it stopped.
func (w *leaseWatcher) stream(ctx context.Context, rev int64, bo *backoff) (int64, error) {
	m := w.m
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Progress notifications advance rev while nothing changes, so that a
	// re-watch after a disconnect starts from a recent, uncompacted revision.
	wch := m.cli.Watch(wctx, m.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	check := time.NewTicker(m.resetCheckInterval())
	defer check.Stop()
	var graceOver <-chan time.Time
	if !w.graceUntil.IsZero() {
		t := time.NewTimer(time.Until(w.graceUntil))
		defer t.Stop()
		graceOver = t.C
	}
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return rev, ctx.Err()
		case <-graceOver:
			return rev, errGraceOver
		case <-check.C:
			if err := m.checkNotReset(ctx, rev); err != nil {
				return rev, err
			}
			continue
		case wr, ok = <-wch:
		}
		if !ok {
			break
		}
		if err := wr.Err(); err != nil {
			return rev, err
		}
		bo.reset()
		if wr.IsProgressNotify() {
			// Sent only to a synced watcher: every event up to this revision
			// has been delivered.
			rev = max(rev, wr.Header.Revision)
			continue
		}
		var evs []Event
		for _, ev := range wr.Events {
			evs = append(evs, w.apply(ev)...)
			rev = ev.Kv.ModRevision
		}
		if len(evs) > 0 {
			w.handle(evs)
		}
	}
	return rev, errors.New("watch closed")
}

// apply turns one etcd event into lease events and updates the reported view.
func (w *leaseWatcher) apply(ev *clientv3.Event) []Event {
	m := w.m
	key := string(ev.Kv.Key)
	p, err := ParseSubnetKey(strings.TrimPrefix(key, m.SubnetsPrefix()))
	if err != nil {
		m.log.Warn("ignoring malformed lease key", "key", key, "err", err)
		return nil
	}
	if ev.Type == clientv3.EventTypeDelete {
		old, ok := w.reported[p]
		if !ok {
			return nil // never reported (e.g. it held a malformed value)
		}
		delete(w.reported, p)
		old.Revision = ev.Kv.ModRevision
		return []Event{{Type: Removed, Lease: old}}
	}
	l, err := kvToLease(m.SubnetsPrefix(), ev.Kv)
	if err != nil {
		m.log.Warn("ignoring malformed lease", "key", key, "err", err)
		if old, ok := w.reported[p]; ok {
			// The valid lease we reported has been overwritten: to the
			// consumer it is gone, which is also what a re-list would say.
			delete(w.reported, p)
			return []Event{{Type: Removed, Lease: old}}
		}
		return nil
	}
	w.reported[p] = l
	return []Event{{Type: Added, Lease: l}}
}

// diff reconciles the reported view with a fresh listing: Removed for leases
// that vanished (unless keep: then they stay in the view), Added for new ones
// and ones written since they were reported.
func (w *leaseWatcher) diff(current []Lease, keep bool) []Event {
	now := make(map[netip.Prefix]Lease, len(current))
	for _, l := range current {
		now[l.Subnet] = l
	}
	var removed, added []Event
	for p, old := range w.reported {
		if _, ok := now[p]; !ok && !keep {
			removed = append(removed, Event{Type: Removed, Lease: old})
			delete(w.reported, p)
		}
	}
	for _, l := range current {
		if old, ok := w.reported[l.Subnet]; !ok || old.Revision != l.Revision {
			added = append(added, Event{Type: Added, Lease: l})
			w.reported[l.Subnet] = l
		}
	}
	byPrefix := func(a, b Event) int { return comparePrefix(a.Lease.Subnet, b.Lease.Subnet) }
	slices.SortFunc(removed, byPrefix)
	slices.SortFunc(added, byPrefix) // already sorted by list, kept explicit
	return append(removed, added...)
}

// startGrace keeps, for storeResetGrace, the leases a reset store lacks.
func (w *leaseWatcher) startGrace() {
	grace := w.m.storeResetGrace()
	w.graceUntil = time.Now().Add(grace)
	w.m.log.Info("keeping the leases the new store lacks while their owners re-create them", "grace", grace)
}

// view is the caller's view as a sorted list (outside a grace: the listing
// just diffed).
func (w *leaseWatcher) view() []Lease {
	out := make([]Lease, 0, len(w.reported))
	for _, l := range w.reported {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return comparePrefix(a.Subnet, b.Subnet) })
	return out
}

// ErrStoreReset says etcd's revision went backwards: its data was replaced
// (wiped, restored from an old backup, a new cluster at the same address). A
// watch on the old revision would wait silently for a revision the new store
// may take hours to reach, so the caller must re-read everything.
var ErrStoreReset = errors.New("etcd's store was reset")

// resetCheckInterval is how often a long-lived watch or lease keeper makes
// sure that etcd still holds the history it follows: one small read.
func (m *Manager) resetCheckInterval() time.Duration {
	if m.resetCheck > 0 {
		return m.resetCheck
	}
	return 10 * time.Second
}

// checkNotReset reads etcd's current revision and fails with ErrStoreReset
// when it is below rev, a revision this client has already seen. A read that
// fails is not a reset: the watch's own errors report etcd trouble.
func (m *Manager) checkNotReset(ctx context.Context, rev int64) error {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil
	}
	if resp.Header.Revision < rev {
		return fmt.Errorf("revision %d, below %d already seen: %w", resp.Header.Revision, rev, ErrStoreReset)
	}
	return nil
}
