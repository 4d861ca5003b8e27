package scenarios

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// APIVersion is the only scenario format version this package reads.
const APIVersion = "overlaylab/v1"

// Defaults applied by Parse (the lab's own defaults are in lab/plan).
const (
	DefaultWithin = 10 * time.Second
	DefaultSignal = "TERM"
)

// Scenario is a checked scenario with every default applied and every value
// parsed: what the runner plays.
type Scenario struct {
	File        string // as given to Parse; positions refer to it
	Name        string
	Lab         string // lab name: `lab:` or else Name
	Seed        int64  // carried for the runner: same file + seed => same run
	Description string

	Network *config.Config // resolved through config.Parse: flannel's defaults and rules
	Backend string         // Network.Backend.Type
	// Tenants are the named networks of networks: (Network is the first);
	// empty for the single network.
	Tenants []Tenant

	// Runtime is how containers attach to their host.
	Runtime plan.Runtime

	Underlay      netip.Prefix
	UnderlayMTU   int      // 0 = kernel default
	EtcdEndpoints []string // empty = the lab's embedded etcd
	EtcdMembers   int      // embedded etcd members: 1 (default), 3 or 5

	Hosts []HostSpec // h1..hN at start
	// MaxHosts is the highest host index the scenario reaches: len(Hosts)
	// plus one per host-add step (names are never reused).
	MaxHosts int

	Steps     []Step // in the order they are played (see Step)
	Expects   []Expectation
	Artifacts Artifacts
}

// Tenant is one named network of a multi-network scenario.
type Tenant struct {
	Name   string
	Config *config.Config
}

// HostSpec is one host of the lab.
type HostSpec struct {
	Name       string // h1, h2, ...
	Containers int
	AgentArgs  []string // extra agent flags
	Link       LinkSpec // impairment of the underlay link, applied at start
	// Agent is the binary this host runs (zero: overlaylab's own).
	Agent plan.Agent
}

// LinkSpec impairs a host's underlay link. The zero value is no impairment.
type LinkSpec struct {
	RateBps     uint64  // 0 = unlimited
	LossPercent float64 // 0..100
}

// Action is what a timeline step does.
type Action string

// Actions and the parameters each takes (in Step).
const (
	ActionAgentKill     Action = "agent-kill"     // Host, Signal
	ActionAgentStart    Action = "agent-start"    // Host
	ActionLinkDown      Action = "link-down"      // Host
	ActionLinkUp        Action = "link-up"        // Host
	ActionLoss          Action = "loss"           // Host, Percent (0 removes the loss)
	ActionRate          Action = "rate"           // Host, RateBps (0 = "unlimited": removes the limit)
	ActionEtcdStop      Action = "etcd-stop"      // embedded etcd only; Member
	ActionEtcdStart     Action = "etcd-start"     // embedded etcd only; Member
	ActionEtcdPartition Action = "etcd-partition" // Host: cut it off from etcd
	ActionEtcdHeal      Action = "etcd-heal"      // Host
	ActionLeaseDelete   Action = "lease-delete"   // Host: delete its lease in etcd
	ActionHostAdd       Action = "host-add"       // Host (derived), Containers, AgentArgs
	ActionHostRemove    Action = "host-remove"    // Host
	ActionConfigSet     Action = "config-set"     // Config, written verbatim
	ActionImpair        Action = "impair"         // Host, Impair
	ActionImpairClear   Action = "impair-clear"   // Host
	ActionLinkMTU       Action = "link-mtu"       // Host, MTU
	ActionEtcdCompact   Action = "etcd-compact"   // (none)
	ActionEtcdWipe      Action = "etcd-wipe"      // KeepConfig
	ActionOffload       Action = "offload"        // Host, Offload
	ActionAgentUpgrade  Action = "agent-upgrade"  // Host, Binary
)

// Impairment is a link impairment on a host's underlay link, by the lab's
// userspace link emulator.
type Impairment struct {
	Delay, Jitter                     time.Duration
	Loss, Reorder, Duplicate, Corrupt float64 // percent
	RateBps                           uint64  // 0 = unlimited
	Direction                         string  // in, out, both (default)
	Match                             string  // all (default), overlay, control
	Seed                              int64
}

// Offload toggles a host device's offloads; nil leaves one as it is.
type Offload struct {
	Dev                  string
	TxChecksum, TSO, GRO *bool
}

