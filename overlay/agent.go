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
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/backend/hostgw"
	"github.com/overlaylab/overlaylab/overlay/backend/udp"
	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// Options are the agent's settings; the CLI fills them from flanneld's flags.
type Options struct {
	EtcdEndpoints []string
	EtcdPrefix    string
	EtcdCAFile    string
	EtcdCertFile  string
	EtcdKeyFile   string
	Iface         string // name or IP of the external interface; empty = default route's
	PublicIP      string // published address; empty = the interface's
	IPMasq        bool
	SubnetFile    string
	LeaseTTL      time.Duration
	RenewMargin   time.Duration
	HealthzIP     string
	HealthzPort   int // 0 disables the HTTP endpoint
	// SubnetSeed, when non-zero, seeds the random choice of a free subnet
	// (mixed with the PublicIP, so hosts differ): reproducible labs.
	SubnetSeed int64
	// UDPMode is the udp backend's datapath: "fast" or "simple".
	UDPMode string
	// UDPWorkers is the udp backend's number of parallel datapath workers
	// (backend.Options.Workers); 0 = the backend's default.
	UDPWorkers int
	// Pprof serves /debug/pprof/ on the healthz address.
	Pprof  bool
	Logger *slog.Logger
}

// Factories maps Backend.Type to its implementation.
var Factories = map[string]backend.Factory{
	"udp":     udp.New,
	"vxlan":   vxlan.New,
	"host-gw": hostgw.New,
}

// Agent is one running agent.
type Agent struct {
	opts    Options
	log     *slog.Logger
	metrics backend.Metrics
	ready   atomic.Bool
	peers   atomic.Int64
	mgr     atomic.Pointer[subnet.Manager]
}

// New checks the options and returns an agent ready to Run.
func New(opts Options) (*Agent, error) {
	if len(opts.EtcdEndpoints) == 0 {
		return nil, errors.New("--etcd-endpoints: at least one endpoint is needed")
	}
	if opts.EtcdPrefix == "" {
		opts.EtcdPrefix = "/coreos.com/network"
	}
	if opts.SubnetFile == "" {
		opts.SubnetFile = "/run/flannel/subnet.env"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Agent{opts: opts, log: opts.Logger}, nil
}

// Run runs the agent until ctx is done or it hits an error it cannot retry.
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

	so := subnet.Options{Prefix: a.opts.EtcdPrefix, TTL: a.opts.LeaseTTL, RenewMargin: a.opts.RenewMargin, Logger: a.log}
	if a.opts.SubnetSeed != 0 {
		ip := ext.PublicIP.As4()
		so.Rand = rand.New(rand.NewPCG(uint64(a.opts.SubnetSeed), uint64(binary.BigEndian.Uint32(ip[:]))))
	}
	mgr := subnet.NewManager(cli, so)
	a.mgr.Store(mgr)
	if a.opts.HealthzPort > 0 {
		if err := a.serveHTTP(ctx); err != nil {
			return err
		}
	}

	cfg, err := a.waitConfig(ctx, mgr)
	if err != nil {
		return err
	}
	factory, ok := Factories[cfg.Backend.Type]
	if !ok {
		return fmt.Errorf("config: Backend.Type %q is not built into this agent", cfg.Backend.Type)
	}
	be, err := factory(cfg, ext, &a.metrics, backend.Options{UDPMode: a.opts.UDPMode, Workers: a.opts.UDPWorkers})
	if err != nil {
		return err
	}
	defer be.Close()
	pub, err := be.Prepare(ctx)
	if err != nil {
		return err
	}
	// An interface MTU can be 65536 (loopback); IP packets, and so
	// FLANNEL_MTU, stop at 65535.
	pub.MTU = min(pub.MTU, 65535)

	var prev netip.Prefix
	if env, err := subnetenv.Read(a.opts.SubnetFile); err == nil && env.Network == cfg.Network {
		prev = env.Subnet.Masked()
	}
	attrs := subnet.LeaseAttrs{PublicIP: ext.PublicIP, BackendType: pub.BackendType, BackendData: pub.BackendData}
	lease, err := a.acquire(ctx, mgr, cfg, attrs, prev)
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

	// Peers: program every current lease, then follow the watch from that revision.
	leases, rev, err := mgr.Leases(ctx)
	if err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	events := make(chan []subnet.Event, 16)
	state := newPeerState(lease.Subnet)
	var initial []subnet.Event
	for _, l := range leases {
		initial = append(initial, subnet.Event{Type: subnet.Added, Lease: l})
	}
	a.apply(ctx, be, state, initial)

	if err := a.writeEnv(cfg, *lease, pub.MTU); err != nil {
		return err
	}
	a.ready.Store(true)
	a.log.Info("ready", "subnet_file", a.opts.SubnetFile, "peers", len(state.peers))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- be.Run(ctx) }()
	go func() {
		_ = mgr.WatchLeases(ctx, rev, func(evs []subnet.Event) {
			select {
			case events <- evs:
			case <-ctx.Done():
			}
		})
	}()
	leaseChanged := make(chan subnet.Lease, 1)
	go func() {
		_ = mgr.KeepLease(ctx, cfg, lease, func(l subnet.Lease) {
			select {
			case leaseChanged <- l:
			case <-ctx.Done():
			}
		})
	}()
	go func() {
		_ = mgr.WatchConfig(ctx, func(c *config.Config, err error) {
			switch {
			case err != nil:
				a.log.Error("network config in etcd is now invalid; keeping the running network", "err", err)
			case c.Network != cfg.Network || c.SubnetLen != cfg.SubnetLen || c.Backend.Type != cfg.Backend.Type || c.Backend.Port != cfg.Backend.Port || c.Backend.VNI != cfg.Backend.VNI:
				a.log.Warn("network config in etcd changed; restart the agent to apply it",
					"network", c.Network, "subnet_len", c.SubnetLen, "backend", c.Backend.Type)
			default:
				a.log.Info("network config in etcd rewritten without a change that matters to this agent")
			}
		})
	}()

	for {
		select {
		case <-ctx.Done():
			a.log.Info("stopping")
			return nil
		case err := <-runErr:
			if err != nil {
				return fmt.Errorf("datapath: %w", err)
			}
			return nil
		case evs := <-events:
			a.apply(ctx, be, state, evs)
		case l := <-leaseChanged:
			if l.Subnet != state.own {
				a.log.Warn("lease re-acquired with a different subnet", "old", state.own, "new", l.Subnet)
				state.own = l.Subnet
				if err := be.Configure(ctx, l); err != nil {
					return err
				}
			} else {
				a.log.Info("lease re-acquired", "subnet", l.Subnet)
			}
			if err := a.writeEnv(cfg, l, pub.MTU); err != nil {
				return err
			}
		}
	}
}

