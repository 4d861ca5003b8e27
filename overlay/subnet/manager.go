// Package subnet leases per-host subnets from etcd v3. Keys, values and the
// use of etcd leases match upstream flannel's etcd v3 registry, so flannel
// agents and overlaylab agents can share one registry:
//
//	<prefix>/config                 network config (see package config)
//	<prefix>/subnets/10.10.3.0-24   {"PublicIP":"192.168.77.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}
//
// Every lease key is attached to its own etcd lease whose TTL is the subnet
// lease's TTL, so a host that stops renewing loses its subnet without anyone
// cleaning up after it.
package subnet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// Defaults for Options.
const (
	DefaultPrefix         = "/coreos.com/network"
	DefaultTTL            = 24 * time.Hour
	DefaultRenewMargin    = time.Hour
	DefaultRequestTimeout = 5 * time.Second
)

// maxAcquireAttempts bounds how often Acquire re-lists after losing a race.
// Every lost race means another host won a subnet, so progress is made;
// the bound only stops a pathological loop.
const maxAcquireAttempts = 32

var (
	// ErrNoConfig: the config key does not exist (as opposed to a malformed value).
	ErrNoConfig = errors.New("network config not found")
	// ErrNoFreeSubnet: every subnet in SubnetMin..SubnetMax is leased.
	ErrNoFreeSubnet = errors.New("no free subnet")
	// ErrLeaseLost: the lease key is gone or now belongs to another etcd lease.
	ErrLeaseLost = errors.New("subnet lease lost")
)

// Options tune a Manager. The zero value gives flannel's defaults.
type Options struct {
	Prefix      string        // default DefaultPrefix
	TTL         time.Duration // default 24h; rounded up to whole seconds (etcd's unit)
	RenewMargin time.Duration // default 1h; renew when Expiration-now < RenewMargin
	// Rand picks random free subnets; nil seeds one randomly. Tests and the
	// lab pass a seeded one so that a failing run can be reproduced.
	Rand   *rand.Rand
	Logger *slog.Logger // nil = slog.Default()
	// RequestTimeout bounds each etcd request (default 5s). Without it a
	// request to an unreachable etcd blocks until the caller's ctx ends, and
	// the keep/watch loops could not log and back off.
	RequestTimeout time.Duration
}

// Manager acquires, renews and watches subnet leases. It is safe for
// concurrent use.
type Manager struct {
	cli         *clientv3.Client
	prefix      string
	ttl         time.Duration
	renewMargin time.Duration
	reqTimeout  time.Duration
	// resetCheck is how often watchers and the keeper make sure etcd's
	// store was not replaced (0: resetCheckInterval's default; tests
	// shorten it).
	resetCheck time.Duration
	log        *slog.Logger

	randMu sync.Mutex // *rand.Rand is not safe for concurrent use
	rand   *rand.Rand

	renewals      atomic.Uint64
	renewFailures atomic.Uint64
	reacquired    atomic.Uint64

	// testHookBeforeWatch, when set, runs in WatchLeases right before each
	// Watch is opened at rev+1; tests use it to compact the store at exactly
	// the moment that forces ErrCompacted.
	testHookBeforeWatch func(rev int64)
}

// Stats counts what KeepLease did, for the agent's /metrics.
type Stats struct{ Renewals, RenewFailures, Reacquired uint64 }

// Stats returns the lease counters.
func (m *Manager) Stats() Stats {
	return Stats{Renewals: m.renewals.Load(), RenewFailures: m.renewFailures.Load(), Reacquired: m.reacquired.Load()}
}

