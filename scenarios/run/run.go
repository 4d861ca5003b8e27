// Package run plays a parsed scenario on a lab: it builds the lab, plays the
// timeline step by step, checks every expectation through the lab's own
// checks, tears the lab down and writes the reports.
package run

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

// Options configure a scenario run.
type Options struct {
	Binary    string    // the overlaylab binary for the lab's processes (default: this one)
	StateRoot string    // where the lab keeps its state
	Out       string    // output dir for the result, reports and artifacts
	Log       io.Writer // the live timeline; nil = discard
	// Agent, when its Path is set, runs on every host instead of what the
	// scenario says (`overlaylab run FILE --agent PATH`).
	Agent plan.Agent
	// Lab, when set, names the lab instead of the scenario's lab: (parallel
	// and repeated runs of one file need distinct labs).
	Lab string
	// Label names this run in combined reports (e.g. "agent-restart-udp
	// [flanneld] #2"); default: the scenario's name.
	Label string
}

// runner plays one scenario on one lab.
type runner struct {
	sc    *scenarios.Scenario
	o     Options
	lab   *lab.Lab
	ready time.Time

	mu    sync.Mutex // guards res and lease
	res   *report.Result
	lease map[string]string // host -> subnet at ready (and at join, for added hosts)
	watch *agentWatch

	doneMu    sync.Mutex
	done      map[string]chan struct{} // step name -> closed when it completed
	doneAt    map[string]time.Duration
	stepsOver chan struct{} // closed when every step has played (or the timeline stopped)
	failed    bool          // any expectation failed (decides pcap retention)
}

// Run builds the scenario's lab, plays its timeline, checks its
// expectations, tears the lab down and writes the result to o.Out. The
// returned error is about the run itself (bad options, unwritable output);
// a failed expectation or a lab that did not come up is in the Result.
func Run(ctx context.Context, sc *scenarios.Scenario, o Options) (*report.Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Lab == "" {
		o.Lab = sc.Lab
	}
	if o.Label == "" {
		o.Label = sc.Name
	}
	if err := plan.CheckName(o.Lab); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}
	r := &runner{sc: sc, o: o, lease: map[string]string{}, done: map[string]chan struct{}{}, doneAt: map[string]time.Duration{},
		stepsOver: make(chan struct{})}
	r.res = &report.Result{Scenario: sc.Name, Label: o.Label, File: sc.File, Lab: o.Lab, Seed: sc.Seed, Backend: sc.Backend,
		Network: sc.Network.Network.String(), Runtime: string(sc.Runtime), Started: time.Now()}
	for _, s := range sc.Steps {
		if s.Name != "" {
			r.done[s.Name] = make(chan struct{})
		}
	}
	r.play(ctx)
	r.res.Duration = time.Since(r.res.Started)
	r.res.Passed = r.res.Error == "" && !r.failed
	paths, err := report.WriteReports(o.Out, r.res)
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

func fmtOffset(d time.Duration) string { return fmt.Sprintf("+%.2fs", d.Seconds()) }

