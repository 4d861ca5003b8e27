package subnet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// KeepLease holds on to l until ctx is done. It renews the etcd lease
// RenewMargin before expiry and watches the lease key; when the key is deleted
// or the lease is otherwise lost (for example it expired while etcd was
// unreachable), it acquires a lease again, preferring the same subnet, and
// reports the new lease through onChange (which may be nil). Etcd errors are
// logged and retried with backoff: an agent must never give up its subnet
// because etcd blinked. It returns ctx.Err() when ctx is done.
//
// l itself is not modified (the caller may be reading it); the current lease
// is the last one passed to onChange.
func (m *Manager) KeepLease(ctx context.Context, cfg *config.Config, l *Lease, onChange func(Lease)) error {
	cur := *l
	lost := false
	bo := newBackoff()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if lost {
			nl, err := m.Acquire(ctx, cfg, cur.Attrs, cur.Subnet)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d := bo.next()
				m.log.Error("re-acquire subnet lease failed; retrying", "subnet", cur.Subnet, "err", err, "retryIn", d)
				if m.pause(ctx, d) != nil {
					return ctx.Err()
				}
				continue
			}
			if nl.Subnet != cur.Subnet {
				m.log.Warn("lease re-acquired with a different subnet", "old", cur.Subnet, "new", nl.Subnet)
			} else {
				m.log.Info("lease re-acquired", "subnet", nl.Subnet)
			}
			cur, lost = *nl, false
			m.reacquired.Add(1)
			bo.reset()
			if onChange != nil {
				onChange(cur)
			}
		}

		err := m.keepOnce(ctx, &cur, bo)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrLeaseLost):
			m.log.Warn("subnet lease lost; re-acquiring", "subnet", cur.Subnet, "err", err)
			lost = true
		default:
			d := bo.next()
			m.log.Warn("keeping subnet lease failed; retrying", "subnet", cur.Subnet, "err", err, "retryIn", d)
			if m.pause(ctx, d) != nil {
				return ctx.Err()
			}
		}
	}
}

// renewCheckInterval is how often KeepLease looks at the expiry: often enough
// to renew inside the margin even when the margin is a large part of the TTL.
func (m *Manager) renewCheckInterval() time.Duration {
	return max(min(m.ttl/3, m.renewMargin/2), 50*time.Millisecond)
}

// keepOnce renews and watches cur until something goes wrong. It returns an
// ErrLeaseLost-wrapping error when the lease is gone, another error for etcd
// trouble, and never nil.
func (m *Manager) keepOnce(ctx context.Context, cur *Lease, bo *backoff) error {
	key := m.LeaseKey(cur.Subnet)
	rctx, cancel := m.reqCtx(ctx)
	resp, err := m.cli.Get(rctx, key)
	cancel()
	if err != nil {
		return fmt.Errorf("keep lease %s: %w", cur.Subnet, err)
	}
	if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != cur.EtcdLease {
		return fmt.Errorf("keep lease %s: key missing or re-leased: %w", cur.Subnet, ErrLeaseLost)
	}

	// Require a leader so that a partitioned member cannot keep a watch open
	// that silently never delivers the deletion of our key.
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	wch := m.cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1))

	tick := time.NewTicker(min(m.renewCheckInterval(), m.resetCheckInterval()))
	defer tick.Stop()
	verified := time.Now()
	for {
		// The watch on our key cannot see it vanish with a store that was
		// wiped (its history starts over below our revision): read the key
		// itself now and then.
		if time.Since(verified) >= m.resetCheckInterval() {
			if err := m.verifyLease(ctx, key, cur); err != nil {
				return err
			}
			verified = time.Now()
		}
		if time.Until(cur.Expiration) < m.renewMargin {
			if err := m.Renew(ctx, cur); err != nil {
				m.renewFailures.Add(1)
				return err
			}
			m.renewals.Add(1)
			m.log.Info("renewed subnet lease", "subnet", cur.Subnet, "expires", cur.Expiration.Format(time.RFC3339))
		}
		bo.reset() // etcd answered: the next failure starts from a short delay
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case wr, ok := <-wch:
			if !ok {
				return fmt.Errorf("keep lease %s: watch closed", cur.Subnet)
			}
			if err := wr.Err(); err != nil {
				// Includes compaction: re-reading the key settles it.
				return fmt.Errorf("keep lease %s: watch: %w", cur.Subnet, err)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return fmt.Errorf("keep lease %s: key deleted: %w", cur.Subnet, ErrLeaseLost)
				}
				if clientv3.LeaseID(ev.Kv.Lease) != cur.EtcdLease {
					return fmt.Errorf("keep lease %s: key taken over by etcd lease %x: %w", cur.Subnet, ev.Kv.Lease, ErrLeaseLost)
				}
				cur.Revision = ev.Kv.ModRevision
			}
		}
	}
}

// backoff is capped exponential backoff with jitter, so that many agents
// reconnecting after an etcd restart do not hammer it in lockstep.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff() *backoff { return &backoff{min: 100 * time.Millisecond, max: 5 * time.Second} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1) // jitter only: no need for the Manager's seeded source
}

func (b *backoff) reset() { b.cur = 0 }

// pause waits d before a failed etcd request is retried, but ends as soon
// as the client's connection to etcd, seen down during the pause, is ready
// again: after an outage the lease must be renewed in well under a short
// TTL, not a whole backoff step later. gRPC already spreads the reconnects
// of many agents with its own jittered backoff.
func (m *Manager) pause(ctx context.Context, d time.Duration) error {
	conn := m.cli.ActiveConnection()
	if conn == nil {
		return sleep(ctx, d)
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for st := conn.GetState(); ; {
		if !conn.WaitForStateChange(wctx, st) {
			return ctx.Err() // d passed (nil) or ctx ended
		}
		next := conn.GetState()
		if next == connectivity.Ready && st != connectivity.Ready {
			return nil
		}
		st = next
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// verifyLease reads the lease key and fails with ErrLeaseLost when it is
// gone or held by another etcd lease. A read that fails is etcd trouble, not
// a lost lease.
func (m *Manager) verifyLease(ctx context.Context, key string, cur *Lease) error {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, key)
	if err != nil {
		return nil
	}
	if len(resp.Kvs) == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) != cur.EtcdLease {
		return fmt.Errorf("keep lease %s: key missing or re-leased (etcd at revision %d): %w", cur.Subnet, resp.Header.Revision, ErrLeaseLost)
	}
	return nil
}