// NewManager returns a Manager using cli. Non-positive durations take defaults.
func NewManager(cli *clientv3.Client, o Options) *Manager {
	m := &Manager{
		cli:         cli,
		prefix:      strings.TrimRight(o.Prefix, "/"),
		ttl:         o.TTL,
		renewMargin: o.RenewMargin,
		reqTimeout:  o.RequestTimeout,
		log:         o.Logger,
		rand:        o.Rand,
	}
	if o.Prefix == "" {
		m.prefix = DefaultPrefix
	}
	if m.ttl <= 0 {
		m.ttl = DefaultTTL
	}
	if m.renewMargin <= 0 {
		m.renewMargin = DefaultRenewMargin
	}
	if m.reqTimeout <= 0 {
		m.reqTimeout = DefaultRequestTimeout
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.rand == nil {
		m.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return m
}

// ConfigKey is the etcd key holding the network config.
func (m *Manager) ConfigKey() string { return m.prefix + "/config" }

// SubnetsPrefix is the etcd key prefix under which lease keys live. The
// trailing slash keeps a watch on it from matching flannel's "subnets6".
func (m *Manager) SubnetsPrefix() string { return m.prefix + "/subnets/" }

// LeaseKey is the etcd key of the lease for p.
func (m *Manager) LeaseKey(p netip.Prefix) string { return m.SubnetsPrefix() + SubnetKey(p) }

func (m *Manager) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.reqTimeout)
}

// ttlSeconds is the TTL requested from etcd, rounded up so that a lease never
// lives shorter than asked.
func (m *Manager) ttlSeconds() int64 {
	s := int64((m.ttl + time.Second - 1) / time.Second)
	return max(s, 1)
}

// GetConfig reads and parses the network config. A missing key wraps
// ErrNoConfig; a malformed value returns the config.Parse error.
func (m *Manager) GetConfig(ctx context.Context) (*config.Config, error) {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.ConfigKey())
	if err != nil {
		return nil, fmt.Errorf("get config %s: %w", m.ConfigKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("get config %s: %w", m.ConfigKey(), ErrNoConfig)
	}
	return m.parseConfig(resp.Kvs[0].Value)
}

func (m *Manager) parseConfig(v []byte) (*config.Config, error) {
	c, err := config.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", m.ConfigKey(), err)
	}
	return c, nil
}

// SetConfig validates cfg and writes it to the config key (what
// `etcdctl put <prefix>/config` does for flannel).
func (m *Manager) SetConfig(ctx context.Context, cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("set config %s: %w", m.ConfigKey(), err)
	}
	v, err := cfg.Marshal()
	if err != nil {
		return fmt.Errorf("set config %s: %w", m.ConfigKey(), err)
	}
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	if _, err := m.cli.Put(rctx, m.ConfigKey(), string(v)); err != nil {
		return fmt.Errorf("set config %s: %w", m.ConfigKey(), err)
	}
	return nil
}

// snapshot is the lease set at one revision. taken also holds subnets whose
// key parses but whose value does not: they are still occupied in etcd, and
// picking them would only lose the create txn again and again.
type snapshot struct {
	leases []Lease
	taken  []netip.Prefix
	rev    int64
}

func (m *Manager) list(ctx context.Context) (snapshot, error) {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, m.SubnetsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return snapshot{}, fmt.Errorf("list leases under %s: %w", m.SubnetsPrefix(), err)
	}
	s := snapshot{rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		l, err := kvToLease(m.SubnetsPrefix(), kv)
		if err != nil {
			m.log.Warn("skipping malformed lease", "key", string(kv.Key), "err", err)
			if p, perr := ParseSubnetKey(strings.TrimPrefix(string(kv.Key), m.SubnetsPrefix())); perr == nil {
				s.taken = append(s.taken, p)
			}
			continue
		}
		s.leases = append(s.leases, l)
		s.taken = append(s.taken, l.Subnet)
	}
	// etcd orders keys as strings ("10.10.10.0" before "10.10.2.0"); order
	// numerically so callers and logs see a stable, natural order.
	slices.SortFunc(s.leases, func(a, b Lease) int { return comparePrefix(a.Subnet, b.Subnet) })
	return s, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// Leases returns all current leases and the revision they were read at, to be
// passed to WatchLeases. Malformed keys or values are logged and skipped.
func (m *Manager) Leases(ctx context.Context) ([]Lease, int64, error) {
	s, err := m.list(ctx)
	if err != nil {
		return nil, 0, err
	}
	return s.leases, s.rev, nil
}

