package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultStateRoot holds one directory per lab.
const DefaultStateRoot = "/run/overlaylab"

// State is what a running lab looks like; it is saved after every build step
// so `down` can undo even a half-built lab. Its JSON is the `status -o json`
// contract.
type State struct {
	Name     string        `json:"name"`
	Backend  string        `json:"backend"`
	Network  string        `json:"network"`
	Etcd     EtcdState     `json:"etcd"`
	Underlay UnderlayState `json:"underlay"`
	Hosts    []HostState   `json:"hosts"`
	StateDir string        `json:"stateDir"`
	Phase    string        `json:"phase"`
	Capture  string        `json:"capture,omitempty"`
	Seed     int64         `json:"seed,omitempty"`
	// BackendPort and BackendVNI are the config's (after defaults).
	BackendPort int `json:"backendPort,omitempty"`
	BackendVNI  int `json:"backendVNI,omitempty"`
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
	Name       string           `json:"name"`
	Netns      string           `json:"netns"`
	UnderlayIP string           `json:"underlayIP"`
	Subnet     string           `json:"subnet"`
	MTU        int              `json:"mtu"`
	AgentPID   int              `json:"agentPID"`
	SubnetFile string           `json:"subnetFile"`
	AgentLog   string           `json:"agentLog"`
	AgentArgs  []string         `json:"agentArgs,omitempty"`
	Foreign    string           `json:"foreignAgent,omitempty"` // another agent implementation runs here
	Containers []ContainerState `json:"containers"`
}

// ContainerState is one container namespace.
type ContainerState struct {
	Name  string `json:"name"`
	Netns string `json:"netns"`
	IP    string `json:"ip"`
}

// StateDir is a lab's directory under root.
func StateDir(root, name string) string { return filepath.Join(root, name) }

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// Save writes the state atomically.
func (s *State) Save() error {
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

// ErrNoLab says no state exists for a lab.
var ErrNoLab = errors.New("no such lab")

// Load reads a lab's state.
func Load(root, name string) (*State, error) {
	data, err := os.ReadFile(statePath(StateDir(root, name)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w (state %s not found; start one with `overlaylab up --name %s`)", name, ErrNoLab, statePath(StateDir(root, name)), name)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab %q: state %s: %w", name, statePath(StateDir(root, name)), err)
	}
	return &s, nil
}

// Index is the host's number: 3 for h3. It fixes the host's underlay
// address and MACs.
func (h *HostState) Index() (int, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(h.Name, "h"))
	if err != nil || i < 1 {
		return 0, fmt.Errorf("host name %q is not h<N>", h.Name)
	}
	return i, nil
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
