package scenarios

// The raw types mirror the YAML document one to one. Decode fills them from a
// yaml.Node tree (never through yaml.Unmarshal's reflection), strictly: an
// unknown key is an error naming the allowed ones, and every value keeps the
// position it was written at, so the resolver can blame the exact line and
// column. Leaves are String, Int, Bool and StringList; an absent (or null)
// value has a zero Pos. The yaml tags are the key names, and the only source
// of the "allowed" lists in errors.

// String is a scalar read as text. Any scalar but null is accepted (2s, 20%,
// 10mbit and 20 are all text here); the resolver parses it.
type String struct {
	Value string
	Pos   Pos
}

// IsSet reports whether the value was given.
func (s String) IsSet() bool { return s.Pos.IsValid() }

// Int is a YAML integer.
type Int struct {
	Value int64
	Pos   Pos
}

// IsSet reports whether the value was given.
func (i Int) IsSet() bool { return i.Pos.IsValid() }

// Bool is a YAML boolean.
type Bool struct {
	Value bool
	Pos   Pos
}

// IsSet reports whether the value was given.
func (b Bool) IsSet() bool { return b.Pos.IsValid() }

// StringList is a sequence of strings.
type StringList struct {
	Values []String
	Pos    Pos
}

// StringMap is a mapping of names to strings (metric labels).
type StringMap struct {
	Values map[string]String
	Pos    Pos
}

// IsSet reports whether the mapping was given.
func (m StringMap) IsSet() bool { return m.Pos.IsValid() }

// IsSet reports whether the list was given (possibly empty).
func (l StringList) IsSet() bool { return l.Pos.IsValid() }

// Strings returns the values as plain strings (nil when empty).
func (l StringList) Strings() []string {
	if len(l.Values) == 0 {
		return nil
	}
	out := make([]string, len(l.Values))
	for i, v := range l.Values {
		out[i] = v.Value
	}
	return out
}

// RawScenario is a whole scenario file.
type RawScenario struct {
	APIVersion  String        `yaml:"apiVersion"`
	Name        String        `yaml:"name"`
	Lab         String        `yaml:"lab"`
	Seed        Int           `yaml:"seed"`
	Description String        `yaml:"description"`
	Network     *RawNetwork   `yaml:"network"`
	Networks    RawTenants    `yaml:"networks"`
	Underlay    *RawUnderlay  `yaml:"underlay"`
	Etcd        *RawEtcd      `yaml:"etcd"`
	Hosts       *RawHosts     `yaml:"hosts"`
	Timeline    []RawStep     `yaml:"timeline"`
	Expect      []RawExpect   `yaml:"expect"`
	Artifacts   *RawArtifacts `yaml:"artifacts"`
	// Runtime is how containers attach: bridge (default) or cni.
	Runtime String `yaml:"runtime"`
	Pos     Pos    `yaml:"-"`
}

// RawNetwork is the overlay network; it becomes flannel's network config.
type RawNetwork struct {
	Network   String      `yaml:"network"`
	SubnetLen Int         `yaml:"subnetLen"`
	MTU       Int         `yaml:"mtu"` // flannel's MTU: the overlay's, instead of one derived from the interface
	Backend   *RawBackend `yaml:"backend"`
	Pos       Pos         `yaml:"-"`
}

// RawTenant is one entry of networks: a named tenant network, with the
// fields of network.
type RawTenant struct {
	Name      String      `yaml:"name"`
	Network   String      `yaml:"network"`
	SubnetLen Int         `yaml:"subnetLen"`
	MTU       Int         `yaml:"mtu"`
	Backend   *RawBackend `yaml:"backend"`
	Pos       Pos         `yaml:"-"`
}

// network is the tenant's network fields.
func (t *RawTenant) network() *RawNetwork {
	return &RawNetwork{Network: t.Network, SubnetLen: t.SubnetLen, MTU: t.MTU, Backend: t.Backend, Pos: t.Pos}
}

// RawTenants is the list of tenant networks.
type RawTenants struct {
	List []RawTenant
	Pos  Pos
}

// IsSet reports whether networks was given.
func (t RawTenants) IsSet() bool { return t.Pos.IsValid() }

// RawBackend is written either as a bare type ("backend: udp", Short is
// true) or as a mapping {type, port, vni}.
type RawBackend struct {
	Type  String `yaml:"type"`
	Port  Int    `yaml:"port"`
	VNI   Int    `yaml:"vni"`
	Short bool   `yaml:"-"`
	Pos   Pos    `yaml:"-"`
}

// RawUnderlay is the lab's underlay bridge network.
type RawUnderlay struct {
	CIDR String `yaml:"cidr"`
	MTU  Int    `yaml:"mtu"`
	Pos  Pos    `yaml:"-"`
}

