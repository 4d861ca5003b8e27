// Package plan is the lab's specification and everything derived from it
// without touching the system: the Spec a lab is built from, its checks and
// limits (typed field errors), names, addresses and MACs, and what the lab
// knows per backend. The CLI and the scenario parser build a Spec and ask it
// (not a copy of its rules); the lab builds what the checked Plan says.
//
// It imports no system package (no netlink, nftables or etcd server), so
// `overlaylab validate` and the scenario parser stay free of them.
package plan

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// Defaults.
const (
	DefaultName       = "default"
	DefaultHosts      = 3
	DefaultContainers = 2
	DefaultUnderlay   = "192.168.77.0/24"
	DefaultNetwork    = "10.10.0.0/16"
	DefaultStateRoot  = "/run/overlaylab"
	// HealthzPort is where the lab asks each agent for /readyz and /metrics.
	HealthzPort = 9285
	// EtcdClientPort and EtcdPeerPort are the embedded etcd's ports.
	EtcdClientPort = 2379
	EtcdPeerPort   = 2380
)

// Limits of the lab (not of the kernel).
const (
	MaxContainers  = 250 // per host and network: a MAC byte and a /24's addresses
	MinUnderlayMTU = 576
	MaxUnderlayMTU = 9000
	// EtcdSlots is how many addresses at the top of the underlay are kept
	// for etcd members (a cluster has at most 5).
	EtcdSlots = 5
	// MaxHosts bounds a lab by its MAC space (a host index takes 16 bits).
	MaxHosts = 65000
)

// Runtime is how containers are attached to a host.
type Runtime string

// Runtimes.
const (
	// RuntimeBridge is the lab's own docker-style bridge configured from
	// subnet.env (what `docker --bip --mtu` does).
	RuntimeBridge Runtime = "bridge"
	// RuntimeCNI runs the real CNI flannel meta-plugin in the host, which
	// delegates to the bridge and host-local plugins (the Kubernetes path).
	RuntimeCNI Runtime = "cni"
)

// ParseRuntime reads a runtime name.
func ParseRuntime(s string) (Runtime, error) {
	switch r := Runtime(s); r {
	case RuntimeBridge, RuntimeCNI:
		return r, nil
	case "":
		return RuntimeBridge, nil
	}
	return "", &FieldError{Field: "runtime", Value: strconv.Quote(s), Rule: "use bridge or cni"}
}

// Network is one overlay network of a lab: flannel's config, and for a
// tenant network of a multi-network lab its name ("" for the single network
// at flannel's own prefix).
type Network struct {
	Name   string
	Config *config.Config
}

// Agent is the agent binary a host runs. The zero value is overlaylab's own
// agent from the binary the lab runs from.
type Agent struct {
	Path string   `json:"path,omitempty"` // empty: overlaylab's own (`overlaylab agent`)
	Args []string `json:"args,omitempty"` // extra flags, passed verbatim
}

// HostSpec overrides the defaults for one host (h1 first).
type HostSpec struct {
	Containers int
	// Agent replaces the lab's agent on this host (Path empty: the default).
	Agent Agent
	// AgentArgs replaces Spec.AgentArgs on this host when non-nil.
	AgentArgs []string
}

// Etcd chooses the lab's etcd.
type Etcd struct {
	Members   int      // embedded members: 1 (0 means 1), 3 or 5
	Endpoints []string // an external etcd (proxied into the lab); empty = embedded
	TLS       bool     // embedded etcd serves client TLS with client-cert auth
}

// Spec is what a lab is built from.
type Spec struct {
	Name       string
	Hosts      int
	Containers int        // per host (and per network)
	PerHost    []HostSpec // h1.. overrides; shorter than Hosts is fine
	Networks   []Network  // at least one; several only with names
	Underlay   netip.Prefix
	// UnderlayMTU is the underlay links' MTU (0: the kernel's 1500).
	UnderlayMTU int
	Etcd        Etcd
	// Agent is every host's agent unless PerHost says otherwise.
	Agent Agent
	// AgentArgs are extra flags for overlaylab's own agent on every host.
	AgentArgs []string
	Runtime   Runtime
	// CNIDir holds the CNI plugins for RuntimeCNI (default: bin/cni beside
	// the overlaylab binary, then /opt/cni/bin).
	CNIDir string
	// Seed, when non-zero, makes overlaylab's agents pick their subnets
	// from a seeded sequence: same seed, same subnets.
	Seed int64
}

