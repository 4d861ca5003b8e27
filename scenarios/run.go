package scenarios

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/pcapcheck"
)

// RunOptions configure a scenario run.
type RunOptions struct {
	Binary    string    // the overlaylab binary for the lab's processes
	StateRoot string    // where the lab keeps its state
	Out       string    // output dir for the result, reports and artifacts
	Log       io.Writer // the live timeline; nil = discard
}

// runner plays one scenario on one lab.
type runner struct {
	sc    *Scenario
	o     RunOptions
	ready time.Time

	mu    sync.Mutex // guards st (steps change it while checks read it), res
	st    *lab.State
	res   *Result
	lease map[string]string // host -> subnet at ready (and at join, for added hosts)

	doneMu   sync.Mutex
	done     map[string]chan struct{} // step name -> closed when it completed
	doneAt   map[string]time.Duration
	timeline chan struct{} // closed when every step has been played
	failed   bool          // any expectation failed (decides pcap retention)
}

// Run builds the scenario's lab, plays its timeline, checks its
// expectations, tears the lab down and writes the result to o.Out. The
// returned error is about the run itself (bad options, unwritable output);
// a failed expectation or a lab that did not come up is in the Result.
func Run(ctx context.Context, sc *Scenario, o RunOptions) (*Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}
	r := &runner{sc: sc, o: o, lease: map[string]string{}, done: map[string]chan struct{}{}, doneAt: map[string]time.Duration{},
		timeline: make(chan struct{})}
	r.res = &Result{Scenario: sc.Name, File: sc.File, Lab: sc.Lab, Seed: sc.Seed, Backend: sc.Backend,
		Network: sc.Network.Network.String(), Started: time.Now()}
	for _, s := range sc.Steps {
		if s.Name != "" {
			r.done[s.Name] = make(chan struct{})
		}
	}
	r.play(ctx)
	r.res.Duration = time.Since(r.res.Started)
	r.res.Passed = r.res.Error == "" && !r.failed
	paths, err := WriteReports(o.Out, r.res)
	if err != nil {
		return r.res, err
	}
	for _, p := range paths {
		r.logf("  wrote %s", p)
	}
	return r.res, nil
}

func (r *runner) since() time.Duration {
	if r.ready.IsZero() {
		return 0
	}
	return time.Since(r.ready)
}

func (r *runner) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.o.Log, "[%8s] %s\n", fmtOffset(r.since()), fmt.Sprintf(format, args...))
}

func fmtOffset(d time.Duration) string {
	return fmt.Sprintf("+%.2fs", d.Seconds())
}

// play runs the whole scenario; errors land in the result.
func (r *runner) play(ctx context.Context) {
	spec := r.spec()
	r.logf("scenario %s: building lab %q (%d hosts, %s)", r.sc.Name, r.sc.Lab, len(r.sc.Hosts), r.sc.Backend)
	st, err := lab.Up(ctx, spec)
	if st != nil {
		defer func() {
			r.logf("tearing down lab %q", r.sc.Lab)
			if err := lab.Down(context.Background(), r.o.StateRoot, r.sc.Lab); err != nil {
				r.logf("teardown: %v", err)
			}
		}()
	}
	if err != nil {
		r.res.Error = "lab did not come up: " + err.Error()
		r.logf("✗ %s", r.res.Error)
		if st != nil {
			r.st = st
			r.collect(true)
		}
		return
	}
	r.st = st
	for i, h := range r.sc.Hosts {
		if h.Link.LossPercent > 0 {
			if err := lab.SetLoss(st, st.Hosts[i].Name, h.Link.LossPercent); err != nil {
				r.res.Error = err.Error()
				return
			}
		}
		if h.Link.RateBps > 0 {
			if err := lab.SetRate(st, st.Hosts[i].Name, h.Link.RateBps); err != nil {
				r.res.Error = err.Error()
				return
			}
		}
	}
	for _, h := range st.Hosts {
		r.lease[h.Name] = h.Subnet
	}
	r.res.Topology = topology(st)
	r.ready = time.Now()
	r.logf("ready: %d hosts up, full ping matrix and wire check passed", len(st.Hosts))

	var wg sync.WaitGroup
	results := make([]ExpectResult, len(r.sc.Expects))
	for i := range r.sc.Expects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.expect(ctx, &r.sc.Expects[i])
		}()
	}
	r.playSteps(ctx)
	close(r.timeline)
	wg.Wait()
	r.res.Expectations = results
	for _, e := range results {
		if !e.Passed {
			r.failed = true
		}
	}
	r.collect(r.failed || r.sc.Artifacts.Dumps)
	r.keepPcaps()
	if r.failed {
		r.logf("✗ scenario %s failed", r.sc.Name)
	} else {
		r.logf("✓ scenario %s passed", r.sc.Name)
	}
}

