package scenarios

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
)

// Step parameters, as a set.
type param uint64

const (
	pHost param = 1 << iota
	pSignal
	pPercent
	pRate
	pContainers
	pAgentArgs
	pConfig
	pMember
	pWait
	pLinkDelay // impair's delay (the same key as the step timing's delay)
	pJitter
	pLoss
	pReorder
	pDuplicate
	pCorrupt
	pDirection
	pMatch
	pSeed
	pMTU
	pKeepConfig
	pDev
	pTxChecksum
	pTSO
	pGRO
	pBinary
	pNetwork
)

// impairments are the parameters of impair that impair something.
const impairments = pLinkDelay | pJitter | pLoss | pReorder | pDuplicate | pCorrupt | pRate
const offloads = pTxChecksum | pTSO | pGRO

var paramNames = []struct {
	p    param
	name string
}{
	{pHost, "host"}, {pSignal, "signal"}, {pPercent, "percent"}, {pRate, "rate"},
	{pContainers, "containers"}, {pAgentArgs, "agentArgs"}, {pConfig, "config"}, {pMember, "member"},
	{pWait, "wait"}, {pLinkDelay, "delay"}, {pJitter, "jitter"}, {pLoss, "loss"}, {pReorder, "reorder"},
	{pDuplicate, "duplicate"}, {pCorrupt, "corrupt"}, {pDirection, "direction"}, {pMatch, "match"}, {pSeed, "seed"},
	{pMTU, "mtu"}, {pKeepConfig, "keepConfig"}, {pDev, "dev"}, {pTxChecksum, "tx-checksum"}, {pTSO, "tso"}, {pGRO, "gro"},
	{pBinary, "binary"}, {pNetwork, "network"},
}

func (ps param) String() string {
	var names []string
	for _, pn := range paramNames {
		if ps&pn.p != 0 {
			names = append(names, pn.name)
		}
	}
	return strings.Join(names, ", ")
}

type actionSpec struct{ required, optional param }

// actions lists every action and its parameters, in the order error
// messages list them.
var actions = []struct {
	action Action
	spec   actionSpec
}{
	{ActionAgentKill, actionSpec{pHost, pSignal}},
	{ActionAgentStart, actionSpec{pHost, pWait}},
	{ActionLinkDown, actionSpec{pHost, 0}},
	{ActionLinkUp, actionSpec{pHost, 0}},
	{ActionLoss, actionSpec{pHost | pPercent, 0}},
	{ActionRate, actionSpec{pHost | pRate, 0}},
	{ActionEtcdStop, actionSpec{0, pMember}},
	{ActionEtcdStart, actionSpec{0, pMember}},
	{ActionEtcdPartition, actionSpec{pHost, 0}},
	{ActionEtcdHeal, actionSpec{pHost, 0}},
	{ActionLeaseDelete, actionSpec{pHost, pNetwork}},
	{ActionHostAdd, actionSpec{0, pContainers | pAgentArgs}},
	{ActionHostRemove, actionSpec{pHost, 0}},
	{ActionConfigSet, actionSpec{pConfig, pNetwork}},
	{ActionImpair, actionSpec{pHost, impairments | pDirection | pMatch | pSeed}},
	{ActionImpairClear, actionSpec{pHost, 0}},
	{ActionLinkMTU, actionSpec{pHost | pMTU, 0}},
	{ActionEtcdCompact, actionSpec{0, 0}},
	{ActionEtcdWipe, actionSpec{0, pKeepConfig}},
	{ActionOffload, actionSpec{pHost | pDev, offloads}},
	{ActionAgentUpgrade, actionSpec{pHost | pBinary, 0}},
}

func lookupAction(name string) (actionSpec, bool) {
	for _, a := range actions {
		if string(a.action) == name {
			return a.spec, true
		}
	}
	return actionSpec{}, false
}

func actionList() string {
	names := make([]string, len(actions))
	for i, a := range actions {
		names[i] = string(a.action)
	}
	return strings.Join(names, ", ")
}