// FieldError is a rejected field of a Spec. Field is the CLI flag's name
// (without dashes), which the scenario parser maps to its YAML keys.
type FieldError struct {
	Field string
	Value string // as written, quoted where it is text; may be empty
	Rule  string
	// Host is set (1-based) when the problem is one host's.
	Host int
}

func (e *FieldError) Error() string {
	s := "--" + e.Field
	if e.Value != "" {
		s += " " + e.Value
	}
	if e.Host > 0 {
		s = fmt.Sprintf("host h%d: %s", e.Host, s)
	}
	return s + ": " + e.Rule
}

func ferr(field, value, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Rule: fmt.Sprintf(format, args...)}
}

// DefaultNetworkFor is the Network a lab of this many hosts gets when none
// is given: DefaultNetwork, widened one bit at a time (10.10.0.0/15,
// 10.8.0.0/14, ...) until its /24 subnets (flannel's default SubnetLen for
// these) are enough for every host.
func DefaultNetworkFor(hosts int) string {
	p := netip.MustParsePrefix(DefaultNetwork)
	for p.Bits() > 8 && 1<<(24-p.Bits())-1 < hosts {
		p, _ = p.Addr().Prefix(p.Bits() - 1)
	}
	return p.String()
}

// NumberTenant gives the k-th tenant network (from 0) of a lab flannel's
// default VNI (vxlan) or port (udp) plus k, where its author set none
// (vniSet, portSet): tenant networks on the same hosts need distinct ones.
// The CLI and scenarios number them by this one rule.
func NumberTenant(cfg *config.Config, k int, vniSet, portSet bool) {
	switch cfg.Backend.Type {
	case config.BackendVXLAN:
		if !vniSet {
			cfg.Backend.VNI += k
		}
	case config.BackendUDP:
		if !portSet {
			cfg.Backend.Port += k
		}
	}
}

// NewNetwork builds and checks a network config from the CLI's fields, with
// flannel's defaults applied by overlay/config.
func NewNetwork(name, cidr string, subnetLen int, backend string) (Network, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil || !p.Addr().Is4() {
		return Network{}, ferr("network", strconv.Quote(cidr), "not an IPv4 CIDR (want e.g. %s)", DefaultNetwork)
	}
	c := &config.Config{Network: p, SubnetLen: subnetLen, Backend: config.Backend{Type: backend}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return Network{}, configError(err)
	}
	return Network{Name: name, Config: c}, nil
}

// configError turns overlay/config's field errors into the lab's.
func configError(err error) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return ferr("network", "", "%v", err)
	}
	field := map[string]string{"Network": "network", "SubnetLen": "subnet-len", "Backend.Type": "backend"}[fe.Field]
	if field == "" {
		return ferr("network", "", "config %s %s: %s", fe.Field, fe.Value, fe.Rule)
	}
	return ferr(field, fe.Value, "%s", fe.Rule)
}

// Plan is a checked Spec with everything derived.
type Plan struct {
	Spec
	Names    Names
	Addr     Addressing
	Backends []Backend // per network, same order
}