// Step is one fault or change on the timeline.
//
// Steps is a total order and the runner plays the steps one at a time in it:
// a step with At starts At after ready, or when the previous step completes
// if that is later; a step with After starts Delay after the named step
// completed (which is always earlier in the order). The order is by nominal
// start (At, or the nominal start of After plus Delay), then by depth of the
// After chain, then by position in the file. Host names are checked against
// this order: a host added by host-add exists only for the steps after it,
// and a removed host for none after its removal.
type Step struct {
	Name  string // optional; needed to be referenced
	Pos   Pos
	At    time.Duration // offset from ready; valid when After == ""
	After string        // name of the step this one follows
	Delay time.Duration // extra wait after After completed

	Action     Action
	Host       string      // the host acted on; for host-add the name of the new host
	Signal     string      // agent-kill: TERM, KILL or INT
	Percent    float64     // loss
	RateBps    uint64      // rate
	Containers int         // host-add
	AgentArgs  []string    // host-add
	Agent      plan.Agent  // host-add: the new host's agent: the hosts mapping's, or the last listed host's (zero: overlaylab's own)
	NoWait     bool        // agent-start: wait: false
	Impair     *Impairment // impair
	MTU        int         // link-mtu
	KeepConfig bool        // etcd-wipe
	Offload    *Offload    // offload
	Binary     string      // agent-upgrade
	Network    string      // lease-delete, config-set: the tenant network ("": the first)
	Config     string      // config-set: raw text, deliberately unchecked
	// Member is the etcd member an etcd-stop/etcd-start acts on: "1".."N",
	// for etcd-stop "leader" or "follower" (resolved when played), for
	// etcd-start "stopped" (every member that is not running).
	Member string
}

// Label names the step in messages: its name, or its action and line.
func (st *Step) Label() string {
	if st.Name != "" {
		return st.Name
	}
	return fmt.Sprintf("%s (line %d)", st.Action, st.Pos.Line)
}

// ExpectKind is which check an expectation makes.
type ExpectKind string

// Expectation kinds.
const (
	KindPing      ExpectKind = "ping"
	KindEncap     ExpectKind = "encap"
	KindLease     ExpectKind = "lease"
	KindRoute     ExpectKind = "route"
	KindAgent     ExpectKind = "agent"
	KindPMTU      ExpectKind = "pmtu"
	KindFlow      ExpectKind = "flow"
	KindTCP       ExpectKind = "tcp"
	KindLog       ExpectKind = "log"
	KindResources ExpectKind = "resources"
	KindMetric    ExpectKind = "metric"
	KindNeigh     ExpectKind = "neigh"
	KindFDB       ExpectKind = "fdb"
)

// Expectation is one check with its timing. Exactly one of Ping, Encap,
// Lease, Route and Agent is set, matching Kind.
type Expectation struct {
	Name string
	Pos  Pos
	Kind ExpectKind
	When When
	// Within is how long a point check may take to become true (it is
	// retried until then); 0 means exactly once. Zero for during windows.
	Within time.Duration

	Ping  *PingCheck
	Encap *EncapCheck
	Lease *LeaseCheck
	Route *RouteCheck
	Agent *AgentCheck

	PMTU      *PMTUCheck
	Flow      *FlowCheck
	TCP       *TCPCheck
	Log       *LogCheck
	Resources *ResourcesCheck
	Metric    *MetricCheck
	Neigh     *NeighCheck
	FDB       *FDBCheck
}

// PMTUCheck searches the largest IP packet with DF set that passes From →
// To (each selects one container) and expects MTU.
type PMTUCheck struct {
	From, To Selector
	MTU      int
}

// FlowCheck holds a long-lived flow From → To through the expectation's
// window: it fails if the connection resets (tcp), if no byte moves for
// longer than MaxStall, or if the average rate is below MinRateBps.
type FlowCheck struct {
	From, To   Selector
	Proto      string // tcp or udp
	MaxStall   time.Duration
	MinRateBps uint64
}

// TCPCheck makes one TCP connection attempt From → To:Port. The runner
// listens on To:Port unless Result is refused.
type TCPCheck struct {
	From, To Selector
	Port     int
	Result   string // connect, refused or timeout
}

// LogCheck counts the lines of a host's agent log matching Match.
type LogCheck struct {
	Host  string
	Match *regexp.Regexp
	Count Compare
}

// ResourcesCheck bounds the host's agent process over a window: CPU in
// percent of one core, RSS in bytes (sampled).
type ResourcesCheck struct {
	Host     string
	CPU, RSS *Compare
}

// MetricCheck reads a sample from the host agent's /metrics.
type MetricCheck struct {
	Host   string
	Name   string
	Labels map[string]string
	Value  Compare
}

// NeighCheck looks for a neighbour entry for IP (on Dev, with LLAddr, when
// given) in a host.
type NeighCheck struct {
	Host string
	IP   netip.Addr
	// IPPeer, when set, stands for the VTEP address of that host's subnet
	// (its first address: flannel's vxlan neighbour for the peer).
	IPPeer  string
	LLAddr  string
	Dev     string
	Present bool
}

// FDBCheck looks for a forwarding entry for MAC (to Dst, on Dev, when
// given) in a host. Dst may name a peer ("peer:h2": its underlay address).
type FDBCheck struct {
	Host    string
	MAC     string
	Dst     netip.Addr
	DstPeer string
	Dev     string
	Present bool
}

// WhenKind is when an expectation is checked.
type WhenKind string

