package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// State is what a running lab looks like; it is saved after every build step
// so `down` can undo even a half-built lab. Its JSON is the `status -o json`
// contract: name, backend, network, etcd{endpoints, netns},
// underlay{netns, bridge, cidr}, hosts[{name, netns, underlayIP, subnet, mtu,
// agentPID, containers[{name, netns, ip}]}]; the other keys are extras.
type State struct {
	Name     string        `json:"name"`
	Backend  string        `json:"backend"`
	Network  string        `json:"network"`
	Etcd     EtcdState     `json:"etcd"`
	Underlay UnderlayState `json:"underlay"`
	Hosts    []HostState   `json:"hosts"`
	// Networks lists every overlay network: one for a single-network lab,
	// one per tenant for a multi-network lab.
	Networks []NetworkState `json:"networks"`
	Runtime  plan.Runtime   `json:"runtime"`
	// CNIDir holds the CNI plugins the cni runtime runs.
	CNIDir   string `json:"cniDir,omitempty"`
	StateDir string `json:"stateDir"`
	Phase    string `json:"phase"`
	Capture  string `json:"capture,omitempty"`
	Seed     int64  `json:"seed,omitempty"`
	// NextHost is the index the next added host gets. Host names and
	// underlay addresses are never reused, so a name in an old log, capture
	// or report always means one host.
	NextHost int `json:"nextHost"`
	// Defaults are what `up` gave every host (--agent PATH, --agent-arg):
	// a host added later gets them too unless told otherwise.
	Defaults HostDefaults `json:"defaults,omitzero"`
}

// NetworkState is one overlay network of the lab.
type NetworkState struct {
	Name    string `json:"name,omitempty"` // "" for the single network at flannel's prefix
	Network string `json:"network"`
	Backend string `json:"backend"`
	VNI     int    `json:"vni,omitempty"`
	Port    int    `json:"port,omitempty"`
	// Prefix is the network's etcd prefix (flannel's historical layout for
	// tenants: <prefix>/<name>).
	Prefix string `json:"etcdPrefix"`
	// Config is the network config as written to etcd.
	Config json.RawMessage `json:"config"`
}

// EtcdState describes the lab's etcd.
type EtcdState struct {
	Endpoints []string     `json:"endpoints"`
	Netns     string       `json:"netns"` // the first member's
	Members   []EtcdMember `json:"members"`
	External  []string     `json:"external,omitempty"` // set when proxying to an external etcd
	TLS       *TLSFiles    `json:"tls,omitempty"`      // set when etcd serves client TLS
}

// EtcdMember is one etcd process (or the proxy to an external etcd).
type EtcdMember struct {
	Name      string   `json:"name"`
	Netns     string   `json:"netns"`
	IP        string   `json:"ip"`
	PID       int      `json:"pid"`
	Log       string   `json:"log"`
	Args      []string `json:"args"`                // how to start it again
	RootNetns bool     `json:"rootNetns,omitempty"` // runs in the root netns (the proxy)
	DataDir   string   `json:"dataDir,omitempty"`
}

// UnderlayState describes the shared L2 segment.
type UnderlayState struct {
	Netns  string `json:"netns"`
	Bridge string `json:"bridge"`
	CIDR   string `json:"cidr"`
	MTU    int    `json:"mtu"`
}

// HostState is one fake host.
type HostState struct {
	Name       string `json:"name"`
	Index      int    `json:"index"`
	Netns      string `json:"netns"`
	UnderlayIP string `json:"underlayIP"`
	// Subnet, MTU and SubnetFile are the first network's; Subnets has
	// every network's (by name) in a multi-network lab.
	Subnet     string            `json:"subnet"`
	MTU        int               `json:"mtu"`
	Subnets    map[string]string `json:"subnets,omitempty"`
	AgentPID   int               `json:"agentPID"`
	Agent      AgentState        `json:"agent"`
	SubnetFile string            `json:"subnetFile"`
	// SubnetDir holds one subnet.env per network in a multi-network lab.
	SubnetDir  string           `json:"subnetDir,omitempty"`
	AgentLog   string           `json:"agentLog"`
	AgentArgs  []string         `json:"agentArgs,omitempty"`
	Containers []ContainerState `json:"containers"`
	// Impair is the host link's active impairment, if any.
	Impair *ImpairState `json:"impair,omitempty"`
}

// AgentState is which agent a host runs and every PID the lab started it as.
type AgentState struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	// Ours is true for overlaylab's own agent (it has /readyz and our
	// extra flags); any other binary is driven with flanneld's flags only.
	Ours bool     `json:"ours"`
	Args []string `json:"args,omitempty"` // the agent's own extra args (agent: {args})
	// Started lists every PID the lab started on this host, oldest first.
	Started []int `json:"started,omitempty"`
}

// ContainerState is one container namespace.
type ContainerState struct {
	Name    string `json:"name"`
	Netns   string `json:"netns"`
	IP      string `json:"ip"`
	Network string `json:"network,omitempty"` // its tenant network
	// Prefix and Gateway are as the runtime assigned them (CNI's result).
	Prefix  string `json:"prefix,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// CNI is the container ID the CNI plugins know it by (runtime cni).
	CNI string `json:"cniContainerID,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// save writes the state atomically: readers (status) never see half a file.
func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(s.StateDir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, statePath(s.StateDir)); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// HostDefaults are a lab's per-host settings given for every host.
type HostDefaults struct {
	Agent     plan.Agent `json:"agent,omitzero"` // Path empty: overlaylab's own
	AgentArgs []string   `json:"agentArgs,omitempty"`
}

// ErrNoLab says no state exists for a lab.
var ErrNoLab = errors.New("no such lab")

// loadState reads a lab's state from its directory.
func loadState(dir, name string) (*State, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w (state %s not found; start one with `overlaylab up --name %s`)", name, ErrNoLab, statePath(dir), name)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab %q: state %s: %w", name, statePath(dir), err)
	}
	if s.Name != name {
		return nil, fmt.Errorf("lab %q: state %s names lab %q", name, statePath(dir), s.Name)
	}
	s.upgrade()
	return &s, nil
}

