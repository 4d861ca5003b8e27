// Package lab runs a lab: it builds the topology with topo, starts etcd and
// one real agent process per host, wires containers to each host's bridge
// from the agent's subnet.env, and verifies the overlay with pings and a
// capture on the wire. Everything it creates is named with the lab's prefix
// and recorded in a state dir, so `down` can always undo it.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
	"github.com/overlaylab/overlaylab/topo"
)

// Spec is what `up` is asked to build.
type Spec struct {
	Name          string
	Hosts         int
	Containers    int
	Backend       string
	Network       string // CIDR
	SubnetLen     int    // 0 = flannel's default
	Underlay      string // CIDR
	UnderlayMTU   int
	EtcdEndpoints []string // external etcd; empty = embedded
	StateRoot     string
	Binary        string   // the overlaylab binary to run children from
	AgentArgs     []string // extra agent flags for every host
	// PerHost overrides Containers and AgentArgs for host i+1 when set.
	PerHost []HostOptions
	// ConfigJSON, when set, is the network config written to etcd instead
	// of the one built from Network, SubnetLen and Backend (it is still
	// parsed and checked).
	ConfigJSON []byte
	// EtcdMembers is the number of embedded etcd members (1, 3 or 5), each
	// in its own namespace on the underlay.
	EtcdMembers int
	// EtcdTLS makes the embedded etcd serve clients over TLS with client
	// certificate auth; the lab generates a CA and certificates.
	EtcdTLS bool
	// Seed, when non-zero, makes each agent pick its subnet with a random
	// source seeded from Seed and its address: same seed, same subnets.
	Seed   int64
	Verify bool
	Out    io.Writer // progress and summary
}

// Defaults.
const (
	DefaultName     = "default"
	DefaultUnderlay = "192.168.77.0/24"
	DefaultNetwork  = "10.10.0.0/16"
	etcdHostOffset  = 250
	healthzPort     = 9285
)

// plan is a checked Spec with everything derived.
type plan struct {
	Spec
	names    topo.Names
	underlay netip.Prefix
	netCfg   *config.Config
	cfgJSON  []byte
	etcdIP   netip.Addr
	dir      string
}

// Check validates a spec without touching the system; every error says what
// is wrong and what to do.
func (s Spec) Check() (*plan, error) {
	p := &plan{Spec: s, names: topo.Names{Lab: s.Name}}
	if s.Hosts < 1 {
		return nil, fmt.Errorf("--hosts %d: need at least 1 host", s.Hosts)
	}
	if s.Containers < 0 {
		return nil, fmt.Errorf("--containers %d: cannot be negative", s.Containers)
	}
	if s.Containers > 250 {
		return nil, fmt.Errorf("--containers %d: at most 250 per host", s.Containers)
	}
	if err := p.names.Check(s.Hosts, s.Containers); err != nil {
		return nil, err
	}
	ul, err := netip.ParsePrefix(s.Underlay)
	if err != nil || !ul.Addr().Is4() {
		return nil, fmt.Errorf("--underlay %q: not an IPv4 CIDR", s.Underlay)
	}
	p.underlay = ul.Masked()
	size := 1 << (32 - ul.Bits())
	if size-2 < etcdHostOffset || s.Hosts >= etcdHostOffset {
		return nil, fmt.Errorf("--underlay %s with %d hosts: need a /24 or larger and fewer than %d hosts (etcd sits at .%d)", s.Underlay, s.Hosts, etcdHostOffset, etcdHostOffset)
	}
	p.etcdIP = nthAddr(p.underlay.Addr(), etcdHostOffset)
	if s.UnderlayMTU != 0 && (s.UnderlayMTU < 576 || s.UnderlayMTU > 9000) {
		return nil, fmt.Errorf("--underlay-mtu %d: must be 576..9000", s.UnderlayMTU)
	}
	raw := map[string]any{"Network": s.Network, "Backend": backendJSON(s.Backend)}
	if s.SubnetLen != 0 {
		raw["SubnetLen"] = s.SubnetLen
	}
	js, _ := json.Marshal(raw)
	if s.ConfigJSON != nil {
		js = s.ConfigJSON
	}
	cfg, err := config.Parse(js)
	if err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if cfg.Network.Overlaps(p.underlay) {
		return nil, fmt.Errorf("--network %s overlaps --underlay %s: pick disjoint ranges", cfg.Network, p.underlay)
	}
	if n := cfg.SubnetCount(); n < s.Hosts {
		return nil, fmt.Errorf("--network %s with /%d subnets holds %d leasable subnets, fewer than --hosts %d: use a larger network or a longer --subnet-len", cfg.Network, cfg.SubnetLen, n, s.Hosts)
	}
	for i := range s.Hosts {
		n := p.containersOn(i + 1)
		if hostsPer := (1 << (32 - cfg.SubnetLen)) - 3; n > hostsPer {
			return nil, fmt.Errorf("--containers %d: a /%d subnet holds only %d containers besides the bridge", n, cfg.SubnetLen, hostsPer)
		}
		if n < 0 || n > 250 {
			return nil, fmt.Errorf("host h%d: %d containers: must be 0..250", i+1, n)
		}
	}
	switch s.EtcdMembers {
	case 0, 1, 3, 5:
	default:
		return nil, fmt.Errorf("--etcd-members %d: use 1, 3 or 5 (a quorum needs an odd number)", s.EtcdMembers)
	}
	if s.EtcdMembers > 1 && len(s.EtcdEndpoints) > 0 {
		return nil, errors.New("--etcd-members applies to the embedded etcd, not to --etcd-endpoints")
	}
	if s.EtcdTLS && len(s.EtcdEndpoints) > 0 {
		return nil, errors.New("--etcd-tls applies to the embedded etcd; for an external one, pass its certificates to the agents with --agent-arg")
	}
	p.netCfg = cfg
	p.cfgJSON, err = cfg.Marshal()
	if err != nil {
		return nil, err
	}
	p.dir = StateDir(s.StateRoot, s.Name)
	return p, nil
}