// When kinds.
const (
	WhenAt     WhenKind = "at"     // At after ready
	WhenAfter  WhenKind = "after"  // Delay after Step completes
	WhenDuring WhenKind = "during" // continuously over From..To
	WhenFinal  WhenKind = "final"  // after the whole timeline and every other check
)

// When is the timing of an expectation.
type When struct {
	Kind  WhenKind
	At    time.Duration // WhenAt
	Step  string        // WhenAfter
	Delay time.Duration // WhenAfter
	From  Mark          // WhenDuring
	To    Mark          // WhenDuring
}

// Mark is a moment: Offset after ready, or (Step != "") the moment Step
// completes.
type Mark struct {
	Offset time.Duration
	Step   string
}

func (m Mark) String() string {
	if m.Step != "" {
		return m.Step
	}
	return m.Offset.String()
}

// Selector picks containers: Host is "hN" or "*", Container "cN" or "*".
type Selector struct {
	Host, Container string
}

// Match reports whether the container (for example "h1", "c2" or
// "red-c2") is selected. A container part "red-*" selects every container
// of tenant network red.
func (s Selector) Match(host, container string) bool {
	if s.Host != "*" && s.Host != host {
		return false
	}
	if net, ok := strings.CutSuffix(s.Container, "-*"); ok {
		return strings.HasPrefix(container, net+"-")
	}
	return s.Container == "*" || s.Container == container
}

func (s Selector) String() string { return s.Host + "/" + s.Container }

// PingResult is what a ping check expects.
type PingResult string

// Ping results.
const (
	ResultAll  PingResult = "all"  // every pair answers
	ResultNone PingResult = "none" // no pair answers
	ResultLoss PingResult = "loss" // at most MaxLoss percent of the probes are lost
)

// PingCheck pings from every selected container to every other selected
// container.
type PingCheck struct {
	From, To Selector
	Result   PingResult
	MaxLoss  float64 // percent, for ResultLoss
	Size     int     // IP packet size in bytes (0: ping's 84)
	DF       bool    // Don't Fragment
}

// EncapCheck captures on a host's underlay interface and checks that overlay
// traffic is encapsulated: inner addresses inside the Network, on Port (and
// VNI for vxlan), and no bare inner packets on the wire.
type EncapCheck struct {
	Host    string
	Backend string // udp or vxlan
	Port    int
	VNI     int // vxlan only
}

// LeaseState compares a lease with the one held at ready.
type LeaseState string

// Lease states.
const (
	LeaseUnchanged LeaseState = "unchanged"
	LeaseChanged   LeaseState = "changed"
)

// LeaseCheck checks a host's lease against the one it held at ready.
type LeaseCheck struct {
	Host  string
	State LeaseState
	// Network is the tenant network whose lease is checked ("": the first).
	Network string
}

// RouteCheck checks for a route to Dst in Host's main table. When Peer is
// set, Dst is unknown until run time: it is Peer's leased subnet.
type RouteCheck struct {
	Host    string
	Dst     netip.Prefix // when Peer == ""
	Peer    string
	Present bool
	// Via, when set, is the gateway the route must have: an address, or
	// ViaPeer's underlay address.
	Via     netip.Addr
	ViaPeer string
}

// AgentCheck checks a host's agent: exactly one of ExitCode and Log is set.
type AgentCheck struct {
	Host string
	// ExitCode is the exit status as a shell reports it (128+N for a death
	// by signal N).
	ExitCode *int
	Log      *regexp.Regexp // must match somewhere in the agent's log
	// Alive: the host's agent runs (or, false, does not). Ready: it is
	// ready (our agent's /readyz; another agent's subnet.env and lease).
	Alive, Ready *bool
	// Restarts bounds the agent processes the host had since ready that
	// the lab did not start (a supervisor, a person, an agent re-executing
	// itself); the lab's own starts, kills and upgrades are steps.
	Restarts *Compare
}

// PcapPolicy says when packet captures are kept.
type PcapPolicy string

// Pcap policies.
const (
	PcapFailing PcapPolicy = "failing" // keep captures of a failed run
	PcapAlways  PcapPolicy = "always"
	PcapNever   PcapPolicy = "never"
)

// Artifacts says what a run keeps.
type Artifacts struct {
	Pcap  PcapPolicy
	Dumps bool // routes, neighbours, FDB, etcd keys and agent logs
}

// Step returns the step with the given name, or nil.
func (s *Scenario) Step(name string) *Step {
	for i := range s.Steps {
		if s.Steps[i].Name == name {
			return &s.Steps[i]
		}
	}
	return nil
}

// Load reads and parses a scenario file.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and checks a scenario. file is used in positions only. On
// any problem it returns Errors, every problem found, sorted by position.
func Parse(file string, data []byte) (*Scenario, error) {
	d := newDecoder(file)
	raw := d.document(data)
	r := &resolver{d: d, raw: raw, s: &Scenario{File: file}}
	r.resolve()
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return r.s, nil
}