// upgrade fills fields a state written by an older overlaylab lacks.
func (s *State) upgrade() {
	for i := range s.Hosts {
		h := &s.Hosts[i]
		if h.Index == 0 {
			h.Index, _ = strconv.Atoi(strings.TrimPrefix(h.Name, "h"))
		}
		s.NextHost = max(s.NextHost, h.Index+1)
	}
	if s.Runtime == "" {
		s.Runtime = plan.RuntimeBridge
	}
	if len(s.Networks) == 0 && s.Network != "" {
		s.Networks = []NetworkState{{Network: s.Network, Backend: s.Backend, Prefix: defaultPrefix}}
	}
}

// Load reads a lab's state without locking it: for read-only commands
// (status) and tests. The name is checked first.
func Load(root, name string) (*State, error) {
	dir, err := plan.SafeStateDir(root, name)
	if err != nil {
		return nil, err
	}
	return loadState(dir, name)
}

// Host finds a host by name.
func (s *State) Host(name string) (*HostState, bool) {
	for i := range s.Hosts {
		if s.Hosts[i].Name == name {
			return &s.Hosts[i], true
		}
	}
	return nil, false
}

// HostNames lists the hosts' names, for error messages.
func (s *State) HostNames() string {
	var names []string
	for _, h := range s.Hosts {
		names = append(names, h.Name)
	}
	return strings.Join(names, ", ")
}

func (s *State) host(name string) (*HostState, error) {
	if h, ok := s.Host(name); ok {
		return h, nil
	}
	return nil, fmt.Errorf("no host %q in lab %q (it has %s)", name, s.Name, s.HostNames())
}

// Clone is a deep copy, for readers that must not share the lab's state
// with the goroutine changing it.
func (s *State) Clone() *State {
	data, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("state of lab %q does not marshal: %v", s.Name, err)) // only plain data in it
	}
	var c State
	if err := json.Unmarshal(data, &c); err != nil {
		panic(fmt.Sprintf("state of lab %q does not round-trip: %v", s.Name, err))
	}
	return &c
}

// addressing is the lab's underlay placement.
func (s *State) addressing() (plan.Addressing, error) {
	ul, err := netip.ParsePrefix(s.Underlay.CIDR)
	if err != nil {
		return plan.Addressing{}, fmt.Errorf("state of lab %q: underlay %q: %w", s.Name, s.Underlay.CIDR, err)
	}
	return plan.Addressing{Underlay: ul}, nil
}

// backends is the lab's backend knowledge per network.
func (s *State) backends() ([]plan.Backend, error) {
	var out []plan.Backend
	for _, n := range s.Networks {
		cfg, err := n.config()
		if err != nil {
			return nil, err
		}
		b, err := plan.BackendOf(cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// config parses the network's config as the agents do.
func (n *NetworkState) config() (*config.Config, error) {
	if len(n.Config) == 0 {
		c := &config.Config{Network: netip.MustParsePrefix(n.Network), Backend: config.Backend{Type: n.Backend, Port: n.Port, VNI: n.VNI}}
		c.SetDefaults()
		return c, c.Validate()
	}
	var raw string
	if json.Unmarshal(n.Config, &raw) == nil {
		return config.Parse([]byte(raw))
	}
	return config.Parse(n.Config)
}

// network returns the lab's network by name ("" is the first).
func (s *State) network(name string) (*NetworkState, error) {
	for i := range s.Networks {
		if s.Networks[i].Name == name || (name == "" && i == 0) {
			return &s.Networks[i], nil
		}
	}
	var names []string
	for _, n := range s.Networks {
		names = append(names, n.Name)
	}
	return nil, fmt.Errorf("lab %q has no network %q (it has %s)", s.Name, name, strings.Join(names, ", "))
}

// Target maps "h1", "h1/c2", "h1/red-c1", "etcd", "etcd2" or "underlay" to
// the namespace it names, for `overlaylab exec`.
func (s *State) Target(target string) (string, error) {
	switch target {
	case "etcd":
		return s.Etcd.Netns, nil
	case "underlay":
		return s.Underlay.Netns, nil
	}
	for k, m := range s.Etcd.Members {
		if target == "etcd"+strconv.Itoa(k+1) {
			return m.Netns, nil
		}
	}
	hostName, cName, hasC := strings.Cut(target, "/")
	h, ok := s.Host(hostName)
	if !ok {
		return "", fmt.Errorf("%q: no host %q in lab %q (there are %s, etcd, underlay)", target, hostName, s.Name, s.HostNames())
	}
	if !hasC {
		return h.Netns, nil
	}
	var names []string
	for _, c := range h.Containers {
		if c.Name == cName {
			return c.Netns, nil
		}
		names = append(names, c.Name)
	}
	return "", fmt.Errorf("%q: host %s has no container %q (it has %s)", target, hostName, cName, strings.Join(names, ", "))
}
