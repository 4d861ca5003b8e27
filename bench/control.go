package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	etcdversion "go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"

	"github.com/overlaylab/overlaylab/internal/loopetcd"
)

// ControlOptions configure a control-plane run.
type ControlOptions struct {
	Agents          int           // lease-only agents; default 1000
	AgentsPerClient int           // agents sharing one etcd client; default 50
	Network         string        // default 10.0.0.0/8
	SubnetLen       int           // default 24
	Timeout         time.Duration // for the whole run; default 5m
	Command         string        // how the run was invoked, for the report
	Progress        io.Writer     // nil = quiet
}

func (o *ControlOptions) defaults() error {
	if o.Agents == 0 {
		o.Agents = 1000
	}
	if o.AgentsPerClient == 0 {
		o.AgentsPerClient = 50
	}
	if o.Network == "" {
		o.Network = "10.0.0.0/8"
	}
	if o.SubnetLen == 0 {
		o.SubnetLen = 24
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	switch {
	case o.Agents < 1:
		return fmt.Errorf("--agents %d: need at least 1", o.Agents)
	case o.Agents > 1<<20:
		return fmt.Errorf("--agents %d: at most %d (each needs its own PublicIP)", o.Agents, 1<<20)
	case o.AgentsPerClient < 1:
		return fmt.Errorf("--agents-per-client %d: need at least 1", o.AgentsPerClient)
	}
	return nil
}

// ControlReport is the outcome of a control-plane run.
type ControlReport struct {
	Date      time.Time `json:"date"`
	Machine   Machine   `json:"machine"`
	Command   string    `json:"command"`
	Agents    int       `json:"agents"`
	Clients   int       `json:"clients"`
	Network   string    `json:"network"`
	SubnetLen int       `json:"subnetLen"`
	Subnets   int       `json:"subnets"` // leasable subnets in the Network
	Etcd      string    `json:"etcd"`

	AcquireP50Ms  float64 `json:"acquireP50Ms"`
	AcquireP99Ms  float64 `json:"acquireP99Ms"`
	AcquireMaxMs  float64 `json:"acquireMaxMs"`
	AcquireFailed int     `json:"acquireFailed"`
	// AllSeenMs: from the common start until the last agent had seen every
	// lease; 0 when some agent never did (Converged < Agents).
	AllSeenMs float64 `json:"allSeenMs"`
	SeenP50Ms float64 `json:"seenP50Ms"` // the median agent's time to see every lease
	Converged int     `json:"converged"` // agents that saw every lease

	Keys              int  `json:"keys"`
	DistinctSubnets   int  `json:"distinctSubnets"`
	DistinctPublicIPs int  `json:"distinctPublicIPs"`
	DuplicateSubnets  int  `json:"duplicateSubnets"` // agents holding a subnet another agent also holds
	OverlappingKeys   int  `json:"overlappingKeys"`
	OK                bool `json:"ok"`

	Errors     []string `json:"errors,omitempty"` // the first few
	ElapsedSec float64  `json:"elapsedSec"`
}

// controlAgent is one lease-only agent's outcome.
type controlAgent struct {
	acquire time.Duration
	subnet  netip.Prefix
	seenAt  time.Duration // since the common start; 0 = not (yet) all
	err     error
}

// RunControl starts an etcd in-process on loopback, writes a network
// config, starts every agent at the same instant (each a subnet.Manager on a
// shared client), and measures how long each takes to acquire a lease and
// how long until every agent has seen every lease (Leases, then WatchLeases
// from that revision, as the real agent does). It then lists the keys to
// verify N keys, N distinct subnets and each PublicIP once.
func RunControl(ctx context.Context, o ControlOptions) (*ControlReport, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	started := time.Now()
	pf := func(format string, args ...any) { fmt.Fprintf(o.Progress, format, args...) }
	cfg, err := config.Parse(fmt.Appendf(nil, `{"Network":%q,"SubnetLen":%d,"Backend":{"Type":%q}}`, o.Network, o.SubnetLen, config.BackendUDP))
	if err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if n := cfg.SubnetCount(); n < o.Agents {
		return nil, fmt.Errorf("--agents %d: the Network %s with /%d subnets has only %d leasable subnets", o.Agents, cfg.Network, cfg.SubnetLen, n)
	}
	rep := &ControlReport{
		Date: started.UTC().Truncate(time.Second), Machine: ReadMachine(), Command: o.Command,
		Agents: o.Agents, Network: cfg.Network.String(), SubnetLen: cfg.SubnetLen, Subnets: cfg.SubnetCount(),
	}

	dir, err := os.MkdirTemp("", "overlaylab-bench-etcd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := loopetcd.Start(dir)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	endpoint := srv.Endpoint
	rep.Etcd = fmt.Sprintf("etcd %s embedded in the benchmark process on %s, data dir on %s", etcdversion.Version, endpoint, fsType(dir))
	pf("control: %s\n", rep.Etcd)

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	nClients := (o.Agents + o.AgentsPerClient - 1) / o.AgentsPerClient
	rep.Clients = nClients
	clients := make([]*clientv3.Client, nClients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		c, err := srv.Client()
		if err != nil {
			return nil, fmt.Errorf("etcd client: %w", err)
		}
		clients[i] = c
	}
	quiet := slog.New(slog.DiscardHandler)
	admin := subnet.NewManager(clients[0], subnet.Options{Logger: quiet})
	if err := admin.SetConfig(ctx, cfg); err != nil {
		return nil, err
	}

	managers := make([]*subnet.Manager, o.Agents)
	for i := range managers {
		managers[i] = subnet.NewManager(clients[i%nClients], subnet.Options{
			Logger: quiet,
			// Seeded: the same run picks the same subnets (races aside).
			Rand: rand.New(rand.NewPCG(0x6f6c, uint64(i))),
			// Under a thousand simultaneous requests on a small machine a
			// request may queue for seconds; that is what we measure, not
			// a failure.
			RequestTimeout: o.Timeout,
		})
	}

	results := runControlAgents(ctx, o, cfg, managers, nClients, pf)
	rep.figures(results, o.Agents)
	if err := rep.verify(ctx, admin, o.Agents); err != nil {
		return rep, err
	}
	rep.ElapsedSec = time.Since(started).Round(100 * time.Millisecond).Seconds()
	if err := ctx.Err(); err != nil && rep.Converged < o.Agents {
		return rep, fmt.Errorf("control bench: %d/%d agents saw every lease before %w", rep.Converged, o.Agents, err)
	}
	return rep, nil
}

// runControlAgents starts every manager at the same instant and waits until
// each has acquired a lease and seen every lease (or failed), printing
// progress every two seconds.
func runControlAgents(ctx context.Context, o ControlOptions, cfg *config.Config, managers []*subnet.Manager, nClients int, pf func(string, ...any)) []controlAgent {
	results := make([]controlAgent, o.Agents)
	var acquired, converged atomic.Int64
	startGate := make(chan struct{})
	var wg sync.WaitGroup
	var t0 time.Time
	for i := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			m := managers[i]
			attrs := subnet.LeaseAttrs{PublicIP: agentIP(i), BackendType: config.BackendUDP}
			<-startGate
			begin := time.Now()
			l, err := m.Acquire(ctx, cfg, attrs, netip.Prefix{})
			res.acquire = time.Since(begin)
			if err != nil {
				res.err = fmt.Errorf("agent %d (%s): acquire: %w", i, attrs.PublicIP, err)
				return
			}
			res.subnet = l.Subnet
			acquired.Add(1)
			res.err = watchUntilAll(ctx, m, o.Agents, func() {
				res.seenAt = time.Since(t0)
				converged.Add(1)
			})
			if res.err != nil {
				res.err = fmt.Errorf("agent %d (%s): %w", i, attrs.PublicIP, res.err)
			}
		}()
	}
	pf("control: %d agents on %d etcd clients, all starting at once\n", o.Agents, nClients)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t0 = time.Now()
	close(startGate)
	tick := time.NewTicker(2 * time.Second)
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			pf("  %s: %d/%d acquired, %d/%d have seen every lease\n", time.Since(t0).Round(100*time.Millisecond), acquired.Load(), o.Agents, converged.Load(), o.Agents)
		}
	}
	tick.Stop()
	pf("  %s: %d/%d acquired, %d/%d have seen every lease\n", time.Since(t0).Round(time.Millisecond), acquired.Load(), o.Agents, converged.Load(), o.Agents)
	return results
}