// play runs the whole scenario; errors land in the result.
func (r *runner) play(ctx context.Context) {
	spec := r.spec()
	r.logf("scenario %s: building lab %q (%d hosts, %s)", r.sc.Name, r.o.Lab, len(r.sc.Hosts), r.sc.Backend)
	l, err := lab.Up(ctx, r.o.StateRoot, spec, lab.UpOptions{Options: lab.Options{Binary: r.o.Binary, Command: "run " + r.sc.Name}, Verify: true})
	if l != nil {
		r.lab = l
		defer func() {
			r.logf("tearing down lab %q", r.o.Lab)
			t, err := l.Down(context.WithoutCancel(ctx))
			if err != nil {
				r.logf("teardown: %v", err)
			} else if len(t.Processes) > 0 {
				r.logf("teardown ended %d processes inside the lab: %v", len(t.Processes), t.Processes)
			}
		}()
	}
	if err != nil {
		r.res.Error = "lab did not come up: " + err.Error()
		r.logf("✗ %s", r.res.Error)
		if l != nil {
			r.collect(true)
		}
		return
	}
	if err := r.applyLinks(); err != nil {
		r.res.Error = err.Error()
		return
	}
	st := l.Snapshot()
	for _, h := range st.Hosts {
		r.recordLeases(&h)
	}
	r.res.Topology = topology(st)
	r.ready = time.Now()
	r.logf("ready: %d hosts up, full ping matrix and wire check passed", len(st.Hosts))
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	r.watch = r.watchAgents(wctx)

	results := schedule(r.sc.Expects, func() { r.playSteps(ctx) }, r.stepsOver,
		func(e *scenarios.Expectation) report.ExpectResult { return r.expect(ctx, e) })
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

// applyLinks puts the hosts' initial link impairments in place.
func (r *runner) applyLinks() error {
	for i, h := range r.sc.Hosts {
		name := plan.Names{}.Host(i + 1)
		if h.Link.LossPercent > 0 {
			if err := r.lab.SetLoss(name, h.Link.LossPercent); err != nil {
				return err
			}
		}
		if h.Link.RateBps > 0 {
			if err := r.lab.SetRate(name, h.Link.RateBps); err != nil {
				return err
			}
		}
	}
	return nil
}

// spec is the lab the scenario asks for.
func (r *runner) spec() plan.Spec {
	nets := []plan.Network{{Config: r.sc.Network}}
	if len(r.sc.Tenants) > 0 {
		nets = nil
		for _, t := range r.sc.Tenants {
			nets = append(nets, plan.Network{Name: t.Name, Config: t.Config})
		}
	}
	s := plan.Spec{
		Name: r.o.Lab, Hosts: len(r.sc.Hosts),
		Networks: nets,
		Underlay: r.sc.Underlay, UnderlayMTU: r.sc.UnderlayMTU,
		Etcd:    plan.Etcd{Members: r.sc.EtcdMembers, Endpoints: r.sc.EtcdEndpoints},
		Runtime: r.sc.Runtime, Seed: r.sc.Seed,
	}
	for _, h := range r.sc.Hosts {
		hs := plan.HostSpec{Containers: h.Containers, AgentArgs: h.AgentArgs, Agent: h.Agent}
		if r.o.Agent.Path != "" {
			hs.Agent = r.o.Agent
		}
		s.PerHost = append(s.PerHost, hs)
		s.Containers = max(s.Containers, h.Containers)
	}
	return s
}

// topology is the lab as the report draws it.
func topology(st *lab.State) report.Topology {
	t := report.Topology{Underlay: st.Underlay.CIDR}
	if len(st.Etcd.Members) > 0 {
		t.EtcdIP = st.Etcd.Members[0].IP
	}
	for _, h := range st.Hosts {
		t.Hosts = append(t.Hosts, topologyHost(&h))
	}
	return t
}

func topologyHost(h *lab.HostState) report.TopologyHost {
	th := report.TopologyHost{Name: h.Name, UnderlayIP: h.UnderlayIP, Subnet: h.Subnet,
		Agent: report.Agent{Path: h.Agent.Path, Version: h.Agent.Version, Ours: h.Agent.Ours}}
	for _, c := range h.Containers {
		th.Containers = append(th.Containers, report.TopologyContainer{Name: c.Name, IP: c.IP, Network: c.Network})
	}
	return th
}

// recordLeases remembers a host's leases as they are now (at ready, or when
// it joined): by host for the first network, by host/network for tenants.
func (r *runner) recordLeases(h *lab.HostState) {
	r.lease[h.Name] = h.Subnet
	for net, sub := range h.Subnets {
		r.lease[h.Name+"/"+net] = sub
	}
}

// schedule plays the timeline (play) while checking every expectation
// that is not final, each on its own goroutine from the start (each waits
// for its own moment). Once play has returned, stepsOver is closed (a check
// waiting on a step that never came stops waiting); once every one of
// those checks has ended as well, and only then, the final checks start: a
// window still open is not the end. The results are in the order of
// expects.
func schedule(expects []scenarios.Expectation, play func(), stepsOver chan struct{},
	check func(*scenarios.Expectation) report.ExpectResult) []report.ExpectResult {
	results := make([]report.ExpectResult, len(expects))
	start := func(wg *sync.WaitGroup, final bool) {
		for i := range expects {
			if (expects[i].When.Kind == scenarios.WhenFinal) != final {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = check(&expects[i])
			}()
		}
	}
	var others, finals sync.WaitGroup
	start(&others, false)
	play()
	close(stepsOver)
	others.Wait()
	start(&finals, true)
	finals.Wait()
	return results
}