// RawEtcd chooses the embedded etcd or an external one.
type RawEtcd struct {
	Embedded  Bool       `yaml:"embedded"`
	Endpoints StringList `yaml:"endpoints"`
	Members   Int        `yaml:"members"`
	Pos       Pos        `yaml:"-"`
}

// RawHosts is written either as a mapping (count plus the settings every host
// shares) or as a sequence with one RawHost per host (Listed is true and List
// holds them; h1 is the first).
type RawHosts struct {
	Count      Int        `yaml:"count"`
	Containers Int        `yaml:"containers"`
	AgentArgs  StringList `yaml:"agentArgs"`
	Link       *RawLink   `yaml:"link"`
	// Agent is the agent binary every host runs (default overlaylab's own).
	Agent  String    `yaml:"agent"`
	List   []RawHost `yaml:"-"`
	Listed bool      `yaml:"-"`
	Pos    Pos       `yaml:"-"`
}

// RawHost is one entry of the sequence form of hosts.
type RawHost struct {
	Containers Int             `yaml:"containers"`
	AgentArgs  StringList      `yaml:"agentArgs"`
	Link       *RawLink        `yaml:"link"`
	Agent      *RawAgentBinary `yaml:"agent"`
	Pos        Pos             `yaml:"-"`
}

// RawAgentBinary is the agent one host runs: any binary that takes
// flanneld's flags, with args of its own.
type RawAgentBinary struct {
	Binary String     `yaml:"binary"`
	Args   StringList `yaml:"args"`
	Pos    Pos        `yaml:"-"`
}

// RawLink is an impairment of a host's underlay link, applied at start.
type RawLink struct {
	Rate String `yaml:"rate"`
	Loss String `yaml:"loss"`
	Pos  Pos    `yaml:"-"`
}

// RawStep is one timeline entry. It carries the parameters of every action;
// the resolver checks that exactly the ones the action takes are present.
type RawStep struct {
	Name   String `yaml:"name"`
	At     String `yaml:"at"`
	After  String `yaml:"after"`
	Delay  String `yaml:"delay"`
	Action String `yaml:"action"`

	Host       String     `yaml:"host"`
	Signal     String     `yaml:"signal"`
	Percent    String     `yaml:"percent"`
	Rate       String     `yaml:"rate"`
	Containers Int        `yaml:"containers"`
	AgentArgs  StringList `yaml:"agentArgs"`
	Config     String     `yaml:"config"`
	Member     String     `yaml:"member"`
	Wait       Bool       `yaml:"wait"`

	// impair (delay is the step timing key above; for impair it is the
	// link's delay)
	Jitter    String `yaml:"jitter"`
	Loss      String `yaml:"loss"`
	Reorder   String `yaml:"reorder"`
	Duplicate String `yaml:"duplicate"`
	Corrupt   String `yaml:"corrupt"`
	Direction String `yaml:"direction"`
	Match     String `yaml:"match"`
	Seed      Int    `yaml:"seed"`
	// link-mtu
	MTU Int `yaml:"mtu"`
	// etcd-wipe
	KeepConfig Bool `yaml:"keepConfig"`
	// offload
	Dev        String `yaml:"dev"`
	TxChecksum String `yaml:"tx-checksum"`
	TSO        String `yaml:"tso"`
	GRO        String `yaml:"gro"`
	// agent-upgrade
	Binary String `yaml:"binary"`
	// lease-delete, config-set: the tenant network (networks: only)
	Network String `yaml:"network"`

	Pos Pos `yaml:"-"`
}

// RawExpect is one expectation: a name, exactly one check and exactly one
// "when".
type RawExpect struct {
	Name String `yaml:"name"`

	Ping  *RawPing  `yaml:"ping"`
	Encap *RawEncap `yaml:"encap"`
	Lease *RawLease `yaml:"lease"`
	Route *RawRoute `yaml:"route"`
	Agent *RawAgent `yaml:"agent"`

	PMTU      *RawPMTU      `yaml:"pmtu"`
	Flow      *RawFlow      `yaml:"flow"`
	TCP       *RawTCP       `yaml:"tcp"`
	Log       *RawLog       `yaml:"log"`
	Resources *RawResources `yaml:"resources"`
	Metric    *RawMetric    `yaml:"metric"`
	Neigh     *RawNeigh     `yaml:"neigh"`
	FDB       *RawFDB       `yaml:"fdb"`

	At     String     `yaml:"at"`
	After  String     `yaml:"after"`
	Delay  String     `yaml:"delay"`
	During *RawWindow `yaml:"during"`
	Final  Bool       `yaml:"final"`
	Within String     `yaml:"within"`

	Pos Pos `yaml:"-"`
}