func (r *runner) spec() lab.Spec {
	cfgJSON, _ := r.sc.Network.Marshal()
	s := lab.Spec{
		Name: r.sc.Lab, Hosts: len(r.sc.Hosts), Backend: r.sc.Backend,
		Network: r.sc.Network.Network.String(), ConfigJSON: cfgJSON,
		Underlay: r.sc.Underlay.String(), UnderlayMTU: r.sc.UnderlayMTU,
		EtcdEndpoints: r.sc.EtcdEndpoints, EtcdMembers: r.sc.EtcdMembers, StateRoot: r.o.StateRoot, Binary: r.o.Binary,
		Seed: r.sc.Seed, Verify: true, Out: io.Discard,
	}
	for _, h := range r.sc.Hosts {
		s.PerHost = append(s.PerHost, lab.HostOptions{Containers: h.Containers, AgentArgs: h.AgentArgs})
		s.Containers = max(s.Containers, h.Containers)
	}
	return s
}

// playSteps plays the steps one at a time in their order.
func (r *runner) playSteps(ctx context.Context) {
	for i := range r.sc.Steps {
		step := &r.sc.Steps[i]
		var start time.Time
		if step.After != "" {
			r.waitStep(ctx, step.After)
			r.doneMu.Lock()
			start = r.ready.Add(r.doneAt[step.After] + step.Delay)
			r.doneMu.Unlock()
		} else {
			start = r.ready.Add(step.At)
		}
		if !sleepUntil(ctx, start) {
			return
		}
		r.logf("▶ %s: %s", step.Label(), describeStep(step))
		t0 := time.Now()
		err := r.do(ctx, step)
		sr := StepResult{Name: step.Label(), Action: step.Action, Host: step.Host, Detail: stepDetail(step),
			At: t0.Sub(r.ready), Duration: time.Since(t0)}
		if err != nil {
			sr.Error = err.Error()
			r.logf("✗ %s failed after %s: %v", step.Label(), sr.Duration.Round(time.Millisecond), err)
		} else {
			r.logf("✓ %s (%s)", step.Label(), sr.Duration.Round(time.Millisecond))
		}
		r.mu.Lock()
		r.res.Timeline = append(r.res.Timeline, sr)
		if err != nil {
			// A step that cannot be played makes the run fail: its
			// expectations would test something else than written.
			r.res.Error = fmt.Sprintf("step %s: %v", step.Label(), err)
		}
		r.mu.Unlock()
		if step.Name != "" {
			r.doneMu.Lock()
			r.doneAt[step.Name] = time.Since(r.ready)
			close(r.done[step.Name])
			r.doneMu.Unlock()
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *runner) waitStep(ctx context.Context, name string) {
	r.doneMu.Lock()
	ch := r.done[name]
	r.doneMu.Unlock()
	select {
	case <-ctx.Done():
	case <-ch:
	case <-r.timeline: // the timeline ended without it (an earlier step failed)
	}
}

func describeStep(s *Step) string {
	d := string(s.Action)
	if s.Host != "" {
		d += " " + s.Host
	}
	if det := stepDetail(s); det != "" {
		d += " (" + det + ")"
	}
	return d
}

func stepDetail(s *Step) string {
	switch s.Action {
	case ActionAgentKill:
		return "signal " + s.Signal
	case ActionEtcdStop, ActionEtcdStart:
		return "member " + s.Member
	case ActionLoss:
		return fmt.Sprintf("%g%%", s.Percent)
	case ActionRate:
		if s.RateBps == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d bit/s", s.RateBps)
	case ActionHostAdd:
		return fmt.Sprintf("%d containers", s.Containers)
	case ActionConfigSet:
		return truncate(s.Config, 60)
	}
	return ""
}

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT}

// do plays one step on the lab.
func (r *runner) do(ctx context.Context, s *Step) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	switch s.Action {
	case ActionAgentKill:
		sig, ok := signals[strings.TrimPrefix(s.Signal, "SIG")]
		if !ok {
			return fmt.Errorf("signal %q", s.Signal)
		}
		return lab.KillAgent(st, s.Host, sig)
	case ActionAgentStart:
		return lab.RestartAgent(ctx, st, r.o.Binary, s.Host)
	case ActionLinkDown, ActionLinkUp:
		return lab.SetLink(st, s.Host, s.Action == ActionLinkUp)
	case ActionLoss:
		return lab.SetLoss(st, s.Host, s.Percent)
	case ActionRate:
		return lab.SetRate(st, s.Host, s.RateBps)
	case ActionEtcdStop:
		k, err := r.member(ctx, st, s.Member)
		if err != nil {
			return err
		}
		return lab.StopEtcd(st, k)
	case ActionEtcdStart:
		if s.Member == "stopped" {
			var errs []error
			for k := range st.Etcd.Members {
				if !st.EtcdMemberAlive(k + 1) {
					errs = append(errs, lab.StartEtcd(ctx, st, r.o.Binary, k+1))
				}
			}
			return errors.Join(errs...)
		}
		k, err := r.member(ctx, st, s.Member)
		if err != nil {
			return err
		}
		return lab.StartEtcd(ctx, st, r.o.Binary, k)
	case ActionEtcdPartition, ActionEtcdHeal:
		return lab.SetPartition(st, s.Host, s.Action == ActionEtcdPartition)
	case ActionLeaseDelete:
		h, ok := st.Host(s.Host)
		if !ok {
			return fmt.Errorf("no host %s", s.Host)
		}
		return lab.DeleteLease(ctx, st, h.Subnet)
	case ActionHostAdd:
		h, err := lab.AddHost(ctx, st, r.o.Binary, lab.HostOptions{Containers: s.Containers, AgentArgs: s.AgentArgs})
		if err != nil {
			return err
		}
		if h.Name != s.Host {
			return fmt.Errorf("the lab named the new host %s, the scenario expected %s", h.Name, s.Host)
		}
		r.lease[h.Name] = h.Subnet
		at := r.since()
		th := TopologyHost{Name: h.Name, UnderlayIP: h.UnderlayIP, Subnet: h.Subnet, AddedAt: &at}
		for _, c := range h.Containers {
			th.Containers = append(th.Containers, TopologyContainer{Name: c.Name, IP: c.IP})
		}
		r.res.Topology.Hosts = append(r.res.Topology.Hosts, th)
		return nil
	case ActionHostRemove:
		if err := lab.RemoveHost(ctx, st, s.Host, true); err != nil {
			return err
		}
		at := r.since()
		for i := range r.res.Topology.Hosts {
			if r.res.Topology.Hosts[i].Name == s.Host {
				r.res.Topology.Hosts[i].RemovedAt = &at
			}
		}
		return nil
	case ActionConfigSet:
		return lab.PutConfig(ctx, st, s.Config)
	}
	return fmt.Errorf("unknown action %q", s.Action)
}

