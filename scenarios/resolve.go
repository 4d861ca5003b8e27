package scenarios

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// resolver turns a RawScenario into a Scenario, checking everything it can
// and reporting every problem it finds (not just the first).
type resolver struct {
	d   *decoder
	raw *RawScenario
	s   *Scenario

	labPos     Pos    // where the lab name came from
	labFrom    string // "lab" or "name"
	networkPos Pos    // network.network, or the closest thing written

	hosts       []*hostInfo // every host the scenario ever has; hosts[i] is h(i+1)
	initial     int         // how many exist at start
	hostsPos    Pos         // the hosts value (or the top level when absent)
	countPos    Pos         // where the initial host count was written
	hostsBroken bool        // hosts could not be read: do not blame host names
	addDefaults hostDefaults

	steps     []*stepInfo // file order
	stepNames map[string]*stepInfo
}

type hostInfo struct {
	index       int
	containers  int
	contPos     Pos       // where the container count was written
	contDefault bool      // no count was written: contPos is the hosts value
	addedBy     *stepInfo // nil for the hosts present at start
}

func (h *hostInfo) name() string { return "h" + strconv.Itoa(h.index) }

type hostDefaults struct {
	containers  int
	contPos     Pos
	contDefault bool
	agentArgs   []string
	agent       plan.Agent // the agent a host-add starts (zero: overlaylab's own)
}

// errorf reports a problem unless the value at p already failed to decode.
func (r *resolver) errorf(p Pos, format string, args ...any) {
	if r.d.bad[p] {
		return
	}
	r.d.errorf(p, format, args...)
}

// planError is a refusal of lab/plan's checks as a FieldError, whose Rule
// the scenario reports without the CLI flag that Error names (a scenario
// has YAML keys instead).
func planError(err error) *plan.FieldError {
	var fe *plan.FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return &plan.FieldError{Rule: err.Error()}
}

// firstPos returns the first valid position: the most precise one written.
func firstPos(ps ...Pos) Pos {
	for _, p := range ps {
		if p.IsValid() {
			return p
		}
	}
	return Pos{}
}

func (r *resolver) resolve() {
	if r.d.fatal {
		return // nothing was read: every other error would be noise
	}
	r.header()
	r.runtime()
	r.network()
	r.underlay()
	r.etcd()
	r.initialHosts()
	r.timeline()
	r.capacity()
	r.expectations()
	r.artifacts()
}

func (r *resolver) header() {
	raw, s := r.raw, r.s
	switch {
	case !raw.APIVersion.IsSet():
		r.errorf(raw.Pos, "apiVersion is required (apiVersion: %s)", APIVersion)
	case raw.APIVersion.Value != APIVersion:
		r.errorf(raw.APIVersion.Pos, "apiVersion %q is not supported (want %s)", raw.APIVersion.Value, APIVersion)
	}
	nameOK := false
	switch {
	case !raw.Name.IsSet():
		r.errorf(raw.Pos, "name is required")
	case !scenarioNameRE.MatchString(raw.Name.Value):
		r.errorf(raw.Name.Pos, "name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 63)", raw.Name.Value)
	default:
		nameOK = true
	}
	s.Name = raw.Name.Value
	switch {
	case raw.Lab.IsSet():
		s.Lab, r.labPos, r.labFrom = raw.Lab.Value, raw.Lab.Pos, "lab"
	case nameOK:
		s.Lab, r.labPos, r.labFrom = raw.Name.Value, raw.Name.Pos, "name"
	}
	s.Seed = raw.Seed.Value
	s.Description = raw.Description.Value
}

// network resolves the overlay network: one (network:), or several named
// tenants on the same hosts (networks:).
func (r *resolver) network() {
	if r.raw.Networks.IsSet() {
		if r.raw.Network != nil {
			r.errorf(r.raw.Network.Pos, "network and networks exclude each other: networks lists named tenant networks")
		}
		r.tenants()
		return
	}
	rn := r.raw.Network
	if rn == nil {
		rn = &RawNetwork{}
	}
	netPos := firstPos(rn.Pos, r.raw.Pos)
	r.networkPos = firstPos(rn.Network.Pos, netPos)
	if cfg := r.networkConfig(rn, "", 0); cfg != nil {
		r.s.Network, r.s.Backend = cfg, cfg.Backend.Type
	}
}