func backendJSON(t string) map[string]any {
	b := map[string]any{"Type": t}
	switch t {
	case "udp":
		b["Port"] = 8285
	case "vxlan":
		b["VNI"] = 1
		b["Port"] = 8472
	}
	return b
}

func nthAddr(base netip.Addr, n int) netip.Addr {
	a := base.As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Preflight checks what needs the real system: root, /dev/net/tun.
func Preflight(backend string) error {
	if os.Geteuid() != 0 {
		return errors.New("overlaylab needs root to create network namespaces: run it with sudo")
	}
	if backend == "udp" {
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return fmt.Errorf("the udp backend needs /dev/net/tun (%v): load the tun module (modprobe tun) or use --backend vxlan", err)
		}
	}
	return nil
}

// Exists reports whether a lab of that name has state or namespaces.
func Exists(root, name string) bool {
	if _, err := os.Stat(statePath(StateDir(root, name))); err == nil {
		return true
	}
	ns, _ := nsutil.List(topo.Names{Lab: name}.Prefix())
	return len(ns) > 0
}

// Up builds and verifies a lab. On a build error it tears down what it made.
// On a verification failure the lab stays up for inspection and the error
// says so.
func Up(ctx context.Context, s Spec) (*State, error) {
	p, err := s.Check()
	if err != nil {
		return nil, err
	}
	if err := Preflight(p.netCfg.Backend.Type); err != nil {
		return nil, err
	}
	if Exists(s.StateRoot, s.Name) {
		return nil, fmt.Errorf("lab %q already exists: use it, or run `overlaylab down --name %s` first", s.Name, s.Name)
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	st := &State{
		Name: s.Name, Backend: p.netCfg.Backend.Type, Network: p.netCfg.Network.String(), StateDir: p.dir, Phase: "building", Seed: s.Seed,
		BackendPort: p.netCfg.Backend.Port, BackendVNI: p.netCfg.Backend.VNI,
		Underlay: UnderlayState{Netns: p.names.UnderlayNS(), Bridge: p.names.Bridge(), CIDR: p.underlay.String(), MTU: s.UnderlayMTU},
		Etcd:     EtcdState{Netns: p.names.EtcdNS(), Endpoints: []string{p.etcdScheme() + "://" + p.etcdIP.String() + ":2379"}, External: s.EtcdEndpoints},
	}
	if err := st.Save(); err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			_ = Down(context.Background(), s.StateRoot, s.Name)
		}
	}()
	pr := &progress{w: s.Out, start: time.Now()}
	if err := p.build(ctx, st, pr); err != nil {
		return nil, err
	}
	built = true
	st.Phase = "up"
	if err := st.Save(); err != nil {
		return st, err
	}
	if s.Verify {
		if err := Verify(ctx, st, pr); err != nil {
			return st, err
		}
	}
	pr.summary(st)
	return st, nil
}