// RawWindow bounds a during check; each end is an offset from ready (2s) or
// a step name (the moment that step completes).
type RawWindow struct {
	From String `yaml:"from"`
	To   String `yaml:"to"`
	Pos  Pos    `yaml:"-"`
}

// RawPing is a connectivity check between container selectors.
type RawPing struct {
	From   String `yaml:"from"`
	To     String `yaml:"to"`
	Result String `yaml:"result"`
	Size   Int    `yaml:"size"` // the IP packet's size in bytes
	DF     Bool   `yaml:"df"`   // Don't Fragment
	Pos    Pos    `yaml:"-"`
}

// RawPMTU searches the largest DF packet that passes between two containers.
type RawPMTU struct {
	From String `yaml:"from"`
	To   String `yaml:"to"`
	MTU  Int    `yaml:"mtu"`
	Pos  Pos    `yaml:"-"`
}

// RawFlow is a long-lived flow held through a during window.
type RawFlow struct {
	From     String `yaml:"from"`
	To       String `yaml:"to"`
	Proto    String `yaml:"proto"`
	MaxStall String `yaml:"maxStall"`
	MinRate  String `yaml:"minRate"`
	Pos      Pos    `yaml:"-"`
}

// RawTCP is one TCP connection attempt.
type RawTCP struct {
	From   String `yaml:"from"`
	To     String `yaml:"to"`
	Port   Int    `yaml:"port"`
	Result String `yaml:"result"`
	// Within is the expectation's within, written inside tcp as the
	// issue's vocabulary spells it; one of the two places, not both.
	Within String `yaml:"within"`
	Pos    Pos    `yaml:"-"`
}

// RawLog counts the lines of a host's agent log that match a regexp.
type RawLog struct {
	Host  String `yaml:"host"`
	Match String `yaml:"match"`
	Count String `yaml:"count"`
	Pos   Pos    `yaml:"-"`
}

// RawResources bounds an agent's CPU and memory over a window.
type RawResources struct {
	Host String `yaml:"host"`
	CPU  String `yaml:"cpu"`
	RSS  String `yaml:"rss"`
	Pos  Pos    `yaml:"-"`
}

// RawMetric reads one sample of an agent's /metrics.
type RawMetric struct {
	Host   String    `yaml:"host"`
	Name   String    `yaml:"name"`
	Labels StringMap `yaml:"labels"`
	Value  String    `yaml:"value"`
	Pos    Pos       `yaml:"-"`
}

// RawNeigh checks a neighbour entry in a host.
type RawNeigh struct {
	Host    String `yaml:"host"`
	IP      String `yaml:"ip"`
	LLAddr  String `yaml:"lladdr"`
	Dev     String `yaml:"dev"`
	Present Bool   `yaml:"present"`
	Pos     Pos    `yaml:"-"`
}

// RawFDB checks a forwarding database entry in a host.
type RawFDB struct {
	Host    String `yaml:"host"`
	MAC     String `yaml:"mac"`
	Dst     String `yaml:"dst"`
	Dev     String `yaml:"dev"`
	Present Bool   `yaml:"present"`
	Pos     Pos    `yaml:"-"`
}

// RawEncap is a wire check on a host's underlay interface.
type RawEncap struct {
	Host String `yaml:"host"`
	Port Int    `yaml:"port"`
	VNI  Int    `yaml:"vni"`
	Pos  Pos    `yaml:"-"`
}

// RawLease compares a host's lease with the one it held at ready.
type RawLease struct {
	Host    String `yaml:"host"`
	State   String `yaml:"state"`
	Network String `yaml:"network"`
	Pos     Pos    `yaml:"-"`
}

// RawRoute checks a route in a host's routing table.
type RawRoute struct {
	Host    String `yaml:"host"`
	Dst     String `yaml:"dst"`
	Via     String `yaml:"via"`
	Present Bool   `yaml:"present"`
	Pos     Pos    `yaml:"-"`
}

// RawAgent checks an agent process: its exit code or its log.
type RawAgent struct {
	Host     String `yaml:"host"`
	ExitCode Int    `yaml:"exitCode"`
	Log      String `yaml:"log"`
	Alive    Bool   `yaml:"alive"`
	Ready    Bool   `yaml:"ready"`
	Restarts String `yaml:"restarts"`
	Pos      Pos    `yaml:"-"`
}

// RawArtifacts says what a run keeps.
type RawArtifacts struct {
	Pcap  String `yaml:"pcap"`
	Dumps Bool   `yaml:"dumps"`
	Pos   Pos    `yaml:"-"`
}