func (a *Agent) etcdClient() (*clientv3.Client, error) {
	// The client's own zap logger would interleave JSON with our text
	// logs; its errors reach us as values and are logged there.
	cfg := clientv3.Config{Endpoints: a.opts.EtcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if a.opts.EtcdCAFile != "" || a.opts.EtcdCertFile != "" || a.opts.EtcdKeyFile != "" {
		tlsCfg, err := loadTLS(a.opts.EtcdCAFile, a.opts.EtcdCertFile, a.opts.EtcdKeyFile)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", a.opts.EtcdEndpoints, err)
	}
	return cli, nil
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

func (a *Agent) writeEnv(cfg *config.Config, l subnet.Lease, mtu int) error {
	first := l.Subnet.Addr().Next()
	env := subnetenv.Env{Network: cfg.Network, Subnet: netip.PrefixFrom(first, l.Subnet.Bits()), MTU: mtu, IPMasq: a.opts.IPMasq}
	if err := subnetenv.Write(a.opts.SubnetFile, env); err != nil {
		return fmt.Errorf("write %s: %w", a.opts.SubnetFile, err)
	}
	return nil
}

// peerState is the agent's view of the peers it has programmed.
type peerState struct {
	own   netip.Prefix
	peers map[netip.Prefix]subnet.Lease
}

func newPeerState(own netip.Prefix) *peerState {
	return &peerState{own: own, peers: map[netip.Prefix]subnet.Lease{}}
}

// apply hands lease events to the backend, skipping our own subnet and
// no-op updates.
func (a *Agent) apply(ctx context.Context, be backend.Backend, st *peerState, evs []subnet.Event) {
	for _, ev := range evs {
		p := ev.Lease.Subnet
		if p == st.own {
			continue
		}
		switch ev.Type {
		case subnet.Added:
			if old, ok := st.peers[p]; ok && sameAttrs(old.Attrs, ev.Lease.Attrs) {
				continue
			}
			if err := be.AddPeer(ctx, ev.Lease); err != nil {
				a.log.Error("add peer failed", "subnet", p, "public_ip", ev.Lease.Attrs.PublicIP, "err", err)
				continue
			}
			st.peers[p] = ev.Lease
			a.log.Info("peer added", "subnet", p, "public_ip", ev.Lease.Attrs.PublicIP)
		case subnet.Removed:
			old, ok := st.peers[p]
			if !ok {
				continue
			}
			if err := be.RemovePeer(ctx, old); err != nil {
				a.log.Error("remove peer failed", "subnet", p, "err", err)
			}
			delete(st.peers, p)
			a.log.Info("peer removed", "subnet", p)
		}
	}
	a.peers.Store(int64(len(st.peers)))
}

func sameAttrs(x, y subnet.LeaseAttrs) bool {
	return x.PublicIP == y.PublicIP && x.BackendType == y.BackendType && string(x.BackendData) == string(y.BackendData)
}

// findExternal picks the interface and addresses the agent publishes, as
// flanneld does: --iface by name or address, else the default route's device.
func findExternal(iface, publicIP string) (backend.External, error) {
	var ifc *net.Interface
	var err error
	switch {
	case iface == "":
		ifc, err = defaultRouteIface()
	default:
		if ip, perr := netip.ParseAddr(iface); perr == nil {
			ifc, err = ifaceWithAddr(ip)
		} else {
			ifc, err = net.InterfaceByName(iface)
			if err != nil {
				err = fmt.Errorf("--iface %q: %w", iface, err)
			}
		}
	}
	if err != nil {
		return backend.External{}, err
	}
	local, err := firstIPv4(ifc)
	if err != nil {
		return backend.External{}, err
	}
	ext := backend.External{Iface: ifc, LocalIP: local, PublicIP: local}
	if publicIP != "" {
		ip, err := netip.ParseAddr(publicIP)
		if err != nil || !ip.Is4() {
			return backend.External{}, fmt.Errorf("--public-ip %q: not an IPv4 address", publicIP)
		}
		ext.PublicIP = ip
	}
	return ext, nil
}

func firstIPv4(ifc *net.Interface) (netip.Addr, error) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && !ip.IsLinkLocalUnicast() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", ifc.Name)
}

func ifaceWithAddr(ip netip.Addr) (*net.Interface, error) {
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifcs {
		addrs, _ := ifcs[i].Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if x, ok := netip.AddrFromSlice(ipn.IP); ok && x.Unmap() == ip {
					return &ifcs[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("--iface %s: no interface has that address", ip)
}