// Check validates a spec without touching the system. Every error is a
// *FieldError saying what is wrong and what to do.
func (s Spec) Check() (*Plan, error) {
	if err := CheckName(s.Name); err != nil {
		return nil, err
	}
	if s.Hosts < 1 {
		return nil, ferr("hosts", strconv.Itoa(s.Hosts), "need at least 1 host")
	}
	if s.Containers < 0 {
		return nil, ferr("containers", strconv.Itoa(s.Containers), "cannot be negative")
	}
	if s.Containers > MaxContainers {
		return nil, ferr("containers", strconv.Itoa(s.Containers), "at most %d per host", MaxContainers)
	}
	if !s.Underlay.IsValid() || !s.Underlay.Addr().Is4() {
		return nil, ferr("underlay", strconv.Quote(s.Underlay.String()), "not an IPv4 CIDR (want e.g. %s)", DefaultUnderlay)
	}
	p := &Plan{Spec: s, Names: Names{Lab: s.Name}, Addr: Addressing{Underlay: s.Underlay.Masked()}}
	if n := p.Addr.HostCapacity(); s.Hosts > n {
		return nil, ferr("underlay", s.Underlay.String(), "holds %d hosts (host i is its i-th address, etcd the top %d), fewer than --hosts %d: use a larger one, e.g. 172.20.0.0/16", max(n, 0), EtcdSlots+1, s.Hosts)
	}
	if s.Hosts > MaxHosts {
		return nil, ferr("hosts", strconv.Itoa(s.Hosts), "at most %d", MaxHosts)
	}
	if s.UnderlayMTU != 0 && (s.UnderlayMTU < MinUnderlayMTU || s.UnderlayMTU > MaxUnderlayMTU) {
		return nil, ferr("underlay-mtu", strconv.Itoa(s.UnderlayMTU), "must be %d..%d", MinUnderlayMTU, MaxUnderlayMTU)
	}
	if _, err := ParseRuntime(string(s.Runtime)); err != nil {
		return nil, err
	}
	if err := p.checkNetworks(); err != nil {
		return nil, err
	}
	if err := p.checkHosts(); err != nil {
		return nil, err
	}
	if err := s.Etcd.check(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Plan) checkNetworks() error {
	if len(p.Networks) == 0 {
		return ferr("network", "", "a lab needs a network")
	}
	multi := p.Multi()
	seen := map[string]bool{}
	p.Backends = nil
	for _, n := range p.Networks {
		cfg := n.Config
		if cfg == nil {
			return ferr("network", n.Name, "no config")
		}
		if multi {
			if err := CheckNetworkName(n.Name); err != nil {
				return err
			}
			if seen[n.Name] {
				return ferr("network", n.Name, "named twice")
			}
			seen[n.Name] = true
		}
		if cfg.Network.Overlaps(p.Addr.Underlay) {
			return ferr("network", cfg.Network.String(), "overlaps --underlay %s: pick disjoint ranges", p.Addr.Underlay)
		}
		if c := cfg.SubnetCount(); c < p.Hosts {
			return ferr("network", cfg.Network.String(), "with /%d subnets holds %d leasable subnets, fewer than --hosts %d: use a larger network or a longer --subnet-len", cfg.SubnetLen, c, p.Hosts)
		}
		b, err := BackendOf(cfg)
		if err != nil {
			return err
		}
		p.Backends = append(p.Backends, b)
	}
	if multi {
		if p.Runtime == RuntimeCNI {
			return ferr("runtime", string(RuntimeCNI), "the CNI flannel plugin serves one network; tenant networks need the bridge runtime")
		}
		return CheckTenants(p.Networks)
	}
	return nil
}

// CheckTenants refuses what several networks on the same hosts cannot
// share: a backend type, a VNI, a udp port, and overlapping host-gw
// networks (plain routes cannot tell tenants apart).
func CheckTenants(nets []Network) error {
	for i, a := range nets {
		for _, b := range nets[:i] {
			ca, cb := a.Config, b.Config
			switch {
			case ca.Backend.Type != cb.Backend.Type:
				return ferr("network", a.Name, "uses backend %s and network %s uses %s: the networks of one lab share a backend", ca.Backend.Type, b.Name, cb.Backend.Type)
			case ca.Backend.Type == config.BackendVXLAN && ca.Backend.VNI == cb.Backend.VNI:
				return ferr("network", a.Name, "has VNI %d, as network %s: give each vxlan network its own VNI", ca.Backend.VNI, b.Name)
			case ca.Backend.Type == config.BackendUDP && ca.Backend.Port == cb.Backend.Port:
				return ferr("network", a.Name, "has udp port %d, as network %s: give each udp network its own port", ca.Backend.Port, b.Name)
			case ca.Backend.Type == config.BackendHostGW && ca.Network.Overlaps(cb.Network):
				return ferr("network", a.Name, "(%s) overlaps network %s (%s) on host-gw: plain routes cannot tell tenants apart; use vxlan or udp, or disjoint ranges", ca.Network, b.Name, cb.Network)
			}
		}
	}
	return nil
}

func (p *Plan) checkHosts() error {
	for i := 1; i <= p.Hosts; i++ {
		n := p.ContainersOn(i)
		if n < 0 || n > MaxContainers {
			return &FieldError{Field: "containers", Value: strconv.Itoa(n), Rule: fmt.Sprintf("must be 0..%d", MaxContainers), Host: i}
		}
		for _, nw := range p.Networks {
			if per := ContainersPerSubnet(nw.Config.SubnetLen); n > per {
				return &FieldError{Field: "containers", Value: strconv.Itoa(n), Rule: fmt.Sprintf("a /%d subnet holds only %d containers besides the bridge", nw.Config.SubnetLen, per)}
			}
		}
	}
	return nil
}

// ContainersPerSubnet is how many containers fit a subnet of that length
// besides its network, gateway (bridge) and broadcast addresses.
func ContainersPerSubnet(bits int) int { return (1 << (32 - bits)) - 3 }

func (e Etcd) check() error {
	switch e.Members {
	case 0, 1, 3, 5:
	default:
		return ferr("etcd-members", strconv.Itoa(e.Members), "use 1, 3 or 5 (a quorum needs an odd number)")
	}
	if len(e.Endpoints) > 1 {
		return ferr("etcd-endpoints", strings.Join(e.Endpoints, ","), "give one: the lab proxies it into the lab at the etcd address")
	}
	if len(e.Endpoints) > 0 {
		if e.Members > 1 {
			return ferr("etcd-members", strconv.Itoa(e.Members), "applies to the embedded etcd, not to --etcd-endpoints")
		}
		if e.TLS {
			return ferr("etcd-tls", "", "applies to the embedded etcd; for an external one, pass its certificates to the agents with --agent-arg")
		}
		for _, ep := range e.Endpoints {
			if _, err := EndpointHostPort(ep); err != nil {
				return err
			}
		}
	}
	return nil
}

// EndpointHostPort checks an external etcd endpoint (http://HOST:PORT, the
// one form the lab can proxy into a lab) and returns HOST:PORT.
func EndpointHostPort(endpoint string) (string, error) {
	const want = "want http://HOST:PORT"
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "not a URL (%s)", want)
	case u.Scheme == "https":
		return "", ferr("etcd-endpoints", endpoint, "TLS endpoints are not proxied into a lab yet; use http")
	case u.Scheme != "http":
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "scheme must be http (%s)", want)
	case u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "only scheme, host and port are allowed (%s)", want)
	case u.Hostname() == "":
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "no host (%s)", want)
	case u.Port() == "":
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "no port (%s)", want)
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return "", ferr("etcd-endpoints", strconv.Quote(endpoint), "port %q is not 1..65535", u.Port())
	}
	return u.Host, nil
}