// networkConfig builds flannel's JSON from the fields and runs it through
// config.Parse, so the scenario obeys exactly the rules the agents will. A
// tenant (label set) gets the k-th VNI or port after flannel's default
// unless it gives its own.
func (r *resolver) networkConfig(rn *RawNetwork, label string, k int) *config.Config {
	rb := rn.Backend
	if rb == nil {
		rb = &RawBackend{}
	}
	netPos := firstPos(rn.Pos, r.raw.Pos)
	networkPos := firstPos(rn.Network.Pos, netPos)
	backendPos := firstPos(rb.Pos, netPos)
	prefix := ""
	if label != "" {
		prefix = label + ": "
	}

	network := plan.DefaultNetwork
	if rn.Network.IsSet() {
		network = rn.Network.Value
	}
	doc := map[string]any{"Network": network}
	if rn.SubnetLen.IsSet() {
		doc["SubnetLen"] = rn.SubnetLen.Value
	}
	if rn.MTU.IsSet() {
		doc["MTU"] = rn.MTU.Value
	}
	backend := map[string]any{}
	if rb.Type.IsSet() {
		backend["Type"] = rb.Type.Value
	}
	if rb.Port.IsSet() {
		backend["Port"] = rb.Port.Value
	}
	if rb.VNI.IsSet() {
		backend["VNI"] = rb.VNI.Value
	}
	if len(backend) > 0 {
		doc["Backend"] = backend
	}
	js, err := json.Marshal(doc)
	if err != nil { // strings and integers always marshal
		r.errorf(netPos, "%snetwork: %v", prefix, err)
		return nil
	}
	cfg, err := config.Parse(js)
	if err != nil {
		var fe *config.FieldError
		if !errors.As(err, &fe) {
			r.errorf(netPos, "%snetwork: %v", prefix, err)
			return nil
		}
		name, pos := fe.Field, netPos
		switch fe.Field {
		case "Network":
			name, pos = "network", networkPos
		case "SubnetLen":
			name, pos = "subnetLen", firstPos(rn.SubnetLen.Pos, networkPos)
		case "MTU":
			name, pos = "mtu", firstPos(rn.MTU.Pos, networkPos)
		case "Backend.Type":
			name, pos = "backend", firstPos(rb.Type.Pos, backendPos)
		case "Backend.Port":
			name, pos = "backend port", firstPos(rb.Port.Pos, backendPos)
		case "Backend.VNI":
			name, pos = "backend vni", firstPos(rb.VNI.Pos, backendPos)
		}
		if fe.Value != "" {
			name += " " + fe.Value
		}
		r.errorf(pos, "%s%s: %s", prefix, name, fe.Rule)
		return nil
	}
	// config.Parse quietly drops what a backend does not use; a scenario
	// that sets it is mistaken about what it tests.
	bad := false
	if rb.VNI.IsSet() && cfg.Backend.Type != config.BackendVXLAN {
		r.errorf(rb.VNI.Pos, "%sbackend vni: only the vxlan backend has a VNI (this one is %s)", prefix, cfg.Backend.Type)
		bad = true
	}
	if rb.Port.IsSet() && cfg.Backend.Type == config.BackendHostGW {
		r.errorf(rb.Port.Pos, "%sbackend port: the host-gw backend has no port", prefix)
		bad = true
	}
	if bad {
		return nil
	}
	if label != "" {
		plan.NumberTenant(cfg, k, rb.VNI.IsSet(), rb.Port.IsSet())
	}
	return cfg
}

// tenants resolves networks: named tenant networks on the same hosts, which
// may share a CIDR; the lab's rules on what they may share are asked of the
// lab (plan.CheckTenants).
func (r *resolver) tenants() {
	list := r.raw.Networks
	if len(list.List) == 0 {
		r.errorf(list.Pos, "networks: an empty list (omit it for the single network)")
		return
	}
	var nets []plan.Network
	names := map[string]bool{}
	for k := range list.List {
		t := &list.List[k]
		label := "networks " + strconv.Itoa(k+1)
		if !t.Name.IsSet() {
			r.errorf(t.Pos, "%s: name is required (1 to %d of a-z and 0-9, starting with a letter)", label, plan.MaxNetworkNameLen)
			continue
		}
		if err := plan.CheckNetworkName(t.Name.Value); err != nil {
			r.errorf(t.Name.Pos, "%s: name %q: %s", label, t.Name.Value, planError(err).Rule)
			continue
		}
		if names[t.Name.Value] {
			r.errorf(t.Name.Pos, "%s: network %q named twice", label, t.Name.Value)
			continue
		}
		names[t.Name.Value] = true
		if k == 0 {
			r.networkPos = firstPos(t.Network.Pos, t.Pos)
		}
		cfg := r.networkConfig(t.network(), "network "+t.Name.Value, k)
		if cfg == nil {
			continue
		}
		nets = append(nets, plan.Network{Name: t.Name.Value, Config: cfg})
		r.s.Tenants = append(r.s.Tenants, Tenant{Name: t.Name.Value, Config: cfg})
	}
	if len(nets) != len(list.List) {
		return
	}
	if err := plan.CheckTenants(nets); err != nil {
		fe := planError(err)
		r.errorf(list.Pos, "networks: network %s %s", fe.Value, fe.Rule)
		return
	}
	r.s.Network, r.s.Backend = nets[0].Config, nets[0].Config.Backend.Type
}

