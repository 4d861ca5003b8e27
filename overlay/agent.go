// Package overlay is the agent: it reads the network config from etcd, leases
// a subnet for this host, programs a backend for every peer lease it sees and
// writes subnet.env for the container runtime. It knows nothing of the lab:
// it runs in whatever network namespace it is started in, like flanneld.
//
// With Options.Networks one agent serves several networks, each with its
// own config, leases, datapath, routing table and conntrack zone (see
// tenant.go); without, it is flanneld's single-network agent.
package overlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/backend/hostgw"
	"github.com/overlaylab/overlaylab/overlay/backend/udp"
	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
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
	// tenancy installs the isolation of the networks of a multi-network
	// agent; tests that run in the machine's own namespace replace it.
	tenancy tenancyKernel
	// nets are the networks served: one (name "") without Options.Networks.
	nets []*network
}

// New fills the options a caller left zero with flanneld's defaults, checks
// them (see Options.Validate) and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, log: opts.Logger, backends: builtinBackends(), tenancy: hostTenancy(opts.Logger)}
	if len(opts.Networks) == 0 {
		a.nets = []*network{{a: a, prefix: opts.EtcdPrefix, envPath: opts.SubnetFile, log: a.log}}
		return a, nil
	}
	prefix := strings.TrimRight(opts.EtcdPrefix, "/")
	for _, t := range assignTenants(opts.Networks) {
		a.nets = append(a.nets, &network{
			a: a, name: t.name, prefix: prefix + "/" + t.name, envPath: envPath(opts.SubnetDir, t.name),
			tenant: &t, log: a.log.With("network", t.name),
		})
	}
	return a, nil
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
	for _, n := range a.nets {
		n.mgr.Store(subnet.NewManager(cli, a.subnetOptions(ext, n)))
	}

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
		return a.runNetworks(gctx, ext)
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		a.log.Info("stopped")
		return nil
	}
	return err
}

func (a *Agent) subnetOptions(ext backend.External, n *network) subnet.Options {
	so := subnet.Options{Prefix: n.prefix, TTL: a.opts.LeaseTTL, RenewMargin: a.opts.renewMargin(), Logger: n.log}
	if a.opts.SubnetSeed != 0 {
		// The same seed for every network of the host: networks with the
		// same CIDR then tend to lease the same subnets on a host, which is
		// what a lab wants to show overlapping addresses kept apart.
		ip := ext.PublicIP.As4()
		so.Rand = rand.New(rand.NewPCG(uint64(a.opts.SubnetSeed), uint64(binary.BigEndian.Uint32(ip[:]))))
	}
	return so
}

// runNetworks runs every network until ctx ends or one fails. A single
// network starts as soon as its config is there. Several wait until every
// config is there and they fit together (checkNetworks), then the agent
// installs their isolation before any datapath exists, and they run side
// by side.
func (a *Agent) runNetworks(ctx context.Context, ext backend.External) error {
	if len(a.opts.Networks) == 0 {
		// Only leftovers of a multi-network run on this host are removed,
		// and only if there are any; failing to is not fatal here.
		if err := a.tenancy.reset(nil); err != nil {
			a.log.Warn("removing what an earlier multi-network run left failed", "err", err)
		}
		n := a.nets[0]
		cfg, err := n.waitConfig(ctx)
		if err != nil {
			return err
		}
		return n.run(ctx, cfg, ext)
	}
	cfgs, err := a.waitConfigs(ctx)
	if err != nil {
		return err
	}
	plan := make([]tenancy, len(a.nets))
	for i, n := range a.nets {
		plan[i] = newTenancy(*n.tenant, cfgs[i].cfg, ext.Iface.Name)
		n.tenancy = plan[i]
	}
	if err := a.tenancy.reset(plan); err != nil {
		return fmt.Errorf("isolate the networks: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range a.nets {
		g.Go(func() error { return n.run(gctx, cfgs[i].cfg, ext) })
	}
	return g.Wait()
}

// waitConfigs waits for every network's config and checks that one agent
// can serve them together.
func (a *Agent) waitConfigs(ctx context.Context) ([]namedConfig, error) {
	cfgs := make([]namedConfig, len(a.nets))
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range a.nets {
		g.Go(func() error {
			cfg, err := n.waitConfig(gctx)
			cfgs[i] = namedConfig{name: n.name, key: n.mgr.Load().ConfigKey(), cfg: cfg}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := checkNetworks(cfgs); err != nil {
		return nil, fmt.Errorf("--networks %s: %w", strings.Join(a.opts.Networks, ","), err)
	}
	return cfgs, nil
}

// newBackend makes the backend the config names, for network n.
func (a *Agent) newBackend(n *network, cfg *config.Config, ext backend.External) (backend.Backend, error) {
	factory, ok := a.backends[cfg.Backend.Type]
	if !ok {
		return nil, fmt.Errorf("config: Backend.Type %q is not built into this agent", cfg.Backend.Type)
	}
	o := backend.Options{UDPMode: a.opts.UDPMode, Workers: a.opts.UDPWorkers}
	if n.tenant != nil {
		o.Network, o.Table, o.DeviceName = n.name, n.tenant.table, udpDeviceName(n.name)
	}
	return factory(cfg, ext, &n.metrics, o)
}

// ready reports whether every network is ready, and names those that are not.
func (a *Agent) ready() (bool, []string) {
	var waiting []string
	for _, n := range a.nets {
		if !n.ready.Load() {
			waiting = append(waiting, n.name)
		}
	}
	return len(waiting) == 0, waiting
}