// stepInfo is a step while it is being resolved.
type stepInfo struct {
	raw      *RawStep
	idx      int    // position in the timeline, 0-based
	label    string // `step "name"` or `step N`, for messages
	st       Step
	timingOK bool // exactly one of at/after, and its durations parse
	actionOK bool
	parent   *stepInfo // the step named by after
	cyclic   bool
	visit    int8 // cycle detection: 0 new, 1 on the current path, 2 done
	order    int8 // 0 unknown, 1 orderable, 2 not orderable
	nominal  time.Duration
	depth    int
	host     *hostInfo // host-add: the host it adds
}

func (r *resolver) timeline() {
	r.stepNames = map[string]*stepInfo{}
	for i := range r.raw.Timeline {
		si := r.step(i, &r.raw.Timeline[i])
		r.steps = append(r.steps, si)
		if si.st.Name == "" {
			continue
		}
		if first, dup := r.stepNames[si.st.Name]; dup {
			r.errorf(si.raw.Name.Pos, "duplicate step name %q (first at line %d)", si.st.Name, first.raw.Name.Pos.Line)
			continue
		}
		r.stepNames[si.st.Name] = si
	}
	r.linkSteps()
	order := r.orderSteps()
	r.simulateHosts(order)
	for _, si := range order {
		r.s.Steps = append(r.s.Steps, si.st)
	}
}

// step resolves one step on its own; references between steps come later.
func (r *resolver) step(i int, rs *RawStep) *stepInfo {
	si := &stepInfo{raw: rs, idx: i, label: "step " + strconv.Itoa(i+1)}
	st := &si.st
	st.Pos = rs.Pos
	if rs.Name.IsSet() {
		if nameRE.MatchString(rs.Name.Value) {
			st.Name = rs.Name.Value
			si.label = fmt.Sprintf("step %q", st.Name)
		} else {
			r.errorf(rs.Name.Pos, "%s: name %q: use letters, digits, '.', '_' and '-', starting with a letter (at most 63)", si.label, rs.Name.Value)
		}
	}

	// timing
	si.timingOK = true
	switch {
	case rs.At.IsSet() && rs.After.IsSet():
		r.errorf(rs.After.Pos, "%s: at and after exclude each other: use one", si.label)
		si.timingOK = false
	case rs.At.IsSet():
		st.At, si.timingOK = r.duration(rs.At, si.label+": at")
	case rs.After.IsSet():
		st.After = rs.After.Value
	default:
		r.errorf(rs.Pos, "%s: needs at (an offset from ready) or after (a step name)", si.label)
		si.timingOK = false
	}
	if rs.Delay.IsSet() && rs.Action.Value != string(ActionImpair) {
		if !rs.After.IsSet() {
			r.errorf(rs.Delay.Pos, "%s: delay goes with after (with at, add it to the offset)", si.label)
		} else {
			var ok bool
			st.Delay, ok = r.duration(rs.Delay, si.label+": delay")
			si.timingOK = si.timingOK && ok
		}
	}

	// action and its parameters
	if !rs.Action.IsSet() {
		r.errorf(rs.Pos, "%s: action is required (one of: %s)", si.label, actionList())
		return si
	}
	spec, ok := lookupAction(rs.Action.Value)
	if !ok {
		r.errorf(rs.Action.Pos, "%s: unknown action %q (actions: %s)", si.label, rs.Action.Value, actionList())
		return si
	}
	st.Action = Action(rs.Action.Value)
	si.actionOK = true
	given := map[param]Pos{
		pHost: rs.Host.Pos, pSignal: rs.Signal.Pos, pPercent: rs.Percent.Pos, pRate: rs.Rate.Pos,
		pContainers: rs.Containers.Pos, pAgentArgs: rs.AgentArgs.Pos, pConfig: rs.Config.Pos, pMember: rs.Member.Pos,
		pWait: rs.Wait.Pos, pJitter: rs.Jitter.Pos, pLoss: rs.Loss.Pos, pReorder: rs.Reorder.Pos,
		pDuplicate: rs.Duplicate.Pos, pCorrupt: rs.Corrupt.Pos, pDirection: rs.Direction.Pos, pMatch: rs.Match.Pos,
		pSeed: rs.Seed.Pos, pMTU: rs.MTU.Pos, pKeepConfig: rs.KeepConfig.Pos, pDev: rs.Dev.Pos,
		pTxChecksum: rs.TxChecksum.Pos, pTSO: rs.TSO.Pos, pGRO: rs.GRO.Pos, pBinary: rs.Binary.Pos, pNetwork: rs.Network.Pos,
	}
	if st.Action == ActionImpair {
		given[pLinkDelay] = rs.Delay.Pos
	}
	allowed := spec.required | spec.optional
	for _, pn := range paramNames {
		p := given[pn.p]
		switch {
		case p.IsValid() && allowed&pn.p == 0:
			takes := "it takes no parameters"
			if allowed != 0 {
				takes = "it takes: " + allowed.String()
			}
			r.errorf(p, "%s: action %s does not take %s (%s)", si.label, st.Action, pn.name, takes)
		case !p.IsValid() && spec.required&pn.p != 0:
			r.errorf(rs.Action.Pos, "%s: action %s needs %s", si.label, st.Action, pn.name)
		}
	}
	r.stepValues(si, allowed)
	return si
}