// figures fills the acquire and convergence figures from the agents'
// outcomes.
func (rep *ControlReport) figures(results []controlAgent, agents int) {
	var acq, seen []float64
	held := map[netip.Prefix]int{}
	for _, r := range results {
		if r.err != nil && len(rep.Errors) < 5 {
			rep.Errors = append(rep.Errors, r.err.Error())
		}
		if !r.subnet.IsValid() {
			rep.AcquireFailed++
			continue
		}
		acq = append(acq, ms(r.acquire))
		held[r.subnet]++
		if r.seenAt > 0 {
			seen = append(seen, ms(r.seenAt))
		}
	}
	for _, n := range held {
		if n > 1 {
			rep.DuplicateSubnets += n
		}
	}
	if len(acq) > 0 {
		ps := Percentiles(acq, 50, 99, 100)
		rep.AcquireP50Ms, rep.AcquireP99Ms, rep.AcquireMaxMs = ps[0], ps[1], ps[2]
	}
	rep.Converged = len(seen)
	if len(seen) > 0 {
		rep.SeenP50Ms = Median(seen)
		if len(seen) == agents {
			rep.AllSeenMs = slices.Max(seen)
		}
	}
}

// verify lists the leases in etcd itself, with a fresh context (a timed-out
// run is still worth checking): n keys, n distinct subnets, each PublicIP
// once, no overlaps.
func (rep *ControlReport) verify(ctx context.Context, admin *subnet.Manager, agents int) error {
	vctx, vcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer vcancel()
	leases, _, err := admin.Leases(vctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	rep.Keys = len(leases)
	subnets := map[netip.Prefix]bool{}
	ips := map[netip.Addr]int{}
	var prefixes []netip.Prefix
	for _, l := range leases {
		subnets[l.Subnet] = true
		ips[l.Attrs.PublicIP]++
		prefixes = append(prefixes, l.Subnet)
	}
	rep.DistinctSubnets = len(subnets)
	for _, n := range ips {
		if n == 1 {
			rep.DistinctPublicIPs++
		}
	}
	rep.OverlappingKeys = countOverlaps(prefixes)
	rep.OK = rep.AcquireFailed == 0 && rep.DuplicateSubnets == 0 && rep.OverlappingKeys == 0 &&
		rep.Keys == agents && rep.DistinctSubnets == agents && rep.DistinctPublicIPs == agents &&
		rep.Converged == agents
	return nil
}

// watchUntilAll follows the lease set the way the agent does (Leases,
// then WatchLeases from that revision) until it holds n leases, calls
// onAll once, and returns.
func watchUntilAll(ctx context.Context, m *subnet.Manager, n int, onAll func()) error {
	leases, rev, err := m.Leases(ctx)
	if err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	seen := make(map[netip.Prefix]bool, n)
	for _, l := range leases {
		seen[l.Subnet] = true
	}
	if len(seen) >= n {
		onAll()
		return nil
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	all := false
	err = m.WatchLeases(wctx, rev, func(evs []subnet.Event) {
		if all {
			return
		}
		for _, ev := range evs {
			switch ev.Type {
			case subnet.Added:
				seen[ev.Lease.Subnet] = true
			case subnet.Removed:
				delete(seen, ev.Lease.Subnet)
			}
		}
		if len(seen) >= n {
			all = true
			onAll()
			stop()
		}
	})
	if all {
		return nil
	}
	if err == nil {
		err = errors.New("watch ended")
	}
	return fmt.Errorf("watch leases (%d of %d seen): %w", len(seen), n, err)
}

// agentIP is agent i's PublicIP: data only, nothing is ever sent there.
// 172.16.0.0/12 keeps it apart from the 10.0.0.0/8 overlay.
func agentIP(i int) netip.Addr {
	v := uint32(172)<<24 | uint32(16)<<16 | uint32(i+1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// countOverlaps counts prefixes that overlap an earlier one in address
// order (distinct keys of one SubnetLen never do; mixed lengths could).
func countOverlaps(ps []netip.Prefix) int {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	n := 0
	for i := 1; i < len(ps); i++ {
		if ps[i-1].Overlaps(ps[i]) {
			n++
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fsType names the filesystem holding dir (etcd's fsync cost depends on it).
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "an unknown filesystem"
	}
	switch uint64(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	default:
		return fmt.Sprintf("filesystem 0x%x", uint64(st.Type))
	}
}