// Expiration asks etcd when l's etcd lease expires.
func (m *Manager) Expiration(ctx context.Context, l *Lease) (time.Time, error) {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	now := time.Now()
	resp, err := m.cli.TimeToLive(rctx, l.EtcdLease)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease %s: time to live: %w", l.Subnet, err)
	}
	if resp.TTL <= 0 {
		return time.Time{}, fmt.Errorf("lease %s: %w", l.Subnet, ErrLeaseLost)
	}
	return now.Add(time.Duration(resp.TTL) * time.Second), nil
}

// Acquire obtains a subnet lease for attrs, in flannel's order of preference:
//  1. an existing lease with attrs.PublicIP inside cfg's range (this host
//     restarted): take it over with a fresh etcd lease;
//  2. prev (from subnet.env), if leasable and free;
//  3. a random free subnet.
//
// Random choice keeps concurrently starting hosts from all racing for the
// lowest free subnet.
func (m *Manager) Acquire(ctx context.Context, cfg *config.Config, attrs LeaseAttrs, prev netip.Prefix) (*Lease, error) {
	if cfg == nil {
		return nil, errors.New("acquire subnet: nil config")
	}
	if !attrs.PublicIP.IsValid() {
		return nil, errors.New("acquire subnet: PublicIP is required")
	}
	val, err := json.Marshal(attrs)
	if err != nil {
		return nil, fmt.Errorf("acquire subnet for %s: encode attrs: %w", attrs.PublicIP, err)
	}

	// One etcd lease serves every attempt; if no attempt uses it, it is
	// revoked so that it does not linger until its TTL runs out.
	var g grant
	defer func() {
		if g.id != 0 {
			m.revokeQuietly(ctx, g.id)
		}
	}()

	for attempt := 1; attempt <= maxAcquireAttempts; attempt++ {
		snap, err := m.list(ctx)
		if err != nil {
			return nil, fmt.Errorf("acquire subnet for %s: %w", attrs.PublicIP, err)
		}
		if own, ok := m.findOwn(snap.leases, cfg, attrs.PublicIP, prev); ok {
			if g.id == 0 {
				if g, err = m.grant(ctx); err != nil {
					return nil, fmt.Errorf("acquire subnet for %s: %w", attrs.PublicIP, err)
				}
			}
			l, won, err := m.put(ctx, own.Subnet, clientv3.Compare(clientv3.ModRevision(m.LeaseKey(own.Subnet)), "=", own.Revision), val, attrs, g)
			if err != nil {
				return nil, fmt.Errorf("acquire subnet %s for %s: take over: %w", own.Subnet, attrs.PublicIP, err)
			}
			if !won {
				m.log.Debug("lease changed while taking it over; retrying", "subnet", own.Subnet, "attempt", attempt)
				continue
			}
			g.id = 0
			if own.EtcdLease != 0 && own.EtcdLease != l.EtcdLease {
				// The key is detached from the old etcd lease, which now
				// guards nothing; revoke it rather than let it linger for a
				// TTL. Errors do not matter: it expires anyway.
				m.revokeQuietly(ctx, own.EtcdLease)
			}
			m.log.Info("reusing lease", "subnet", l.Subnet, "publicIP", attrs.PublicIP)
			return l, nil
		}

		want, err := m.pickSubnet(cfg, snap.taken, prev)
		if err != nil {
			return nil, fmt.Errorf("acquire subnet for %s: %w", attrs.PublicIP, err)
		}
		if g.id == 0 {
			if g, err = m.grant(ctx); err != nil {
				return nil, fmt.Errorf("acquire subnet %s for %s: %w", want, attrs.PublicIP, err)
			}
		}
		l, won, err := m.put(ctx, want, clientv3.Compare(clientv3.CreateRevision(m.LeaseKey(want)), "=", 0), val, attrs, g)
		if err != nil {
			return nil, fmt.Errorf("acquire subnet %s for %s: %w", want, attrs.PublicIP, err)
		}
		if !won {
			m.log.Debug("subnet taken concurrently; retrying", "subnet", want, "attempt", attempt)
			continue
		}
		g.id = 0
		m.log.Info("acquired lease", "subnet", l.Subnet, "publicIP", attrs.PublicIP)
		return l, nil
	}
	return nil, fmt.Errorf("acquire subnet for %s: lost the race for a subnet %d times in a row", attrs.PublicIP, maxAcquireAttempts)
}