// member resolves an etcd-stop/start target: "leader", "follower" (a
// running member that does not lead) or a 1-based index.
func (r *runner) member(ctx context.Context, st *lab.State, m string) (int, error) {
	switch m {
	case "", "1":
		return 1, nil
	case "leader", "follower":
		leader, err := lab.EtcdLeader(ctx, st)
		if err != nil {
			return 0, err
		}
		if m == "leader" {
			return leader, nil
		}
		for k := range st.Etcd.Members {
			if k+1 != leader && st.EtcdMemberAlive(k+1) {
				return k + 1, nil
			}
		}
		return 0, fmt.Errorf("no running follower")
	}
	var k int
	if _, err := fmt.Sscan(m, &k); err != nil {
		return 0, fmt.Errorf("member %q", m)
	}
	return k, nil
}

// snapshot copies the lab state for a check to read without the lock.
func (r *runner) snapshot() *lab.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, _ := json.Marshal(r.st)
	var st lab.State
	_ = json.Unmarshal(data, &st)
	return &st
}

func topology(st *lab.State) Topology {
	t := Topology{Underlay: st.Underlay.CIDR}
	if len(st.Etcd.Endpoints) > 0 {
		ep := strings.TrimPrefix(st.Etcd.Endpoints[0], "http://")
		t.EtcdIP, _, _ = strings.Cut(ep, ":")
	}
	for _, h := range st.Hosts {
		th := TopologyHost{Name: h.Name, UnderlayIP: h.UnderlayIP, Subnet: h.Subnet}
		for _, c := range h.Containers {
			th.Containers = append(th.Containers, TopologyContainer{Name: c.Name, IP: c.IP})
		}
		t.Hosts = append(t.Hosts, th)
	}
	return t
}

