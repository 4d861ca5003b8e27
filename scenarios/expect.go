package scenarios

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/overlaylab/overlaylab/overlay/config"
)

func (r *resolver) expectations() {
	names := map[string]*RawExpect{}
	for i := range r.raw.Expect {
		re := &r.raw.Expect[i]
		label := "expect " + strconv.Itoa(i+1)
		e := Expectation{Pos: re.Pos}
		switch {
		case !re.Name.IsSet():
			r.errorf(re.Pos, "%s: name is required", label)
		case !nameRE.MatchString(re.Name.Value):
			r.errorf(re.Name.Pos, "%s: name %q: use letters, digits, '.', '_' and '-', starting with a letter (at most 63)", label, re.Name.Value)
		default:
			e.Name = re.Name.Value
			label = fmt.Sprintf("expect %q", e.Name)
			if first, dup := names[e.Name]; dup {
				r.errorf(re.Name.Pos, "duplicate expectation name %q (first at line %d)", e.Name, first.Name.Pos.Line)
			} else {
				names[e.Name] = re
			}
		}
		r.expectWhen(re, &e, label)
		r.expectCheck(re, &e, label)
		r.s.Expects = append(r.s.Expects, e)
	}
}

type present struct {
	name string
	pos  Pos
}

// given lists the entries whose position is valid, in order.
func given(ps ...present) []present {
	var out []present
	for _, p := range ps {
		if p.pos.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

func posOf[T any](p *T, pos func(*T) Pos) Pos {
	if p == nil {
		return Pos{}
	}
	return pos(p)
}

func (r *resolver) expectWhen(re *RawExpect, e *Expectation, label string) {
	finalPos := Pos{}
	if re.Final.IsSet() && re.Final.Value {
		finalPos = re.Final.Pos
	}
	whens := given(
		present{"at", re.At.Pos},
		present{"after", re.After.Pos},
		present{"during", posOf(re.During, func(w *RawWindow) Pos { return w.Pos })},
		present{"final", finalPos},
	)
	switch {
	case len(whens) == 0:
		r.errorf(re.Pos, "%s: needs one of at (an offset from ready), after (a step), during (a window) or final: true", label)
	case len(whens) > 1:
		for _, w := range whens[1:] {
			r.errorf(w.pos, "%s: %s and %s exclude each other: use one", label, whens[0].name, w.name)
		}
	}
	if re.Delay.IsSet() && !re.After.IsSet() {
		r.errorf(re.Delay.Pos, "%s: delay goes with after (with at, add it to the offset)", label)
	}
	if len(whens) > 0 {
		switch whens[0].name {
		case "at":
			e.When.Kind = WhenAt
			e.When.At, _ = r.duration(re.At, label+": at")
		case "after":
			e.When.Kind = WhenAfter
			e.When.Step = re.After.Value
			r.stepRef(re.After, label+": after")
			if re.Delay.IsSet() {
				e.When.Delay, _ = r.duration(re.Delay, label+": delay")
			}
		case "during":
			e.When.Kind = WhenDuring
			r.window(re.During, &e.When, label)
		case "final":
			e.When.Kind = WhenFinal
		}
	}
	within := re.Within
	if re.TCP != nil && re.TCP.Within.IsSet() {
		if within.IsSet() {
			r.errorf(re.TCP.Within.Pos, "%s: within is given twice (in tcp and in the expectation): give one", label)
		}
		within = re.TCP.Within
	}
	switch {
	case e.When.Kind == WhenDuring:
		if within.IsSet() {
			r.errorf(within.Pos, "%s: within applies to point checks, not to a during window", label)
		}
	case within.IsSet():
		e.Within, _ = r.duration(within, label+": within")
	default:
		e.Within = DefaultWithin
	}
}

// stepRef checks that v names a step.
func (r *resolver) stepRef(v String, what string) bool {
	if _, ok := r.stepNames[v.Value]; ok {
		return true
	}
	r.errorf(v.Pos, "%s %q: no such step (%s)", what, v.Value, r.stepNameList())
	return false
}

func (r *resolver) window(w *RawWindow, when *When, label string) {
	var okFrom, okTo bool
	if !w.From.IsSet() {
		r.errorf(w.Pos, "%s: during needs from (an offset or a step)", label)
	} else {
		when.From, okFrom = r.mark(w.From, label+": during from")
	}
	if !w.To.IsSet() {
		r.errorf(w.Pos, "%s: during needs to (an offset or a step)", label)
	} else {
		when.To, okTo = r.mark(w.To, label+": during to")
	}
	if okFrom && okTo && when.From.Step == when.To.Step && when.To.Offset <= when.From.Offset {
		r.errorf(w.To.Pos, "%s: during to %s is not after from %s", label, when.To, when.From)
	}
}

// mark reads an offset (it starts with a digit) or a step name (a letter).
func (r *resolver) mark(v String, what string) (Mark, bool) {
	s := strings.TrimSpace(v.Value)
	if s != "" && (s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return Mark{Step: s}, r.stepRef(v, what)
	}
	d, ok := r.duration(v, what)
	return Mark{Offset: d}, ok
}

func (r *resolver) expectCheck(re *RawExpect, e *Expectation, label string) {
	kinds := given(
		present{"ping", posOf(re.Ping, func(p *RawPing) Pos { return p.Pos })},
		present{"encap", posOf(re.Encap, func(p *RawEncap) Pos { return p.Pos })},
		present{"lease", posOf(re.Lease, func(p *RawLease) Pos { return p.Pos })},
		present{"route", posOf(re.Route, func(p *RawRoute) Pos { return p.Pos })},
		present{"agent", posOf(re.Agent, func(p *RawAgent) Pos { return p.Pos })},
		present{"pmtu", posOf(re.PMTU, func(p *RawPMTU) Pos { return p.Pos })},
		present{"flow", posOf(re.Flow, func(p *RawFlow) Pos { return p.Pos })},
		present{"tcp", posOf(re.TCP, func(p *RawTCP) Pos { return p.Pos })},
		present{"log", posOf(re.Log, func(p *RawLog) Pos { return p.Pos })},
		present{"resources", posOf(re.Resources, func(p *RawResources) Pos { return p.Pos })},
		present{"metric", posOf(re.Metric, func(p *RawMetric) Pos { return p.Pos })},
		present{"neigh", posOf(re.Neigh, func(p *RawNeigh) Pos { return p.Pos })},
		present{"fdb", posOf(re.FDB, func(p *RawFDB) Pos { return p.Pos })},
	)
	if len(kinds) == 0 {
		r.errorf(re.Pos, "%s: needs a check: one of %s", label, checkList)
		return
	}
	for _, k := range kinds[1:] {
		r.errorf(k.pos, "%s: has both %s and %s: one check per expectation", label, kinds[0].name, k.name)
	}
	e.Kind = ExpectKind(kinds[0].name)
	switch e.Kind {
	case KindPing:
		e.Ping = r.ping(re.Ping, label)
	case KindEncap:
		e.Encap = r.encap(re.Encap, label)
	case KindLease:
		e.Lease = r.lease(re.Lease, label)
	case KindRoute:
		e.Route = r.route(re.Route, label)
	case KindAgent:
		e.Agent = r.agent(re.Agent, label)
	case KindPMTU:
		e.PMTU = r.pmtu(re.PMTU, label)
	case KindFlow:
		e.Flow = r.flow(re.Flow, label)
	case KindTCP:
		e.TCP = r.tcp(re.TCP, label)
	case KindLog:
		e.Log = r.logCheck(re.Log, label)
	case KindResources:
		e.Resources = r.resources(re.Resources, label)
	case KindMetric:
		e.Metric = r.metric(re.Metric, label)
	case KindNeigh:
		e.Neigh = r.neigh(re.Neigh, label)
	case KindFDB:
		e.FDB = r.fdb(re.FDB, label)
	}
	windowed := e.Kind == KindFlow || e.Kind == KindResources
	if windowed && e.When.Kind != WhenDuring && (re.At.IsSet() || re.After.IsSet() || re.Final.IsSet()) {
		r.errorf(kinds[0].pos, "%s: %s is measured over a window: use during: {from, to}", label, e.Kind)
	}
}

// host checks that v names a host the scenario has at some point. Whether
// it exists at the moment of the check is for the runner to find out.
func (r *resolver) host(v String, at Pos, what string) string {
	if !v.IsSet() {
		r.errorf(at, "%s needs host", what)
		return ""
	}
	if !r.knownHost(v.Value) {
		r.errorf(v.Pos, "%s: unknown host %q (hosts: %s)", what, v.Value, r.allHosts())
	}
	return v.Value
}

func (r *resolver) ping(p *RawPing, label string) *PingCheck {
	c := &PingCheck{Result: ResultAll, DF: p.DF.Value}
	if p.Size.IsSet() {
		if v := p.Size.Value; v < 36 || v > 65535 {
			r.errorf(p.Size.Pos, "%s: ping size %d: an IP packet of 36..65535 bytes (ICMP needs 28 of them)", label, v)
		} else {
			c.Size = int(v)
		}
	}
	c.From = r.selector(p.From, p.Pos, label+": ping from")
	c.To = r.selector(p.To, p.Pos, label+": ping to")
	if p.Result.IsSet() {
		res, loss, ok := parsePingResult(p.Result.Value)
		if !ok {
			r.errorf(p.Result.Pos, "%s: ping result %q: want all, none or loss<=N%% (N in 0..100)", label, p.Result.Value)
		}
		c.Result, c.MaxLoss = res, loss
	}
	return c
}

// selector parses a container selector and checks that it selects at least
// one container of the hosts the scenario ever has.
func (r *resolver) selector(v String, at Pos, what string) Selector {
	if !v.IsSet() {
		r.errorf(at, "%s is required (e.g. */*, h1/*, h2/c1)", what)
		return Selector{}
	}
	sel, ok := parseSelector(v.Value)
	if !ok {
		r.errorf(v.Pos, "%s %q: want HOST/CONTAINER such as h1/c2, h1/*, */* or h1", what, v.Value)
		return Selector{}
	}
	if net := containerNetwork(sel.Container); net != "" || len(r.s.Tenants) > 0 {
		if msg := r.tenantOf(sel.Container); msg != "" {
			r.errorf(v.Pos, "%s %q: %s", what, v.Value, msg)
			return sel
		}
	}
	if r.hostsBroken {
		return sel
	}
	if sel.Host != "*" {
		i := hostIndex(sel.Host)
		if i < 1 || i > len(r.hosts) {
			r.errorf(v.Pos, "%s %q: unknown host %s (hosts: %s)", what, v.Value, sel.Host, r.allHosts())
			return sel
		}
		if n := r.hosts[i-1].containers; sel.Container != "*" && containerIndex(sel.Container) > n || n == 0 {
			r.errorf(v.Pos, "%s %q: %s has %s", what, v.Value, sel.Host, plural(n, "container"))
		}
		return sel
	}
	maxC := 0
	for _, h := range r.hosts {
		maxC = max(maxC, h.containers)
	}
	if sel.Container != "*" && containerIndex(sel.Container) > maxC || maxC == 0 {
		r.errorf(v.Pos, "%s %q: no host has a container %s (the most is %d)", what, v.Value, sel.Container, maxC)
	}
	return sel
}

func plural(n int, what string) string {
	switch n {
	case 0:
		return "no " + what + "s"
	case 1:
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (r *resolver) encap(p *RawEncap, label string) *EncapCheck {
	c := &EncapCheck{Host: r.host(p.Host, p.Pos, label+": encap")}
	cfg := r.s.Network
	if cfg == nil {
		return c
	}
	c.Backend, c.Port, c.VNI = cfg.Backend.Type, cfg.Backend.Port, cfg.Backend.VNI
	if c.Backend == config.BackendHostGW {
		r.errorf(p.Pos, "%s: encap checks need an encapsulating backend (udp or vxlan); this network uses host-gw", label)
		return c
	}
	if p.Port.IsSet() {
		if v := p.Port.Value; v < 1 || v > 65535 {
			r.errorf(p.Port.Pos, "%s: encap port %d: must be 1..65535", label, v)
		} else {
			c.Port = int(v)
		}
	}
	if p.VNI.IsSet() {
		switch v := p.VNI.Value; {
		case c.Backend != config.BackendVXLAN:
			r.errorf(p.VNI.Pos, "%s: encap vni: only the vxlan backend has a VNI (this one is %s)", label, c.Backend)
		case v < 1 || v > config.MaxVNI:
			r.errorf(p.VNI.Pos, "%s: encap vni %d: must be 1..%d", label, v, config.MaxVNI)
		default:
			c.VNI = int(v)
		}
	}
	return c
}

func (r *resolver) lease(p *RawLease, label string) *LeaseCheck {
	c := &LeaseCheck{Host: r.host(p.Host, p.Pos, label+": lease")}
	if p.Network.IsSet() {
		c.Network = r.tenantName(p.Network, label+": lease")
	}
	switch st := LeaseState(p.State.Value); {
	case !p.State.IsSet():
		r.errorf(p.Pos, "%s: lease needs state (unchanged or changed)", label)
	case st == LeaseUnchanged || st == LeaseChanged:
		c.State = st
	default:
		r.errorf(p.State.Pos, "%s: lease state %q: want unchanged or changed", label, p.State.Value)
	}
	return c
}

func (r *resolver) route(p *RawRoute, label string) *RouteCheck {
	c := &RouteCheck{Host: r.host(p.Host, p.Pos, label+": route"), Present: true}
	if p.Present.IsSet() {
		c.Present = p.Present.Value
	}
	if !p.Dst.IsSet() {
		r.errorf(p.Pos, "%s: route needs dst (a CIDR, or peer:HOST for that host's subnet)", label)
		return c
	}
	dst := strings.TrimSpace(p.Dst.Value)
	if peer, ok := strings.CutPrefix(dst, "peer:"); ok {
		r.routeVia(p, c, label)
		c.Peer = peer
		switch {
		case !r.knownHost(peer):
			r.errorf(p.Dst.Pos, "%s: route dst %q: unknown host %q (hosts: %s)", label, p.Dst.Value, peer, r.allHosts())
		case r.hostsBroken:
		case peer == c.Host:
			r.errorf(p.Dst.Pos, "%s: route dst %q: a host's own subnet is on its bridge, not routed to a peer", label, p.Dst.Value)
		}
		return c
	}
	r.routeVia(p, c, label)
	pfx, err := netip.ParsePrefix(dst)
	switch {
	case err != nil || !pfx.Addr().Is4():
		r.errorf(p.Dst.Pos, "%s: route dst %q: want an IPv4 CIDR (e.g. 10.10.3.0/24) or peer:HOST", label, p.Dst.Value)
	case pfx.Masked() != pfx:
		r.errorf(p.Dst.Pos, "%s: route dst %q: host bits must be zero (did you mean %q?)", label, p.Dst.Value, pfx.Masked().String())
	default:
		c.Dst = pfx
	}
	return c
}

func (r *resolver) agent(p *RawAgent, label string) *AgentCheck {
	c := &AgentCheck{Host: r.host(p.Host, p.Pos, label+": agent")}
	state := given(present{"alive", p.Alive.Pos}, present{"ready", p.Ready.Pos}, present{"restarts", p.Restarts.Pos})
	kinds := given(present{"exitCode", p.ExitCode.Pos}, present{"log", p.Log.Pos})
	if len(state) > 0 {
		kinds = append(kinds, state[0])
	}
	switch {
	case len(kinds) > 1:
		r.errorf(kinds[1].pos, "%s: agent %s and %s exclude each other (exitCode; log; or any of alive, ready, restarts)", label, kinds[0].name, kinds[1].name)
	case len(kinds) == 0:
		r.errorf(p.Pos, "%s: agent needs exitCode, log, alive, ready or restarts", label)
	case len(state) > 0:
		if p.Alive.IsSet() {
			v := p.Alive.Value
			c.Alive = &v
		}
		if p.Ready.IsSet() {
			v := p.Ready.Value
			c.Ready = &v
		}
		if p.Restarts.IsSet() {
			if v, msg := parseCompare(p.Restarts.Value, nil); msg != "" {
				r.errorf(p.Restarts.Pos, "%s: agent restarts %s", label, msg)
			} else {
				c.Restarts = &v
			}
		}
	case p.ExitCode.IsSet():
		if v := p.ExitCode.Value; v < 0 || v > 255 {
			r.errorf(p.ExitCode.Pos, "%s: agent exitCode %d: must be 0..255 (128+N for death by signal N)", label, v)
		} else {
			code := int(v)
			c.ExitCode = &code
		}
	default:
		re, err := regexp.Compile(p.Log.Value)
		if err != nil {
			r.errorf(p.Log.Pos, "%s: agent log %q: %v", label, p.Log.Value, err)
		} else {
			c.Log = re
		}
	}
	return c
}

// tenantOf checks a selector's container part against the scenario's
// networks: with tenants, a container is NET-cN (or NET-*); without, cN.
func (r *resolver) tenantOf(container string) string {
	net := containerNetwork(container)
	var names []string
	for _, t := range r.s.Tenants {
		if t.Name == net {
			return ""
		}
		names = append(names, t.Name)
	}
	switch {
	case len(names) == 0 && net != "":
		return fmt.Sprintf("names network %s, but the scenario has one network (containers are c1, c2, ...)", net)
	case len(names) > 0 && net == "" && container != "*":
		return fmt.Sprintf("with networks, name a container with its network (%s-c1, %s-*)", names[0], names[0])
	case len(names) > 0 && net != "":
		return fmt.Sprintf("no network %s (networks: %s)", net, strings.Join(names, ", "))
	}
	return ""
}

// tenantName checks that a network: value names one of the tenants.
func (r *resolver) tenantName(v String, label string) string {
	var names []string
	for _, t := range r.s.Tenants {
		if t.Name == v.Value {
			return v.Value
		}
		names = append(names, t.Name)
	}
	if len(names) == 0 {
		r.errorf(v.Pos, "%s: network %q: the scenario has one network (network: applies with networks:)", label, v.Value)
	} else {
		r.errorf(v.Pos, "%s: no network %q (networks: %s)", label, v.Value, strings.Join(names, ", "))
	}
	return ""
}