func (r *resolver) underlay() {
	s, ru := r.s, r.raw.Underlay
	if ru == nil {
		ru = &RawUnderlay{}
	}
	cidr, pos := plan.DefaultUnderlay, firstPos(ru.Pos, r.raw.Pos)
	if ru.CIDR.IsSet() {
		cidr, pos = ru.CIDR.Value, ru.CIDR.Pos
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	switch {
	case err != nil || !p.Addr().Is4():
		r.errorf(pos, "underlay cidr %q: not an IPv4 CIDR prefix (want e.g. %s)", cidr, plan.DefaultUnderlay)
	case p.Masked() != p:
		r.errorf(pos, "underlay cidr %q: host bits must be zero (did you mean %q?)", cidr, p.Masked().String())
	case (plan.Addressing{Underlay: p}).HostCapacity() < 1:
		r.errorf(pos, "underlay cidr %s: too small for a host and etcd (use a /28 or larger; host i is its i-th address, etcd the top %d)", p, plan.EtcdSlots+1)
	default:
		s.Underlay = p
	}
	if ru.MTU.IsSet() {
		if v := ru.MTU.Value; v < plan.MinUnderlayMTU || v > plan.MaxUnderlayMTU {
			r.errorf(ru.MTU.Pos, "underlay mtu %d: must be %d..%d", v, plan.MinUnderlayMTU, plan.MaxUnderlayMTU)
		} else {
			s.UnderlayMTU = int(v)
		}
	}
	if s.Network != nil && s.Underlay.IsValid() && s.Network.Network.Overlaps(s.Underlay) {
		if r.raw.Network != nil && r.raw.Network.Network.IsSet() {
			r.errorf(r.networkPos, "network %s overlaps underlay %s: pick disjoint ranges", s.Network.Network, s.Underlay)
		} else {
			r.errorf(pos, "underlay %s overlaps the default network %s: pick disjoint ranges", s.Underlay, s.Network.Network)
		}
	}
}

func (r *resolver) etcd() {
	r.s.EtcdMembers = 1
	re := r.raw.Etcd
	if re == nil {
		return
	}
	if re.Members.IsSet() {
		switch {
		case re.Members.Value != 1 && re.Members.Value != 3 && re.Members.Value != 5:
			r.errorf(re.Members.Pos, "etcd members %d: want 1, 3 or 5", re.Members.Value)
		case re.Endpoints.IsSet():
			r.errorf(re.Members.Pos, "etcd members: applies to the embedded etcd, not to endpoints")
		default:
			r.s.EtcdMembers = int(re.Members.Value)
		}
	}
	eps := re.Endpoints
	switch {
	case re.Embedded.IsSet() && re.Embedded.Value && eps.IsSet():
		r.errorf(re.Embedded.Pos, "etcd: embedded: true and endpoints exclude each other (endpoints means an external etcd)")
		return
	case re.Embedded.IsSet() && !re.Embedded.Value && !eps.IsSet():
		r.errorf(re.Embedded.Pos, "etcd: embedded: false needs endpoints (the external etcd to use)")
		return
	case eps.IsSet() && len(eps.Values) == 0:
		r.errorf(eps.Pos, "etcd endpoints: empty list (omit it to use the embedded etcd)")
		return
	}
	if len(eps.Values) > 1 {
		r.errorf(eps.Values[1].Pos, "etcd endpoints: give one (the lab proxies it into the lab at the etcd address)")
	}
	for _, ep := range eps.Values {
		// The lab's own rule (what it can proxy), asked of the lab.
		if _, err := plan.EndpointHostPort(ep.Value); err != nil {
			r.errorf(ep.Pos, "etcd endpoint %q: %s", ep.Value, planError(err).Rule)
			continue
		}
		r.s.EtcdEndpoints = append(r.s.EtcdEndpoints, ep.Value)
	}
}

// initialHosts reads both shapes of hosts into h1..hN.
func (r *resolver) initialHosts() {
	rh := r.raw.Hosts
	if rh == nil {
		rh = &RawHosts{}
	}
	r.hostsPos = firstPos(rh.Pos, r.raw.Pos)
	r.countPos = firstPos(rh.Count.Pos, r.hostsPos)
	if r.d.bad[rh.Pos] {
		r.hostsBroken = true
	}
	if rh.Listed {
		if len(rh.List) == 0 {
			r.errorf(rh.Pos, "hosts: empty list: a lab needs at least one host")
			r.hostsBroken = true
		}
		if len(rh.List) > plan.MaxHosts {
			r.errorf(rh.Pos, "hosts: %d hosts: at most %d", len(rh.List), plan.MaxHosts)
			r.hostsBroken = true
			return
		}
		for i := range rh.List {
			e := &rh.List[i]
			spec := r.hostSpec(e.Containers, e.AgentArgs, e.Link, firstPos(e.Pos, rh.Pos))
			spec.Agent = r.agentBinary(e.Agent, spec.Name)
			last := r.hosts[len(r.hosts)-1]
			r.addDefaults = hostDefaults{containers: spec.Containers, contPos: last.contPos, contDefault: last.contDefault, agentArgs: spec.AgentArgs, agent: spec.Agent}
			r.s.Hosts = append(r.s.Hosts, spec)
		}
		r.initial = len(r.hosts)
		return
	}
	count := int64(plan.DefaultHosts)
	if rh.Count.IsSet() {
		count = rh.Count.Value
		switch {
		case count < 1:
			r.errorf(rh.Count.Pos, "hosts count %d: a lab needs at least one host", count)
			r.hostsBroken = true
			return
		case count > plan.MaxHosts:
			r.errorf(rh.Count.Pos, "hosts count %d: at most %d", count, plan.MaxHosts)
			r.hostsBroken = true
			return
		}
	}
	var agent plan.Agent
	if rh.Agent.IsSet() {
		if strings.TrimSpace(rh.Agent.Value) == "" {
			r.errorf(rh.Agent.Pos, "hosts agent: an empty path (omit it for overlaylab's own agent)")
		}
		agent = plan.Agent{Path: r.binaryPath(rh.Agent.Value)}
	}
	for range count {
		spec := r.hostSpec(rh.Containers, rh.AgentArgs, rh.Link, r.hostsPos)
		spec.Agent = agent
		r.s.Hosts = append(r.s.Hosts, spec)
	}
	r.initial = len(r.hosts)
	cont := plan.DefaultContainers
	if rh.Containers.IsSet() && rh.Containers.Value >= 0 && rh.Containers.Value <= plan.MaxContainers {
		cont = int(rh.Containers.Value)
	}
	r.addDefaults = hostDefaults{containers: cont, contPos: firstPos(rh.Containers.Pos, r.hostsPos), contDefault: !rh.Containers.IsSet(), agentArgs: rh.AgentArgs.Strings(), agent: agent}
}

// agentBinary resolves a host's agent: {binary: PATH, args: [...]}.
func (r *resolver) agentBinary(a *RawAgentBinary, host string) plan.Agent {
	if a == nil {
		return plan.Agent{}
	}
	if !a.Binary.IsSet() || strings.TrimSpace(a.Binary.Value) == "" {
		r.errorf(a.Pos, "%s agent: binary is required (a path to a flanneld-compatible agent)", host)
		return plan.Agent{}
	}
	return plan.Agent{Path: r.binaryPath(a.Binary.Value), Args: a.Args.Strings()}
}

// binaryPath resolves an agent binary named in the file: a relative path
// is relative to the scenario file's directory, so a library scenario finds
// ../../bin/flanneld wherever it is run from.
func (r *resolver) binaryPath(p string) string {
	p = strings.TrimSpace(p)
	if p == "" || filepath.IsAbs(p) || r.s.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(r.s.File), p)
}

