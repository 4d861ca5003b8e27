// Package overlay is the agent: it reads the network config from etcd, leases
// a subnet for this host, programs a backend for every peer lease it sees and
// writes subnet.env for the container runtime. It knows nothing of the lab:
// it runs in whatever network namespace it is started in, like flanneld.
package overlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/backend/hostgw"
	"github.com/overlaylab/overlaylab/overlay/backend/udp"
	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// builtinBackends maps Backend.Type to the backends built into the agent.
func builtinBackends() map[string]backend.Factory {
	return map[string]backend.Factory{
		config.BackendUDP:    udp.New,
		config.BackendVXLAN:  vxlan.New,
		config.BackendHostGW: hostgw.New,
	}
}

// Agent is one running agent.
type Agent struct {
	opts     Options
	log      *slog.Logger
	backends map[string]backend.Factory
	metrics  backend.Metrics
	ready    atomic.Bool
	peers    atomic.Int64
	mgr      atomic.Pointer[subnet.Manager]
	env      atomic.Pointer[envFile]
}

// New fills the options a caller left zero with flanneld's defaults, checks
// them (see Options.Validate) and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Agent{opts: opts, log: opts.Logger, backends: builtinBackends()}, nil
}

// Run runs the agent until ctx is done (then it returns nil) or it hits an
// error it cannot retry. Every goroutine it starts has ended when it
// returns, and the backend is closed only after its datapath stopped.
func (a *Agent) Run(ctx context.Context) error {
	cli, err := a.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ext, err := findExternal(a.opts.Iface, a.opts.PublicIP)
	if err != nil {
		return err
	}
	a.log.Info("using interface", "iface", ext.Iface.Name, "public_ip", ext.PublicIP)
	mgr := subnet.NewManager(cli, a.subnetOptions(ext))
	a.mgr.Store(mgr)

	// The HTTP endpoint answers while the agent waits for etcd and a
	// config, and goes when the network part ends, for whatever reason.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	if a.opts.HealthzPort > 0 {
		srv, ln, err := a.listenHTTP()
		if err != nil {
			return err
		}
		g.Go(func() error { return a.serveHTTP(gctx, srv, ln) })
	}
	g.Go(func() error {
		defer stop()
		return a.runNetwork(gctx, mgr, ext)
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		a.log.Info("stopped")
		return nil
	}
	return err
}

func (a *Agent) subnetOptions(ext backend.External) subnet.Options {
	so := subnet.Options{Prefix: a.opts.EtcdPrefix, TTL: a.opts.LeaseTTL, RenewMargin: a.opts.renewMargin(), Logger: a.log}
	if a.opts.SubnetSeed != 0 {
		ip := ext.PublicIP.As4()
		so.Rand = rand.New(rand.NewPCG(uint64(a.opts.SubnetSeed), uint64(binary.BigEndian.Uint32(ip[:]))))
	}
	return so
}