// stepValues parses the values of a step's parameters (their presence was
// checked against the action already).
func (r *resolver) stepValues(si *stepInfo, allowed param) {
	rs, st := si.raw, &si.st
	if allowed&pHost != 0 {
		st.Host = rs.Host.Value
	}
	if st.Action == ActionAgentKill {
		st.Signal = DefaultSignal
		if rs.Signal.IsSet() {
			switch sig := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(rs.Signal.Value)), "SIG"); sig {
			case "TERM", "KILL", "INT":
				st.Signal = sig
			default:
				r.errorf(rs.Signal.Pos, "%s: signal %q: want TERM, KILL or INT", si.label, rs.Signal.Value)
			}
		}
	}
	if allowed&pPercent != 0 && rs.Percent.IsSet() {
		if v, msg := parsePercent(rs.Percent.Value); msg != "" {
			r.errorf(rs.Percent.Pos, "%s: percent %s", si.label, msg)
		} else {
			st.Percent = v
		}
	}
	if allowed&pRate != 0 && rs.Rate.IsSet() {
		if v, msg := parseRate(rs.Rate.Value); msg != "" {
			r.errorf(rs.Rate.Pos, "%s: rate %s", si.label, msg)
		} else {
			st.RateBps = v
		}
	}
	if allowed&pWait != 0 && rs.Wait.IsSet() {
		st.NoWait = !rs.Wait.Value
	}
	if allowed&pNetwork != 0 && rs.Network.IsSet() {
		st.Network = r.tenantName(rs.Network, si.label)
	}
	if allowed&pConfig != 0 {
		st.Config = rs.Config.Value // may be invalid on purpose
	}
	if allowed&pMember != 0 {
		st.Member = "1"
		if rs.Member.IsSet() {
			st.Member = strings.TrimSpace(rs.Member.Value)
			n, err := strconv.Atoi(st.Member)
			switch {
			case st.Member == "leader" && st.Action == ActionEtcdStop, st.Member == "follower" && st.Action == ActionEtcdStop:
			case st.Member == "stopped" && st.Action == ActionEtcdStart:
			case err == nil && n >= 1 && n <= r.s.EtcdMembers:
			default:
				r.errorf(rs.Member.Pos, "%s: member %q: want 1..%d%s", si.label, rs.Member.Value, r.s.EtcdMembers,
					map[bool]string{true: ", leader or follower", false: " or stopped"}[st.Action == ActionEtcdStop])
			}
		}
	}
	switch st.Action {
	case ActionEtcdStop, ActionEtcdStart, ActionEtcdWipe:
		if len(r.s.EtcdEndpoints) > 0 {
			r.errorf(rs.Action.Pos, "%s: %s needs the embedded etcd (this scenario uses an external one)", si.label, st.Action)
		}
		st.KeepConfig = rs.KeepConfig.Value
	case ActionImpair:
		st.Impair = r.impairment(si)
	case ActionLinkMTU:
		if v := rs.MTU.Value; v != 0 && (v < 68 || v > plan.MaxUnderlayMTU) {
			r.errorf(rs.MTU.Pos, "%s: mtu %d: must be 68..%d (0 removes the narrower hop)", si.label, v, plan.MaxUnderlayMTU)
		}
		st.MTU = int(rs.MTU.Value)
	case ActionOffload:
		st.Offload = r.offload(si)
	case ActionAgentUpgrade:
		if rs.Binary.IsSet() && strings.TrimSpace(rs.Binary.Value) == "" {
			r.errorf(rs.Binary.Pos, "%s: binary: a path to an agent binary is required", si.label)
		}
		st.Binary = r.binaryPath(rs.Binary.Value)
	}
}

