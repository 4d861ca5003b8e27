package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// network is one network the agent serves: the only one of a single-
// network agent (name "", flanneld's keys and subnet.env) or one of
// Options.Networks. Each has its own lease, datapath, peers, env file and
// counters.
type network struct {
	a       *Agent
	name    string // "" for a single-network agent
	prefix  string // etcd prefix of its config and leases
	envPath string // its subnet env file
	// tenant is its routing table and conntrack zone, nil for a single-
	// network agent; tenancy is what is installed for it, set once its
	// config is known.
	tenant  *tenant
	tenancy tenancy
	log     *slog.Logger

	metrics backend.Metrics
	ready   atomic.Bool
	peers   atomic.Int64
	mgr     atomic.Pointer[subnet.Manager]
	env     atomic.Pointer[envFile]
}

// label is the network's label pair on /metrics ("" for a single network).
func (n *network) label() string {
	if n.name == "" {
		return ""
	}
	return fmt.Sprintf("network=%q", n.name)
}

// run is the network proper: backend, lease, peers, subnet env file, then
// the running phase (serve) until ctx ends.
func (n *network) run(ctx context.Context, cfg *config.Config, ext backend.External) error {
	mgr := n.mgr.Load()
	if n.tenant != nil {
		// The rule and the unreachable default come before the device:
		// from its first packet the network is routed in its own table.
		if err := n.a.tenancy.ensure(n.tenancy); err != nil {
			return err
		}
	}
	be, err := n.a.newBackend(n, cfg, ext)
	if err != nil {
		return err
	}
	// Deferred here, so it runs after serve has returned, that is after the
	// datapath's Run has returned: Close never pulls the device from under it.
	defer func() {
		if err := be.Close(); err != nil {
			n.log.Warn("closing the datapath", "err", err)
		}
	}()
	pub, err := be.Prepare(ctx)
	if err != nil {
		return err
	}
	// An interface MTU can be 65536 (loopback); IP packets, and so
	// FLANNEL_MTU, stop at 65535.
	pub.MTU = min(pub.MTU, 65535)

	attrs := subnet.LeaseAttrs{PublicIP: ext.PublicIP, BackendType: pub.BackendType, BackendData: pub.BackendData}
	lease, err := n.acquire(ctx, mgr, cfg, attrs, n.previousSubnet(cfg))
	if err != nil {
		return err
	}
	n.log.Info("lease acquired", "subnet", lease.Subnet, "expires", lease.Expiration.Format(time.RFC3339))
	if err := be.Configure(ctx, *lease); err != nil {
		return err
	}
	if n.a.opts.IPMasq && n.tenant == nil {
		masq, err := setupIPMasq(cfg.Network, lease.Subnet)
		if err != nil {
			return err
		}
		defer masq.Close()
	}
	st, leases, rev, err := n.programPeers(ctx, mgr, be, lease.Subnet)
	if err != nil {
		return err
	}
	env := newEnvFile(n.envPath, n.log)
	n.env.Store(env)
	// The first write is checked: without the file no container can
	// start here, and a path that cannot be written is best reported now.
	if err := env.set(n.subnetEnv(cfg, *lease, pub.MTU)); err != nil {
		return fmt.Errorf("write %s: %w", n.envPath, err)
	}
	n.ready.Store(true)
	n.log.Info("ready", "subnet_file", n.envPath, "peers", len(st.peers))
	return n.serve(ctx, running{mgr: mgr, cfg: cfg, be: be, mtu: pub.MTU, lease: lease, rev: rev, leases: leases, peers: st, env: env})
}

// previousSubnet is the subnet the env file remembers from an earlier run
// in the same Network, to be leased again if it is free.
func (n *network) previousSubnet(cfg *config.Config) netip.Prefix {
	if env, err := subnetenv.Read(n.envPath); err == nil && env.Network == cfg.Network {
		return env.LeaseSubnet()
	}
	return netip.Prefix{}
}

// programPeers programs every current lease, then has the backend drop
// what an earlier run left for peers that are gone. The revision is where
// the watch continues.
func (n *network) programPeers(ctx context.Context, mgr *subnet.Manager, be backend.Backend, own netip.Prefix) (*peerState, []subnet.Lease, int64, error) {
	leases, rev, err := n.listLeases(ctx, mgr)
	if err != nil {
		return nil, nil, 0, err
	}
	st := newPeerState(own)
	initial := make([]subnet.Event, 0, len(leases))
	for _, l := range leases {
		initial = append(initial, subnet.Event{Type: subnet.Added, Lease: l})
	}
	n.apply(ctx, be, st, initial)
	n.reconcile(ctx, be)
	return st, leases, rev, nil
}

// listLeases lists the leases, retrying while etcd is slow or away (an
// etcd busy with hundreds of agents starting at once times requests out):
// the lease is held and the datapath configured, so only giving up
// (ctx) ends the wait.
func (n *network) listLeases(ctx context.Context, mgr *subnet.Manager) ([]subnet.Lease, int64, error) {
	delay := 200 * time.Millisecond
	for {
		leases, rev, err := mgr.Leases(ctx)
		if err == nil {
			return leases, rev, nil
		}
		n.log.Warn("list leases failed; retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("list leases: %w", errors.Join(ctx.Err(), err))
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// subnetEnv is the env file's content; a network of several also names its
// routing table and conntrack zone.
func (n *network) subnetEnv(cfg *config.Config, l subnet.Lease, mtu int) subnetenv.Env {
	e := subnetenv.Env{Network: cfg.Network, Subnet: subnetenv.SubnetFromLease(l.Subnet), MTU: mtu, IPMasq: n.a.opts.IPMasq}
	if n.tenant != nil {
		e.RouteTable, e.CTZone = uint32(n.tenant.table), n.tenant.zone
	}
	return e
}

// waitConfig polls until the config key exists and parses, logging why not.
func (n *network) waitConfig(ctx context.Context) (*config.Config, error) {
	delay := 500 * time.Millisecond
	mgr := n.mgr.Load()
	key := mgr.ConfigKey()
	for {
		cfg, err := mgr.GetConfig(ctx)
		if err == nil {
			n.log.Info("network config", "cidr", cfg.Network, "subnet_len", cfg.SubnetLen, "backend", cfg.Backend.Type)
			return cfg, nil
		}
		n.log.Error("waiting for a valid network config", "key", key, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (n *network) acquire(ctx context.Context, mgr *subnet.Manager, cfg *config.Config, attrs subnet.LeaseAttrs, prev netip.Prefix) (*subnet.Lease, error) {
	delay := 500 * time.Millisecond
	for {
		l, err := mgr.Acquire(ctx, cfg, attrs, prev)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, subnet.ErrNoFreeSubnet) {
			return nil, err
		}
		n.log.Error("acquire lease failed; retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