// runNetwork is the agent proper: config, backend, lease, peers,
// subnet.env, then the running phase (serve) until ctx ends.
func (a *Agent) runNetwork(ctx context.Context, mgr *subnet.Manager, ext backend.External) error {
	cfg, err := a.waitConfig(ctx, mgr)
	if err != nil {
		return err
	}
	be, err := a.newBackend(cfg, ext)
	if err != nil {
		return err
	}
	// Deferred here, so it runs after serve has returned, that is after the
	// datapath's Run has returned: Close never pulls the device from under it.
	defer func() {
		if err := be.Close(); err != nil {
			a.log.Warn("closing the datapath", "err", err)
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
	lease, err := a.acquire(ctx, mgr, cfg, attrs, a.previousSubnet(cfg))
	if err != nil {
		return err
	}
	a.log.Info("lease acquired", "subnet", lease.Subnet, "expires", lease.Expiration.Format(time.RFC3339))
	if err := be.Configure(ctx, *lease); err != nil {
		return err
	}
	if a.opts.IPMasq {
		masq, err := setupIPMasq(cfg.Network, lease.Subnet)
		if err != nil {
			return err
		}
		defer masq.Close()
	}
	st, rev, err := a.programPeers(ctx, mgr, be, lease.Subnet)
	if err != nil {
		return err
	}
	env := newEnvFile(a.opts.SubnetFile, a.log)
	a.env.Store(env)
	// The first write is checked: without subnet.env no container can
	// start here, and a path that cannot be written is best reported now.
	if err := env.set(a.subnetEnv(cfg, *lease, pub.MTU)); err != nil {
		return fmt.Errorf("write %s: %w", a.opts.SubnetFile, err)
	}
	a.ready.Store(true)
	a.log.Info("ready", "subnet_file", a.opts.SubnetFile, "peers", len(st.peers))
	return a.serve(ctx, running{mgr: mgr, cfg: cfg, be: be, mtu: pub.MTU, lease: lease, rev: rev, peers: st, env: env})
}

// newBackend makes the backend the config names.
func (a *Agent) newBackend(cfg *config.Config, ext backend.External) (backend.Backend, error) {
	factory, ok := a.backends[cfg.Backend.Type]
	if !ok {
		return nil, fmt.Errorf("config: Backend.Type %q is not built into this agent", cfg.Backend.Type)
	}
	return factory(cfg, ext, &a.metrics, backend.Options{UDPMode: a.opts.UDPMode, Workers: a.opts.UDPWorkers})
}

// previousSubnet is the subnet subnet.env remembers from an earlier run in
// the same Network, to be leased again if it is free.
func (a *Agent) previousSubnet(cfg *config.Config) netip.Prefix {
	if env, err := subnetenv.Read(a.opts.SubnetFile); err == nil && env.Network == cfg.Network {
		return env.LeaseSubnet()
	}
	return netip.Prefix{}
}

// programPeers programs every current lease, then has the backend drop
// what an earlier run left for peers that are gone. The revision is where
// the watch continues.
func (a *Agent) programPeers(ctx context.Context, mgr *subnet.Manager, be backend.Backend, own netip.Prefix) (*peerState, int64, error) {
	leases, rev, err := mgr.Leases(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list leases: %w", err)
	}
	st := newPeerState(own)
	initial := make([]subnet.Event, 0, len(leases))
	for _, l := range leases {
		initial = append(initial, subnet.Event{Type: subnet.Added, Lease: l})
	}
	a.apply(ctx, be, st, initial)
	a.reconcile(ctx, be)
	return st, rev, nil
}

func (a *Agent) subnetEnv(cfg *config.Config, l subnet.Lease, mtu int) subnetenv.Env {
	return subnetenv.Env{Network: cfg.Network, Subnet: subnetenv.SubnetFromLease(l.Subnet), MTU: mtu, IPMasq: a.opts.IPMasq}
}

// waitConfig polls until the config key exists and parses, logging why not.
func (a *Agent) waitConfig(ctx context.Context, mgr *subnet.Manager) (*config.Config, error) {
	delay := 500 * time.Millisecond
	key := mgr.ConfigKey()
	for {
		cfg, err := mgr.GetConfig(ctx)
		if err == nil {
			a.log.Info("network config", "network", cfg.Network, "subnet_len", cfg.SubnetLen, "backend", cfg.Backend.Type)
			return cfg, nil
		}
		a.log.Error("waiting for a valid network config", "key", key, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (a *Agent) acquire(ctx context.Context, mgr *subnet.Manager, cfg *config.Config, attrs subnet.LeaseAttrs, prev netip.Prefix) (*subnet.Lease, error) {
	delay := 500 * time.Millisecond
	for {
		l, err := mgr.Acquire(ctx, cfg, attrs, prev)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, subnet.ErrNoFreeSubnet) {
			return nil, err
		}
		a.log.Error("acquire lease failed; retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