// duration parses a non-negative Go duration, reporting at its position.
func (r *resolver) duration(v String, what string) (time.Duration, bool) {
	d, msg := parseDuration(v.Value)
	if msg != "" {
		r.errorf(v.Pos, "%s %s", what, msg)
		return 0, false
	}
	return d, true
}

// linkSteps resolves after references and reports cycles.
func (r *resolver) linkSteps() {
	for _, si := range r.steps {
		if si.st.After == "" {
			continue
		}
		if p, ok := r.stepNames[si.st.After]; ok {
			si.parent = p
			continue
		}
		r.errorf(si.raw.After.Pos, "%s: after %q: no such step (%s)", si.label, si.st.After, r.stepNameList())
	}
	// Each step follows at most one other, so a cycle is a loop of parent
	// links: walk each chain once, marking the path.
	for _, si := range r.steps {
		var path []*stepInfo
		cur := si
		for cur != nil && cur.visit == 0 {
			cur.visit = 1
			path = append(path, cur)
			cur = cur.parent
		}
		if cur != nil && cur.visit == 1 {
			cycle := path[slices.Index(path, cur):]
			first := cycle[0]
			names := make([]string, 0, len(cycle)+1)
			for _, c := range cycle {
				c.cyclic = true
				if c.idx < first.idx {
					first = c
				}
			}
			// Start the loop at the step written first.
			k := slices.Index(cycle, first)
			for j := range cycle {
				names = append(names, cycle[(k+j)%len(cycle)].st.Name)
			}
			names = append(names, first.st.Name)
			if len(cycle) == 1 {
				r.errorf(first.raw.After.Pos, "%s: after names the step itself", first.label)
			} else {
				r.errorf(first.raw.After.Pos, "%s: after forms a cycle: %s", first.label, strings.Join(names, " -> "))
			}
		}
		for _, p := range path {
			p.visit = 2
		}
	}
}

func (r *resolver) stepNameList() string {
	var names []string
	for _, si := range r.steps {
		if si.st.Name != "" && r.stepNames[si.st.Name] == si {
			names = append(names, si.st.Name)
		}
	}
	switch {
	case len(names) == 0:
		return "no step has a name"
	case len(names) > 10:
		return "steps: " + strings.Join(names[:10], ", ") + ", ..."
	}
	return "steps: " + strings.Join(names, ", ")
}

// orderSteps returns the steps in play order (see Step): those whose timing
// resolved, by nominal start, chain depth and file position; then the rest in
// file order (they only exist when there are errors).
func (r *resolver) orderSteps() []*stepInfo {
	var ordered, rest []*stepInfo
	for _, si := range r.steps {
		if r.orderable(si) {
			ordered = append(ordered, si)
		} else {
			rest = append(rest, si)
		}
	}
	slices.SortStableFunc(ordered, func(a, b *stepInfo) int {
		if a.nominal != b.nominal {
			if a.nominal < b.nominal {
				return -1
			}
			return 1
		}
		if a.depth != b.depth {
			return a.depth - b.depth
		}
		return a.idx - b.idx
	})
	return append(ordered, rest...)
}