// hostSpec resolves one host present at start and records it.
func (r *resolver) hostSpec(containers Int, agentArgs StringList, link *RawLink, pos Pos) HostSpec {
	h := &hostInfo{index: len(r.hosts) + 1, containers: plan.DefaultContainers, contPos: pos, contDefault: true}
	if containers.IsSet() {
		h.contPos, h.contDefault = containers.Pos, false
		h.containers = r.containerCount(containers, "containers")
	}
	r.hosts = append(r.hosts, h)
	spec := HostSpec{Name: h.name(), Containers: h.containers, AgentArgs: agentArgs.Strings()}
	if link != nil {
		if link.Rate.IsSet() {
			if v, msg := parseRate(link.Rate.Value); msg != "" {
				r.errorf(link.Rate.Pos, "link rate %s", msg)
			} else {
				spec.Link.RateBps = v
			}
		}
		if link.Loss.IsSet() {
			if v, msg := parsePercent(link.Loss.Value); msg != "" {
				r.errorf(link.Loss.Pos, "link loss %s", msg)
			} else {
				spec.Link.LossPercent = v
			}
		}
	}
	return spec
}

func (r *resolver) containerCount(v Int, what string) int {
	if v.Value < 0 || v.Value > plan.MaxContainers {
		r.errorf(v.Pos, "%s %d: must be 0..%d", what, v.Value, plan.MaxContainers)
		return 0
	}
	return int(v.Value)
}