// findOwn finds a lease already held by publicIP. With several (possible
// after a config change or a crash mid-takeover), the one matching prev wins,
// then the lowest.
func (m *Manager) findOwn(leases []Lease, cfg *config.Config, publicIP netip.Addr, prev netip.Prefix) (Lease, bool) {
	var found []Lease
	for _, l := range leases {
		if l.Attrs.PublicIP == publicIP && cfg.Contains(l.Subnet) {
			found = append(found, l)
		}
	}
	if len(found) == 0 {
		return Lease{}, false
	}
	if len(found) > 1 {
		m.log.Warn("several leases carry this public IP; reusing one, the others expire", "publicIP", publicIP, "count", len(found))
	}
	for _, l := range found {
		if l.Subnet == prev {
			return l, true
		}
	}
	return found[0], true
}

// pickSubnet returns prev if it is leasable and free, else a random free subnet.
func (m *Manager) pickSubnet(cfg *config.Config, taken []netip.Prefix, prev netip.Prefix) (netip.Prefix, error) {
	used := coveredIndexes(cfg, taken)
	if prev.IsValid() && cfg.Contains(prev) {
		i, _ := cfg.SubnetIndex(prev)
		if !used.contains(i) {
			return prev, nil
		}
	}
	count := cfg.SubnetCount()
	free := count - used.total()
	if free <= 0 {
		return netip.Prefix{}, fmt.Errorf("%w in range %s..%s (all %d leased)",
			ErrNoFreeSubnet, cfg.NthSubnet(0), cfg.NthSubnet(count-1), count)
	}
	// Draw over the whole range and probe forward to the next free subnet,
	// rather than drawing among the free ones: a seeded agent then gets the
	// same subnet whatever the others took before it (unless they took
	// exactly its pick), which keeps seeded labs reproducible.
	m.randMu.Lock()
	k := m.rand.IntN(count)
	m.randMu.Unlock()
	for n := range count {
		if i := (k + n) % count; !used.contains(i) {
			return cfg.NthSubnet(i), nil
		}
	}
	return cfg.NthSubnet(used.nthFree(0)), nil
}

// intervals is a sorted, merged list of closed index ranges.
type intervals [][2]int