// orderable computes a step's nominal start and depth, if it has one.
func (r *resolver) orderable(si *stepInfo) bool {
	// Walk up to the first step whose answer is known (or a root), then
	// settle the chain top-down; iterative, so long chains cannot overflow.
	var chain []*stepInfo
	for cur := si; cur != nil && cur.order == 0; cur = cur.parent {
		chain = append(chain, cur)
		if !cur.timingOK || cur.cyclic || cur.st.After == "" {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		c := chain[i]
		c.order = 2
		switch {
		case !c.timingOK || c.cyclic:
		case c.st.After == "":
			c.nominal, c.depth, c.order = c.st.At, 0, 1
		case c.parent != nil && c.parent.order == 1:
			c.nominal, c.depth, c.order = satAdd(c.parent.nominal, c.st.Delay), c.parent.depth+1, 1
		}
	}
	return si.order == 1
}

// simulateHosts names the hosts that host-add steps create and checks every
// host a step names against the hosts that exist at that point of the order.
func (r *resolver) simulateHosts(order []*stepInfo) {
	for _, si := range order {
		if si.st.Action != ActionHostAdd || !si.actionOK {
			continue
		}
		h := &hostInfo{index: len(r.hosts) + 1, containers: r.addDefaults.containers, contPos: r.addDefaults.contPos, contDefault: r.addDefaults.contDefault, addedBy: si}
		si.st.Containers, si.st.AgentArgs = r.addDefaults.containers, slices.Clone(r.addDefaults.agentArgs)
		si.st.Agent = r.addDefaults.agent
		if si.raw.Containers.IsSet() {
			h.contPos, h.contDefault = si.raw.Containers.Pos, false
			h.containers = r.containerCount(si.raw.Containers, si.label+": containers")
			si.st.Containers = h.containers
		}
		if si.raw.AgentArgs.IsSet() {
			si.st.AgentArgs = si.raw.AgentArgs.Strings()
		}
		si.host, si.st.Host = h, h.name()
		r.hosts = append(r.hosts, h)
	}
	if r.hostsBroken {
		return
	}
	alive := make([]bool, len(r.hosts)+1)
	for i := 1; i <= r.initial; i++ {
		alive[i] = true
	}
	removedBy := map[int]*stepInfo{}
	for _, si := range order {
		if !si.actionOK {
			continue
		}
		idx := 0
		if spec, _ := lookupAction(string(si.st.Action)); si.raw.Host.IsSet() && spec.required&pHost != 0 {
			idx = hostIndex(si.st.Host)
			known := idx >= 1 && idx < len(alive)
			switch {
			case si.order != 1:
				// Its place in the order is unknown: only require that the
				// host exists at some point.
				if !known {
					r.errorf(si.raw.Host.Pos, "%s: unknown host %q (hosts: %s)", si.label, si.st.Host, r.allHosts())
				}
			case !known || !alive[idx]:
				note := ""
				switch {
				case known && removedBy[idx] != nil:
					note = fmt.Sprintf("; %s was removed by %s", si.st.Host, removedBy[idx].label)
				case known && r.hosts[idx-1].addedBy != nil:
					note = fmt.Sprintf("; %s is added later, by %s", si.st.Host, r.hosts[idx-1].addedBy.label)
				}
				r.errorf(si.raw.Host.Pos, "%s: unknown host %q (hosts: %s%s)", si.label, si.st.Host, aliveHosts(alive), note)
				idx = 0
			}
		}
		if si.order != 1 {
			continue
		}
		switch si.st.Action {
		case ActionHostAdd:
			alive[si.host.index] = true
		case ActionHostRemove:
			if idx > 0 {
				alive[idx] = false
				removedBy[idx] = si
			}
		}
	}
}

func aliveHosts(alive []bool) string {
	var idx []int
	for i, a := range alive {
		if a {
			idx = append(idx, i)
		}
	}
	return formatHosts(idx)
}

// allHosts lists every host the scenario ever has.
func (r *resolver) allHosts() string {
	idx := make([]int, len(r.hosts))
	for i := range r.hosts {
		idx[i] = i + 1
	}
	return formatHosts(idx)
}