// capacity checks what depends on the largest the lab gets: the underlay,
// the leasable subnets, the container count per subnet and interface names.
func (r *resolver) capacity() {
	s := r.s
	s.MaxHosts = len(r.hosts)
	// tooMany reports that host i (1-based) does not fit, blaming the host
	// count or the host-add step that makes it.
	tooMany := func(i int, why string) {
		if h := r.hosts[i-1]; h.addedBy != nil {
			r.errorf(firstPos(h.addedBy.raw.Action.Pos, h.addedBy.raw.Pos), "%s: host-add makes h%d, but %s", h.addedBy.label, i, why)
			return
		}
		r.errorf(r.countPos, "hosts: %d hosts, but %s", r.initial, why)
	}
	if s.Underlay.IsValid() {
		a := plan.Addressing{Underlay: s.Underlay}
		if n := a.HostCapacity(); len(r.hosts) > n && n >= 0 {
			tooMany(n+1, fmt.Sprintf("underlay %s holds %s (host i is its i-th address, etcd the top %d): use a larger underlay",
				s.Underlay, plural(n, "host"), plan.EtcdSlots+1))
		}
	}
	if cfg := s.Network; cfg != nil {
		if n := cfg.SubnetCount(); len(r.hosts) > n {
			tooMany(n+1, fmt.Sprintf("network %s with /%d subnets holds only %s: use a larger network or a longer subnetLen",
				cfg.Network, cfg.SubnetLen, plural(n, "leasable subnet")))
		}
		perHost := plan.ContainersPerSubnet(cfg.SubnetLen)
		for _, h := range r.hosts {
			if h.containers > perHost {
				if h.contDefault {
					r.errorf(h.contPos, "hosts: the default of %d containers does not fit: a /%d subnet holds only %s besides the bridge (set containers)",
						h.containers, cfg.SubnetLen, plural(perHost, "container"))
				} else {
					r.errorf(h.contPos, "containers %d: a /%d subnet holds only %s besides the bridge", h.containers, cfg.SubnetLen, plural(perHost, "container"))
				}
			}
		}
	}
	if s.Lab == "" {
		return
	}
	if err := plan.CheckName(s.Lab); err != nil {
		msg := planError(err).Rule
		if r.labFrom == "lab" {
			r.errorf(r.labPos, "lab %q: %s", s.Lab, msg)
		} else {
			r.errorf(r.labPos, "name %q is the lab name unless lab: is given: %s", s.Lab, msg)
		}
	}
}

func (r *resolver) runtime() {
	rt, err := plan.ParseRuntime(r.raw.Runtime.Value)
	if err != nil {
		r.errorf(r.raw.Runtime.Pos, "runtime %q: use bridge (the lab's own, default) or cni (the CNI flannel plugin)", r.raw.Runtime.Value)
	}
	r.s.Runtime = rt
}

func (r *resolver) artifacts() {
	a := Artifacts{Pcap: PcapFailing, Dumps: true}
	if ra := r.raw.Artifacts; ra != nil {
		if ra.Pcap.IsSet() {
			switch p := PcapPolicy(ra.Pcap.Value); p {
			case PcapFailing, PcapAlways, PcapNever:
				a.Pcap = p
			default:
				r.errorf(ra.Pcap.Pos, "artifacts pcap %q: want failing, always or never", ra.Pcap.Value)
			}
		}
		if ra.Dumps.IsSet() {
			a.Dumps = ra.Dumps.Value
		}
	}
	r.s.Artifacts = a
}