// collect writes dumps (routes, neighbours, FDB, links, nftables, etcd keys)
// and copies of the logs into the output dir.
func (r *runner) collect(all bool) {
	if !all {
		return
	}
	st := r.snapshot()
	dir := filepath.Join(r.o.Out, "dumps")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	add := func(p string) {
		rel, _ := filepath.Rel(r.o.Out, p)
		r.mu.Lock()
		r.res.Artifacts = append(r.res.Artifacts, rel)
		r.mu.Unlock()
	}
	for _, h := range st.Hosts {
		p := filepath.Join(dir, h.Name+".txt")
		if err := os.WriteFile(p, []byte(lab.Dump(h.Netns)), 0o644); err == nil {
			add(p)
		}
	}
	p := filepath.Join(dir, "etcd-keys.txt")
	if err := os.WriteFile(p, []byte(lab.DumpEtcd(st)), 0o644); err == nil {
		add(p)
	}
	logs, _ := filepath.Glob(filepath.Join(st.StateDir, "logs", "*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		p := filepath.Join(dir, filepath.Base(l))
		if os.WriteFile(p, data, 0o644) == nil {
			add(p)
		}
	}
}

// keepPcaps deletes captures the policy does not keep.
func (r *runner) keepPcaps() {
	for i := range r.res.Expectations {
		e := &r.res.Expectations[i]
		if e.Pcap == "" {
			continue
		}
		keep := r.sc.Artifacts.Pcap == PcapAlways || (r.sc.Artifacts.Pcap == PcapFailing && !e.Passed)
		if !keep {
			_ = os.Remove(filepath.Join(r.o.Out, e.Pcap))
			e.Pcap = ""
			continue
		}
		r.res.Artifacts = append(r.res.Artifacts, e.Pcap)
	}
}

// expect waits for an expectation's moment and checks it.
func (r *runner) expect(ctx context.Context, e *Expectation) ExpectResult {
	res := ExpectResult{Name: e.Name, Kind: e.Kind, When: describeWhen(e.When)}
	var end <-chan struct{}
	switch e.When.Kind {
	case WhenAt:
		if !sleepUntil(ctx, r.ready.Add(e.When.At)) {
			return failed(res, "cancelled")
		}
	case WhenAfter:
		r.waitStep(ctx, e.When.Step)
		r.doneMu.Lock()
		at, ok := r.doneAt[e.When.Step]
		r.doneMu.Unlock()
		if !ok {
			return failed(res, fmt.Sprintf("step %s never completed", e.When.Step))
		}
		sleepUntil(ctx, r.ready.Add(at+e.When.Delay))
	case WhenFinal:
		select {
		case <-ctx.Done():
		case <-r.timeline:
		}
	case WhenDuring:
		if !r.waitMark(ctx, e.When.From) {
			return failed(res, fmt.Sprintf("window start %s never came", e.When.From))
		}
		ch := make(chan struct{})
		go func() { r.waitMark(ctx, e.When.To); close(ch) }()
		end = ch
	}
	res.Start = r.since()
	var pass bool
	var msg string
	switch e.Kind {
	case KindPing:
		pass, msg, res.Matrix, res.Pcap = r.checkPing(ctx, e, end)
	case KindEncap:
		pass, msg, res.Pcap = r.checkEncap(ctx, e, end)
	case KindLease, KindRoute, KindAgent:
		pass, msg = r.retry(ctx, e, end)
	}
	res.End = r.since()
	res.Passed, res.Message = pass, msg
	mark := "✓"
	if !pass {
		mark = "✗"
	}
	r.logf("%s expect %s (%s): %s", mark, e.Name, res.When, firstLine(msg))
	return res
}

func failed(res ExpectResult, msg string) ExpectResult {
	res.Passed, res.Message = false, msg
	return res
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// waitMark waits until a mark: an offset from ready or a step's completion.
func (r *runner) waitMark(ctx context.Context, m Mark) bool {
	if m.Step == "" {
		return sleepUntil(ctx, r.ready.Add(m.Offset))
	}
	r.waitStep(ctx, m.Step)
	r.doneMu.Lock()
	_, ok := r.doneAt[m.Step]
	r.doneMu.Unlock()
	return ok
}

func describeWhen(w When) string {
	switch w.Kind {
	case WhenAt:
		return "at " + w.At.String()
	case WhenAfter:
		if w.Delay > 0 {
			return fmt.Sprintf("%s after %s", w.Delay, w.Step)
		}
		return "after " + w.Step
	case WhenDuring:
		return fmt.Sprintf("during %s..%s", w.From, w.To)
	}
	return "final"
}

// retry evaluates a state check until it passes or its deadline (within,
// or the window's end) passes; a window check must hold throughout.
func (r *runner) retry(ctx context.Context, e *Expectation, end <-chan struct{}) (bool, string) {
	check := func() (bool, string) {
		st := r.snapshot()
		switch e.Kind {
		case KindLease:
			return r.checkLease(ctx, st, e.Lease)
		case KindRoute:
			return r.checkRoute(st, e.Route)
		default:
			return checkAgent(st, e.Agent)
		}
	}
	if end != nil {
		for {
			ok, msg := check()
			if !ok {
				return false, "broken inside the window: " + msg
			}
			select {
			case <-end:
				return true, msg + " (held throughout the window)"
			case <-ctx.Done():
				return false, "cancelled"
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	deadline := time.Now().Add(e.Within)
	for {
		ok, msg := check()
		if ok || !time.Now().Before(deadline) {
			if !ok && e.Within > 0 {
				msg += fmt.Sprintf(" (still so after %s)", e.Within)
			}
			return ok, msg
		}
		select {
		case <-ctx.Done():
			return false, "cancelled"
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *runner) checkLease(ctx context.Context, st *lab.State, c *LeaseCheck) (bool, string) {
	r.mu.Lock()
	was := r.lease[c.Host]
	r.mu.Unlock()
	h, ok := st.Host(c.Host)
	if !ok {
		return false, fmt.Sprintf("host %s is not in the lab", c.Host)
	}
	now, err := lab.LeaseOf(ctx, st, h.UnderlayIP)
	if err != nil {
		return false, err.Error()
	}
	same := now == was
	desc := fmt.Sprintf("%s's lease: %s at ready, now %s", c.Host, was, orNone(now))
	switch c.State {
	case LeaseUnchanged:
		return same, desc
	default:
		return !same, desc
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (r *runner) checkRoute(st *lab.State, c *RouteCheck) (bool, string) {
	h, ok := st.Host(c.Host)
	if !ok {
		return false, fmt.Sprintf("host %s is not in the lab", c.Host)
	}
	dst := c.Dst
	if c.Peer != "" {
		r.mu.Lock()
		sub := r.lease[c.Peer]
		r.mu.Unlock()
		p, err := netip.ParsePrefix(sub)
		if err != nil {
			return false, fmt.Sprintf("peer %s has no known subnet", c.Peer)
		}
		dst = p
	}
	routes, err := lab.Routes(h.Netns)
	if err != nil {
		return false, err.Error()
	}
	var found string
	for _, rt := range routes {
		if strings.HasPrefix(rt, dst.String()+" ") || rt == dst.String() {
			found = rt
		}
	}
	if c.Present {
		if found == "" {
			return false, fmt.Sprintf("no route to %s on %s; routes: %s", dst, c.Host, strings.Join(routes, "; "))
		}
		return true, fmt.Sprintf("%s has %q", c.Host, found)
	}
	if found != "" {
		return false, fmt.Sprintf("%s still has %q", c.Host, found)
	}
	return true, fmt.Sprintf("%s has no route to %s", c.Host, dst)
}

func checkAgent(st *lab.State, c *AgentCheck) (bool, string) {
	h, ok := st.Host(c.Host)
	if !ok {
		return false, fmt.Sprintf("host %s is not in the lab", c.Host)
	}
	if c.Log != nil {
		data, err := os.ReadFile(h.AgentLog)
		if err != nil {
			return false, err.Error()
		}
		if m := c.Log.Find(data); m != nil {
			return true, fmt.Sprintf("%s's agent log matches /%s/ (%d bytes: %q)", c.Host, c.Log, len(m), truncate(string(m), 80))
		}
		return false, fmt.Sprintf("%s's agent log has no match for /%s/", c.Host, c.Log)
	}
	code, how, ok := lab.AgentExit(h)
	if !ok {
		return false, fmt.Sprintf("%s's agent (pid %d) has not exited", c.Host, h.AgentPID)
	}
	if code != *c.ExitCode {
		return false, fmt.Sprintf("%s's agent exited with %d (%s), want %d", c.Host, code, how, *c.ExitCode)
	}
	return true, fmt.Sprintf("%s's agent exited with %d (%s)", c.Host, code, how)
}

// pingPairs resolves a ping check's selectors against the lab now.
func pingPairs(st *lab.State, c *PingCheck) ([]lab.Endpoint, func(i, j int) bool) {
	type sel struct{ from, to bool }
	var eps []lab.Endpoint
	var sels []sel
	for _, h := range st.Hosts {
		for _, ct := range h.Containers {
			s := sel{c.From.Match(h.Name, ct.Name), c.To.Match(h.Name, ct.Name)}
			if s.from || s.to {
				eps = append(eps, lab.Endpoint{Name: h.Name + "/" + ct.Name, Netns: ct.Netns, IP: netip.MustParseAddr(ct.IP)})
				sels = append(sels, s)
			}
		}
	}
	return eps, func(i, j int) bool { return i != j && sels[i].from && sels[j].to }
}

// checkPing probes the selected pairs. Point checks retry until within;
// windows probe continuously until their end.
func (r *runner) checkPing(ctx context.Context, e *Expectation, end <-chan struct{}) (bool, string, *MatrixResult, string) {
	c := e.Ping
	st := r.snapshot()
	eps, pair := pingPairs(st, c)
	if len(eps) < 2 {
		return false, "the selectors pick fewer than two containers", nil, ""
	}
	capt, pcapPath := r.startCapture(ctx, st, e.Name)
	defer func() {
		if capt != nil {
			frames, _ := capt.Stop()
			_ = pcapcheck.WritePcap(filepath.Join(r.o.Out, pcapPath), frames)
		}
	}()
	if capt == nil {
		pcapPath = ""
	}
	var counts *lab.Counts
	var err error
	pass := false
	if end != nil {
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-end:
			case <-ctx.Done():
			}
			cancel()
		}()
		counts, err = lab.ProbeWindow(wctx, eps, pair, 200*time.Millisecond)
		cancel()
		pass = judge(c, counts, pair, len(eps))
	} else {
		deadline := time.Now().Add(max(e.Within, time.Second))
		for {
			round := time.Second
			if c.Result == ResultLoss {
				round = 2 * time.Second
			}
			wctx, cancel := context.WithTimeout(ctx, round)
			counts, err = lab.ProbeWindow(wctx, eps, pair, 100*time.Millisecond)
			cancel()
			pass = err == nil && judge(c, counts, pair, len(eps))
			if pass || !time.Now().Before(deadline) || ctx.Err() != nil {
				break
			}
		}
	}
	m := matrix(eps, c, counts, pair)
	msg := summarize(c, counts, pair, len(eps))
	if err != nil {
		msg = err.Error() + "\n" + msg
		pass = false
	}
	return pass, msg + "\n" + m.text(), m, pcapPath
}

// startCapture captures on the underlay bridge for the length of a check;
// the bridge is promiscuous so every frame between hosts is seen.
func (r *runner) startCapture(ctx context.Context, st *lab.State, name string) (*pcapcheck.Capture, string) {
	if r.sc.Artifacts.Pcap == PcapNever {
		return nil, ""
	}
	if err := os.MkdirAll(filepath.Join(r.o.Out, "pcaps"), 0o755); err != nil {
		return nil, ""
	}
	if err := lab.Promisc(st.Underlay.Netns, st.Underlay.Bridge); err != nil {
		return nil, ""
	}
	capt, err := pcapcheck.Start(ctx, st.Underlay.Netns, st.Underlay.Bridge)
	if err != nil {
		return nil, ""
	}
	return capt, filepath.Join("pcaps", safeName(name)+".pcap")
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// judge applies a ping check's result to what was counted.
func judge(c *PingCheck, n *lab.Counts, pair func(i, j int) bool, size int) bool {
	if n == nil {
		return false
	}
	sent, recv := 0, 0
	for i := range size {
		for j := range size {
			if !pair(i, j) {
				continue
			}
			sent += n.Sent[i][j]
			recv += n.Received[i][j]
			switch c.Result {
			case ResultAll:
				if n.Sent[i][j] == 0 || n.Received[i][j] < n.Sent[i][j] {
					return false
				}
			case ResultNone:
				if n.Received[i][j] > 0 {
					return false
				}
			}
		}
	}
	if c.Result == ResultLoss {
		return sent > 0 && lossPercent(sent, recv) <= c.MaxLoss
	}
	return sent > 0
}

func lossPercent(sent, recv int) float64 {
	if sent == 0 {
		return 100
	}
	return 100 * float64(sent-recv) / float64(sent)
}

func summarize(c *PingCheck, n *lab.Counts, pair func(i, j int) bool, size int) string {
	if n == nil {
		return "no probes"
	}
	sent, recv, pairs := 0, 0, 0
	for i := range size {
		for j := range size {
			if pair(i, j) {
				pairs++
				sent += n.Sent[i][j]
				recv += n.Received[i][j]
			}
		}
	}
	want := string(c.Result)
	if c.Result == ResultLoss {
		want = fmt.Sprintf("loss<=%g%%", c.MaxLoss)
	}
	return fmt.Sprintf("%s → %s, want %s: %d pairs, %d/%d probes answered (%.1f%% loss)", c.From, c.To, want, pairs, recv, sent, lossPercent(sent, recv))
}

func matrix(eps []lab.Endpoint, c *PingCheck, n *lab.Counts, pair func(i, j int) bool) *MatrixResult {
	size := len(eps)
	m := &MatrixResult{}
	for _, e := range eps {
		m.Endpoints = append(m.Endpoints, e.Name)
	}
	for i := range size {
		m.Want = append(m.Want, make([]string, size))
		m.Sent = append(m.Sent, make([]int, size))
		m.Received = append(m.Received, make([]int, size))
		m.Bad = append(m.Bad, make([]bool, size))
		for j := range size {
			if !pair(i, j) || n == nil {
				continue
			}
			s, rcv := n.Sent[i][j], n.Received[i][j]
			m.Sent[i][j], m.Received[i][j] = s, rcv
			switch c.Result {
			case ResultAll:
				m.Want[i][j] = "answer"
				m.Bad[i][j] = s == 0 || rcv < s
			case ResultNone:
				m.Want[i][j] = "silent"
				m.Bad[i][j] = rcv > 0
			case ResultLoss:
				m.Want[i][j] = "answer"
				m.Bad[i][j] = lossPercent(s, rcv) > c.MaxLoss
			}
		}
	}
	return m
}

// text draws the matrix: received/sent per cell, ! marking a bad cell.
func (m *MatrixResult) text() string {
	var b strings.Builder
	w := 8
	for _, e := range m.Endpoints {
		w = max(w, len(e)+1)
	}
	fmt.Fprintf(&b, "%-*s", w, "from\\to")
	for _, e := range m.Endpoints {
		fmt.Fprintf(&b, " %-*s", w, e)
	}
	b.WriteString("\n")
	for i, e := range m.Endpoints {
		fmt.Fprintf(&b, "%-*s", w, e)
		for j := range m.Endpoints {
			cell := ""
			if m.Want[i][j] != "" {
				cell = fmt.Sprintf("%d/%d", m.Received[i][j], m.Sent[i][j])
				if m.Bad[i][j] {
					cell += "!"
				}
			}
			fmt.Fprintf(&b, " %-*s", w, cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("cells: replies/probes; ! breaks the expectation\n")
	return b.String()
}

// checkEncap captures on a host's underlay interface. A point check sends
// pings from the host's containers to every other host's and requires each
// to cross the wire encapsulated; a window check requires that nothing bare
// or wrongly encapsulated crossed it and that something encapsulated did.
func (r *runner) checkEncap(ctx context.Context, e *Expectation, end <-chan struct{}) (bool, string, string) {
	c := e.Encap
	st := r.snapshot()
	h, ok := st.Host(c.Host)
	if !ok {
		return false, fmt.Sprintf("host %s is not in the lab", c.Host), ""
	}
	capt, err := pcapcheck.Start(ctx, h.Netns, "eth0")
	if err != nil {
		return false, fmt.Sprintf("capture on %s eth0: %v", c.Host, err), ""
	}
	x := pcapcheck.Expect{Encap: pcapcheck.Encap{Kind: c.Backend, Port: uint16(c.Port), VNI: uint32(c.VNI), Network: r.sc.Network.Network}}
	if end != nil {
		select {
		case <-end:
		case <-ctx.Done():
		}
	} else {
		eps := st.Endpoints()
		pair := func(i, j int) bool {
			return strings.HasPrefix(eps[i].Name, c.Host+"/") && !strings.HasPrefix(eps[j].Name, c.Host+"/")
		}
		pctx, cancel := context.WithTimeout(ctx, max(e.Within, 2*time.Second))
		m, _ := lab.PingMatrix(pctx, eps, pair, 250*time.Millisecond)
		cancel()
		if m != nil {
			x.Echoes = st.EchoFlows(c.Host, eps, func(i, j int) bool { return m.Actual[i][j] }, nil)
		}
		time.Sleep(50 * time.Millisecond)
	}
	frames, err := capt.Stop()
	pcapPath := filepath.Join("pcaps", safeName(e.Name)+".pcap")
	if r.sc.Artifacts.Pcap != PcapNever {
		if err := os.MkdirAll(filepath.Join(r.o.Out, "pcaps"), 0o755); err == nil {
			if pcapcheck.WritePcap(filepath.Join(r.o.Out, pcapPath), frames) != nil {
				pcapPath = ""
			}
		}
	} else {
		pcapPath = ""
	}
	if err != nil {
		return false, "capture: " + err.Error(), pcapPath
	}
	pkts := pcapcheck.Decode(frames, x.Encap)
	rep := pcapcheck.Check(pkts, x)
	if !rep.OK {
		return false, rep.Summary, pcapPath
	}
	encapsulated := 0
	for _, p := range pkts {
		if p.InnerSrc.IsValid() || (c.Backend == "host-gw" && x.Encap.Network.Contains(p.OuterSrc)) {
			encapsulated++
		}
	}
	if end == nil && len(x.Echoes) == 0 {
		return false, fmt.Sprintf("no echo from %s's containers was answered, so nothing could be checked on the wire", c.Host), pcapPath
	}
	if end != nil && encapsulated == 0 {
		return false, fmt.Sprintf("no overlay traffic crossed %s's eth0 in the window", c.Host), pcapPath
	}
	return true, fmt.Sprintf("%d frames on %s eth0: %d overlay packets, all %s-encapsulated as configured, none bare", len(frames), c.Host, encapsulated, c.Backend), pcapPath
}