// coveredIndexes maps every taken prefix to the range of subnet indexes it
// overlaps. A lease of another length (left over from an earlier SubnetLen)
// blocks every subnet it overlaps, since routing both would conflict.
func coveredIndexes(cfg *config.Config, taken []netip.Prefix) intervals {
	count := cfg.SubnetCount()
	if count == 0 {
		return nil
	}
	base := u32(cfg.SubnetMin)
	shift := 32 - cfg.SubnetLen
	end := base + uint64(count)<<shift - 1 // last address of the last subnet
	var iv intervals
	for _, p := range taken {
		if !p.Addr().Is4() {
			continue
		}
		lo := u32(p.Masked().Addr())
		hi := lo + (uint64(1) << (32 - p.Bits())) - 1
		if hi < base || lo > end {
			continue
		}
		lo, hi = max(lo, base), min(hi, end)
		iv = append(iv, [2]int{int((lo - base) >> shift), int((hi - base) >> shift)})
	}
	slices.SortFunc(iv, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) })
	merged := iv[:0]
	for _, r := range iv {
		if n := len(merged); n > 0 && r[0] <= merged[n-1][1]+1 {
			merged[n-1][1] = max(merged[n-1][1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

func (iv intervals) total() int {
	n := 0
	for _, r := range iv {
		n += r[1] - r[0] + 1
	}
	return n
}

func (iv intervals) contains(i int) bool {
	for _, r := range iv {
		if i >= r[0] && i <= r[1] {
			return true
		}
	}
	return false
}

// nthFree returns the index of the k-th (0-based) index not covered by iv.
func (iv intervals) nthFree(k int) int {
	i := k
	for _, r := range iv {
		if r[0] > i {
			break
		}
		i += r[1] - r[0] + 1
	}
	return i
}

func u32(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

// grant is an etcd lease and when it was asked for.
type grant struct {
	id      clientv3.LeaseID
	ttl     time.Duration
	granted time.Time // taken before the request: expiry estimates err early
}

func (m *Manager) grant(ctx context.Context) (grant, error) {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := m.cli.Grant(rctx, m.ttlSeconds())
	if err != nil {
		return grant{}, fmt.Errorf("grant etcd lease (ttl %ds): %w", m.ttlSeconds(), err)
	}
	// etcd may raise a TTL below its minimum; trust what it says.
	return grant{id: resp.ID, ttl: time.Duration(resp.TTL) * time.Second, granted: start}, nil
}

// put writes the lease key for p attached to g, if cond holds. won is false
// when cond failed (someone else changed or created the key first).
func (m *Manager) put(ctx context.Context, p netip.Prefix, cond clientv3.Cmp, val []byte, attrs LeaseAttrs, g grant) (l *Lease, won bool, err error) {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	key := m.LeaseKey(p)
	resp, err := m.cli.Txn(rctx).If(cond).Then(clientv3.OpPut(key, string(val), clientv3.WithLease(g.id))).Commit()
	if err != nil {
		return nil, false, fmt.Errorf("txn on %s: %w", key, err)
	}
	if !resp.Succeeded {
		return nil, false, nil
	}
	return &Lease{
		Subnet:     p,
		Attrs:      attrs,
		Expiration: g.granted.Add(g.ttl),
		EtcdLease:  g.id,
		Revision:   resp.Header.Revision, // the txn's only write: the key's ModRevision
	}, true, nil
}

// revokeQuietly revokes an etcd lease we no longer need. It must run even
// when ctx is already cancelled, otherwise an aborted Acquire would leave
// orphan leases behind for a whole TTL.
func (m *Manager) revokeQuietly(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := m.reqCtx(context.WithoutCancel(ctx))
	defer cancel()
	if _, err := m.cli.Revoke(rctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		m.log.Debug("revoke unused etcd lease", "lease", fmt.Sprintf("%x", int64(id)), "err", err)
	}
}

// Renew extends l's etcd lease by a full TTL and updates l.Expiration and
// l.Revision. It fails with ErrLeaseLost when the key is gone, is attached to
// another etcd lease, or the etcd lease has expired.
func (m *Manager) Renew(ctx context.Context, l *Lease) error {
	key := m.LeaseKey(l.Subnet)
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	resp, err := m.cli.Get(rctx, key)
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.Subnet, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("renew lease %s: key %s is gone: %w", l.Subnet, key, ErrLeaseLost)
	}
	kv := resp.Kvs[0]
	if clientv3.LeaseID(kv.Lease) != l.EtcdLease {
		return fmt.Errorf("renew lease %s: key now held by etcd lease %x, not %x: %w", l.Subnet, kv.Lease, int64(l.EtcdLease), ErrLeaseLost)
	}
	start := time.Now()
	ka, err := m.cli.KeepAliveOnce(rctx, l.EtcdLease)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("renew lease %s: etcd lease %x expired: %w", l.Subnet, int64(l.EtcdLease), ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.Subnet, err)
	}
	l.Expiration = start.Add(time.Duration(ka.TTL) * time.Second)
	l.Revision = kv.ModRevision
	return nil
}

// Revoke gives l up: revoking its etcd lease deletes the key at once, so peers
// drop their routes without waiting for the TTL. Revoking an already expired
// lease is not an error.
func (m *Manager) Revoke(ctx context.Context, l *Lease) error {
	rctx, cancel := m.reqCtx(ctx)
	defer cancel()
	if l.EtcdLease == 0 {
		// A key without an etcd lease (written by hand): delete it, but only
		// if it is still the value we know.
		key := m.LeaseKey(l.Subnet)
		_, err := m.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", l.Revision)).Then(clientv3.OpDelete(key)).Commit()
		if err != nil {
			return fmt.Errorf("revoke lease %s: %w", l.Subnet, err)
		}
		return nil
	}
	if _, err := m.cli.Revoke(rctx, l.EtcdLease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke lease %s: %w", l.Subnet, err)
	}
	return nil
}