func (p *plan) build(ctx context.Context, st *State, pr *progress) error {
	// Underlay.
	pr.phase("underlay")
	if err := topo.CreateNS(p.names.UnderlayNS()); err != nil {
		return err
	}
	if err := topo.CreateBridge(p.names.UnderlayNS(), p.names.Bridge(), netip.Prefix{}, p.UnderlayMTU, nil); err != nil {
		return err
	}
	// etcd.
	pr.phase("etcd")
	if err := p.startEtcd(ctx, st); err != nil {
		return err
	}
	if err := st.Save(); err != nil {
		return err
	}
	// Hosts.
	crashPoint("after-etcd")
	pr.phase(fmt.Sprintf("hosts (%d)", p.Hosts))
	st.Hosts = make([]HostState, p.Hosts)
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := 1; i <= p.Hosts; i++ {
		h := &st.Hosts[i-1]
		*h = p.layout().newHost(p.dir, i)
		g.Go(func() error {
			err := p.layout().buildHost(i, h)
			if i == 1 {
				crashPoint("mid-hosts")
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := wireUnderlay(st, nil); err != nil {
		return err
	}
	if err := st.Save(); err != nil {
		return err
	}
	// Agents.
	pr.phase(fmt.Sprintf("agents (%d, waiting for each to hold a lease)", p.Hosts))
	for i := range st.Hosts {
		if err := StartAgent(st, &st.Hosts[i], p.Binary, p.agentArgsOn(i+1)); err != nil {
			return err
		}
		if i == 0 {
			crashPoint("mid-agents")
		}
	}
	if err := st.Save(); err != nil {
		return err
	}
	if err := WaitAgents(ctx, st, 30*time.Second, nil); err != nil {
		return err
	}
	// Containers.
	pr.phase(fmt.Sprintf("containers (%d per host)", p.Containers))
	g, _ = errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range st.Hosts {
		h := &st.Hosts[i]
		g.Go(func() error {
			err := p.layout().buildContainers(i+1, p.containersOn(i+1), h)
			if i == 0 {
				crashPoint("mid-containers")
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return st.Save()
}

// containersOn is host i's container count.
func (p *plan) containersOn(i int) int {
	if i-1 < len(p.PerHost) {
		return p.PerHost[i-1].Containers
	}
	return p.Containers
}

// agentArgsOn is host i's extra agent flags.
func (p *plan) agentArgsOn(i int) []string {
	if i-1 < len(p.PerHost) && p.PerHost[i-1].AgentArgs != nil {
		return p.PerHost[i-1].AgentArgs
	}
	return p.AgentArgs
}

// underlayNeighbors lists every node on the underlay with its MAC.
func (s *State) underlayNeighbors() []topo.Neighbor {
	var ns []topo.Neighbor
	for _, h := range s.Hosts {
		i, err := h.Index()
		if err != nil {
			continue
		}
		ns = append(ns, topo.Neighbor{IP: netip.MustParseAddr(h.UnderlayIP), MAC: topo.MAC(topo.MACHost, i, 0)})
	}
	for k, m := range s.Etcd.Members {
		ns = append(ns, topo.Neighbor{IP: netip.MustParseAddr(m.IP), MAC: topo.MAC(topo.MACEtcd, 0, k+1)})
	}
	return ns
}

// wireUnderlay writes static ARP entries for the underlay (see
// topo.SetNeighbors for why): in every node's namespace an entry for every
// other node, or, with only set, just entries for those nodes everywhere and
// all entries in those nodes.
func wireUnderlay(st *State, only []string) error {
	all := st.underlayNeighbors()
	nodes := map[string]netip.Addr{} // netns -> its own address
	for _, h := range st.Hosts {
		nodes[h.Netns] = netip.MustParseAddr(h.UnderlayIP)
	}
	for _, m := range st.Etcd.Members {
		nodes[m.Netns] = netip.MustParseAddr(m.IP)
	}
	var onlyIPs []netip.Addr
	for _, ns := range only {
		onlyIPs = append(onlyIPs, nodes[ns])
	}
	g := new(errgroup.Group)
	g.SetLimit(8)
	for ns, self := range nodes {
		g.Go(func() error {
			var want []topo.Neighbor
			for _, n := range all {
				if n.IP == self {
					continue
				}
				if only == nil || contains(only, ns) || slices.Contains(onlyIPs, n.IP) {
					want = append(want, n)
				}
			}
			return topo.SetNeighbors(ns, "eth0", want)
		})
	}
	return g.Wait()
}

// EnvCrashAt names a build phase at which `up` kills itself with SIGKILL
// (after-etcd, mid-hosts, mid-agents, mid-containers). It exists so tests
// can prove that a crash at any point leaves nothing `down --all` misses.
const EnvCrashAt = "OVERLAYLAB_CRASH_AT"

func crashPoint(name string) {
	if os.Getenv(EnvCrashAt) == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// layout is what placing a host needs; a running lab's State yields it too.
type layout struct {
	names    topo.Names
	underlay netip.Prefix
	mtu      int
}

func (p *plan) layout() layout {
	return layout{names: p.names, underlay: p.underlay, mtu: p.UnderlayMTU}
}

func (s *State) layout() (layout, error) {
	ul, err := netip.ParsePrefix(s.Underlay.CIDR)
	if err != nil {
		return layout{}, fmt.Errorf("state of lab %q: underlay %q: %w", s.Name, s.Underlay.CIDR, err)
	}
	return layout{names: topo.Names{Lab: s.Name}, underlay: ul, mtu: s.Underlay.MTU}, nil
}

// newHost names and addresses host i.
func (l layout) newHost(dir string, i int) HostState {
	return HostState{
		Name: l.names.Host(i), Netns: l.names.HostNS(i),
		UnderlayIP: nthAddr(l.underlay.Addr(), i).String(),
		SubnetFile: filepath.Join(dir, l.names.Host(i), "subnet.env"),
		AgentLog:   filepath.Join(dir, "logs", l.names.Host(i)+"-agent.log"),
		Containers: []ContainerState{},
	}
}

func (p *plan) etcdScheme() string {
	if p.EtcdTLS {
		return "https"
	}
	return "http"
}

func (p *plan) startEtcd(ctx context.Context, st *State) error {
	n := max(p.EtcdMembers, 1)
	if len(p.EtcdEndpoints) > 0 {
		n = 1 // one proxy to the external etcd
	}
	var ips []net.IP
	var cluster []string
	for k := 1; k <= n; k++ {
		m := EtcdMember{Name: fmt.Sprintf("m%d", k), Netns: p.names.EtcdMemberNS(k), IP: nthAddr(p.etcdIP, k-1).String()}
		if err := topo.CreateNS(m.Netns); err != nil {
			return err
		}
		ip := netip.MustParseAddr(m.IP)
		err := topo.Attach(topo.Attachment{
			NodeNS: m.Netns, NodeIf: "eth0", NodeMAC: topo.MAC(topo.MACEtcd, 0, k),
			Addr: netip.PrefixFrom(ip, p.underlay.Bits()), MTU: p.UnderlayMTU,
			BridgeNS: p.names.UnderlayNS(), Bridge: p.names.Bridge(), Port: p.names.EtcdMemberPort(k), PortMAC: topo.MAC(topo.MACPort, 0, 249+k),
		})
		if err != nil {
			return err
		}
		ips = append(ips, ip.AsSlice())
		cluster = append(cluster, m.Name+"=http://"+m.IP+":2380")
		st.Etcd.Members = append(st.Etcd.Members, m)
	}
	if p.EtcdTLS {
		f, err := generateTLS(filepath.Join(p.dir, "tls"), append(ips, net.IPv4(127, 0, 0, 1)))
		if err != nil {
			return fmt.Errorf("etcd TLS: %w", err)
		}
		st.Etcd.TLS = f
	}
	st.Etcd.Endpoints = nil
	for k := range st.Etcd.Members {
		m := &st.Etcd.Members[k]
		st.Etcd.Endpoints = append(st.Etcd.Endpoints, p.etcdScheme()+"://"+m.IP+":2379")
		m.Log = filepath.Join(p.dir, "logs", "etcd.log")
		if n > 1 {
			m.Log = filepath.Join(p.dir, "logs", "etcd-"+m.Name+".log")
		}
		if len(p.EtcdEndpoints) > 0 {
			target, err := hostPort(p.EtcdEndpoints[0])
			if err != nil {
				return err
			}
			// The proxy runs in the root netns to reach the external etcd
			// and listens inside the etcd netns.
			m.Args = []string{"etcd-proxy", "--netns", m.Netns, "--listen", m.IP + ":2379", "--target", target}
			m.RootNetns = true
		} else {
			dataDir := filepath.Join(p.dir, "etcd")
			if n > 1 {
				dataDir = filepath.Join(p.dir, "etcd-"+m.Name)
			}
			m.Args = []string{"etcd", "--name", m.Name, "--data-dir", dataDir,
				"--client-ip", m.IP, "--client-ip", "127.0.0.1", "--peer-ip", m.IP, "--initial-cluster", strings.Join(cluster, ",")}
			if t := st.Etcd.TLS; t != nil {
				m.Args = append(m.Args, "--cert-file", t.ServerCert, "--key-file", t.ServerKey, "--trusted-ca-file", t.CA)
			}
		}
		if err := startMember(p.Binary, st, m); err != nil {
			return err
		}
	}
	st.Etcd.Netns = st.Etcd.Members[0].Netns
	logPath := st.Etcd.Members[0].Log
	cli, err := st.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := waitEtcd(wctx, cli); err != nil {
		return fmt.Errorf("%w\n--- %s ---\n%s", err, logPath, tail(logPath, 20))
	}
	cfgJSON := p.cfgJSON
	if p.ConfigJSON != nil {
		cfgJSON = p.ConfigJSON // verbatim: keep the author's extra keys
	}
	if _, err := cli.Put(ctx, "/coreos.com/network/config", string(cfgJSON)); err != nil {
		return fmt.Errorf("write network config: %w", err)
	}
	return nil
}

func hostPort(endpoint string) (string, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	if strings.HasPrefix(endpoint, "https://") {
		return "", fmt.Errorf("--etcd-endpoints %s: TLS endpoints are not proxied into a lab yet; use http", endpoint)
	}
	if !strings.Contains(s, ":") {
		return "", fmt.Errorf("--etcd-endpoints %s: give host:port", endpoint)
	}
	return strings.TrimSuffix(s, "/"), nil
}

func (l layout) buildHost(i int, h *HostState) error {
	if err := topo.CreateNS(h.Netns); err != nil {
		return err
	}
	ip := netip.MustParseAddr(h.UnderlayIP)
	err := topo.Attach(topo.Attachment{
		NodeNS: h.Netns, NodeIf: "eth0", NodeMAC: topo.MAC(topo.MACHost, i, 0),
		Addr: netip.PrefixFrom(ip, l.underlay.Bits()), MTU: l.mtu,
		BridgeNS: l.names.UnderlayNS(), Bridge: l.names.Bridge(), Port: l.names.HostPort(i), PortMAC: topo.MAC(topo.MACPort, i, 0),
	})
	if err != nil {
		return err
	}
	// A host forwards between its containers' bridge and the overlay, as a
	// container runtime would set it up.
	return topo.Sysctl(h.Netns, "net/ipv4/ip_forward", "1")
}

// StartAgent starts (or restarts) the agent of one host.
func StartAgent(st *State, h *HostState, bin string, extra []string) error {
	if extra == nil {
		extra = h.AgentArgs
	}
	args := []string{"agent",
		"--etcd-endpoints", strings.Join(st.Etcd.Endpoints, ","),
		"--iface", "eth0",
		"--subnet-file", h.SubnetFile,
		"--healthz-ip", "0.0.0.0", "--healthz-port", strconv.Itoa(healthzPort),
	}
	if st.Seed != 0 {
		args = append(args, "--subnet-seed", strconv.FormatInt(st.Seed, 10))
	}
	if t := st.Etcd.TLS; t != nil {
		args = append(args, "--etcd-cafile", t.CA, "--etcd-certfile", t.ClientCert, "--etcd-keyfile", t.ClientKey)
	}
	args = append(args, extra...)
	pid, err := spawn(bin, h.Netns, st.Name, "agent-"+h.Name, args, h.AgentLog)
	if err != nil {
		return err
	}
	h.AgentPID = pid
	h.AgentArgs = extra
	return nil
}

// WaitAgents waits until every agent (or those in only) answers /readyz
// (lease held, datapath programmed, subnet.env written), then records subnet
// and MTU from its subnet.env. An agent that exits first fails the wait with
// the end of its log.
func WaitAgents(ctx context.Context, st *State, timeout time.Duration, only []string) error {
	deadline := time.Now().Add(timeout)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range st.Hosts {
		h := &st.Hosts[i]
		if only != nil && !contains(only, h.Name) {
			continue
		}
		g.Go(func() error {
			ready := agentReady
			if h.Foreign != "" {
				ready = func(_ context.Context, h *HostState) bool { return subnetFileReady(h) }
			}
			for !ready(ctx, h) {
				if !alive(h.AgentPID, st.Name) {
					return fmt.Errorf("agent on %s (pid %d) exited before it was ready\n--- %s ---\n%s", h.Name, h.AgentPID, h.AgentLog, tail(h.AgentLog, 20))
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("agent on %s not ready within %s\n--- %s ---\n%s", h.Name, timeout, h.AgentLog, tail(h.AgentLog, 20))
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
			env, err := subnetenv.Read(h.SubnetFile)
			if err != nil {
				return fmt.Errorf("agent on %s is ready but: %w", h.Name, err)
			}
			h.Subnet = env.Subnet.Masked().String()
			h.MTU = env.MTU
			return nil
		})
	}
	return g.Wait()
}

// agentReady asks the agent's /readyz from inside its host namespace.
func agentReady(ctx context.Context, h *HostState) bool {
	dial := nsutil.DialContext(h.Netns)
	c := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(healthzPort)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// buildContainers configures the host's container bridge from subnet.env
// (what `docker --bip=$FLANNEL_SUBNET --mtu=$FLANNEL_MTU` does) and attaches
// the containers with the next addresses of the subnet.
func (l layout) buildContainers(i, containers int, h *HostState) error {
	env, err := subnetenv.Read(h.SubnetFile)
	if err != nil {
		return err
	}
	gw := env.Subnet // e.g. 10.10.3.1/24
	brMAC := topo.MAC(topo.MACBridge, i, 0)
	if err := topo.CreateBridge(h.Netns, l.names.Bridge(), gw, env.MTU, brMAC); err != nil {
		return err
	}
	var mine []topo.Neighbor
	ip := gw.Addr()
	for j := 1; j <= containers; j++ {
		ip = ip.Next()
		c := ContainerState{Name: l.names.Container(j), Netns: l.names.ContainerNS(i, j), IP: ip.String()}
		if err := topo.CreateNS(c.Netns); err != nil {
			return err
		}
		err := topo.Attach(topo.Attachment{
			NodeNS: c.Netns, NodeIf: "eth0", NodeMAC: topo.MAC(topo.MACContainer, i, j),
			Addr: netip.PrefixFrom(ip, gw.Bits()), Gateway: gw.Addr(), MTU: env.MTU,
			BridgeNS: h.Netns, Bridge: l.names.Bridge(), Port: l.names.ContainerPort(j),
		})
		if err != nil {
			return err
		}
		// Static ARP both ways (see topo.SetNeighbors for why).
		if err := topo.SetNeighbors(c.Netns, "eth0", []topo.Neighbor{{IP: gw.Addr(), MAC: brMAC}}); err != nil {
			return err
		}
		mine = append(mine, topo.Neighbor{IP: ip, MAC: topo.MAC(topo.MACContainer, i, j)})
		h.Containers = append(h.Containers, c)
	}
	return topo.SetNeighbors(h.Netns, l.names.Bridge(), mine)
}

// Down stops the lab's processes and removes its namespaces and state. It
// is idempotent and works from the name alone when the state is gone.
func Down(ctx context.Context, root, name string) error {
	var errs []error
	if st, err := Load(root, name); err == nil {
		for _, h := range st.Hosts {
			errs = append(errs, stop(h.AgentPID, name, syscall.SIGTERM, 3*time.Second))
		}
		for _, m := range st.Etcd.Members {
			errs = append(errs, stop(m.PID, name, syscall.SIGTERM, 5*time.Second))
		}
	}
	// Whatever carries the lab's mark but is not in the state (a crash
	// between start and save) goes too.
	for _, pid := range labProcesses(name) {
		errs = append(errs, stop(pid, name, syscall.SIGTERM, 3*time.Second))
	}
	if _, err := topo.DeleteNamespaces(topo.Names{Lab: name}.Prefix()); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(StateDir(root, name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DownAll removes every lab: those with state and any leftover namespace or
// marked process found by the prefix.
func DownAll(ctx context.Context, root string) ([]string, error) {
	seen := map[string]bool{}
	if ents, err := os.ReadDir(root); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				seen[e.Name()] = true
			}
		}
	}
	for _, pid := range labProcesses("") {
		if l, _, ok := procMark(pid); ok {
			seen[l] = true
		}
	}
	var errs []error
	var labs []string
	for name := range seen {
		labs = append(labs, name)
		errs = append(errs, Down(ctx, root, name))
	}
	// Namespaces of labs whose name we could not learn (state and processes
	// gone) are found by the common prefix.
	left, err := topo.DeleteNamespaces(topo.NamePrefix)
	errs = append(errs, err)
	for _, n := range left {
		labs = append(labs, n)
	}
	return labs, errors.Join(errs...)
}