// ContainersOn is host i's container count (per network).
func (s *Spec) ContainersOn(i int) int {
	if i-1 < len(s.PerHost) && i >= 1 {
		return s.PerHost[i-1].Containers
	}
	return s.Containers
}

// AgentOn is host i's agent and the extra flags it gets.
func (s *Spec) AgentOn(i int) (Agent, []string) {
	a, args := s.Agent, s.AgentArgs
	if i-1 < len(s.PerHost) && i >= 1 {
		h := s.PerHost[i-1]
		if h.Agent.Path != "" || h.Agent.Args != nil {
			a = h.Agent
		}
		if h.AgentArgs != nil {
			args = h.AgentArgs
		}
	}
	return a, args
}

// Multi reports whether the lab has named tenant networks.
func (s *Spec) Multi() bool {
	return len(s.Networks) > 1 || (len(s.Networks) == 1 && s.Networks[0].Name != "")
}

// StateDir is a lab's directory under root. The name must have passed
// CheckName, so the result is always a direct child of root.
func StateDir(root, name string) string { return filepath.Join(root, name) }

// SafeStateDir checks the name and returns its state dir: the only way
// commands reach a lab's directory.
func SafeStateDir(root, name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	dir := filepath.Join(root, name)
	if filepath.Dir(dir) != filepath.Clean(root) {
		return "", ferr("name", strconv.Quote(name), "resolves outside %s", root)
	}
	return dir, nil
}

// OurAgentOnlyFlags are the flags overlaylab's agent has and flanneld has
// not: a lab or scenario that passes one to another agent is refused.
var OurAgentOnlyFlags = []string{
	"--subnet-seed", "--lease-ttl", "--lease-renew-margin", "--udp-mode", "--pprof", "--udp-workers",
	"--networks", "--subnet-dir",
}

// OurAgentOnlyFlag returns the first of args that only overlaylab's agent
// takes, or "".
func OurAgentOnlyFlag(args []string) string {
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if slices.Contains(OurAgentOnlyFlags, name) {
			return name
		}
	}
	return ""
}
