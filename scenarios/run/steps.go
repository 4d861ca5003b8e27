package run

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

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
		detail := stepDetail(step)
		r.logf("▶ %s: %s", step.Label(), describeStep(step, detail))
		t0 := time.Now()
		err := r.do(ctx, step)
		sr := report.StepResult{Name: step.Label(), Action: string(step.Action), Host: step.Host, Detail: detail,
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
	case <-r.stepsOver: // the timeline ended without it (an earlier step failed)
	}
}

// describeStep is a step in the live log: its action, host and detail.
func describeStep(s *scenarios.Step, detail string) string {
	d := string(s.Action)
	if s.Host != "" {
		d += " " + s.Host
	}
	if detail != "" {
		d += " (" + detail + ")"
	}
	return d
}

func stepDetail(s *scenarios.Step) string {
	switch s.Action {
	case scenarios.ActionAgentKill:
		return "signal " + s.Signal
	case scenarios.ActionEtcdStop, scenarios.ActionEtcdStart:
		return "member " + s.Member
	case scenarios.ActionLoss:
		return fmt.Sprintf("%g%%", s.Percent)
	case scenarios.ActionRate:
		if s.RateBps == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d bit/s", s.RateBps)
	case scenarios.ActionHostAdd:
		return fmt.Sprintf("%d containers", s.Containers)
	case scenarios.ActionConfigSet:
		return truncate(s.Config, 60)
	case scenarios.ActionAgentStart:
		if s.NoWait {
			return "not waiting for ready"
		}
	case scenarios.ActionImpair:
		return s.Impair.String()
	case scenarios.ActionLinkMTU:
		return fmt.Sprintf("mtu %d", s.MTU)
	case scenarios.ActionEtcdWipe:
		if s.KeepConfig {
			return "keeping the network config"
		}
	case scenarios.ActionOffload:
		return offloadDetail(s.Offload)
	case scenarios.ActionAgentUpgrade:
		return s.Binary
	}
	return ""
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// do plays one step on the lab.
func (r *runner) do(ctx context.Context, s *scenarios.Step) error {
	l := r.lab
	switch s.Action {
	case scenarios.ActionAgentKill:
		sig, err := plan.ParseSignal(s.Signal)
		if err != nil {
			return err
		}
		return l.KillAgent(s.Host, sig)
	case scenarios.ActionAgentStart:
		return l.StartAgent(ctx, s.Host, lab.StartAgentOptions{NoWait: s.NoWait})
	case scenarios.ActionLinkDown, scenarios.ActionLinkUp:
		return l.SetLink(s.Host, s.Action == scenarios.ActionLinkUp)
	case scenarios.ActionLoss:
		return l.SetLoss(s.Host, s.Percent)
	case scenarios.ActionRate:
		return l.SetRate(s.Host, s.RateBps)
	case scenarios.ActionEtcdStop:
		k, err := r.member(ctx, s.Member)
		if err != nil {
			return err
		}
		return l.StopEtcd(k)
	case scenarios.ActionEtcdStart:
		return r.etcdStart(ctx, s.Member)
	case scenarios.ActionEtcdPartition, scenarios.ActionEtcdHeal:
		return l.SetPartition(s.Host, s.Action == scenarios.ActionEtcdPartition)
	case scenarios.ActionLeaseDelete:
		return l.DeleteLease(ctx, s.Host, s.Network)
	case scenarios.ActionHostAdd:
		return r.hostAdd(ctx, s)
	case scenarios.ActionHostRemove:
		if err := l.RemoveHost(ctx, s.Host, true); err != nil {
			return err
		}
		at := r.since()
		r.mu.Lock()
		defer r.mu.Unlock()
		for i := range r.res.Topology.Hosts {
			if r.res.Topology.Hosts[i].Name == s.Host {
				r.res.Topology.Hosts[i].RemovedAt = &at
			}
		}
		return nil
	case scenarios.ActionConfigSet:
		return l.PutConfig(ctx, s.Network, s.Config)
	case scenarios.ActionImpair:
		im := s.Impair
		seed := im.Seed
		if seed == 0 {
			seed = r.sc.Seed // a run is a reproduction: the scenario's seed by default
		}
		return l.Impair(ctx, s.Host, lab.Impairment{Delay: im.Delay, Jitter: im.Jitter, Loss: im.Loss, Reorder: im.Reorder,
			Duplicate: im.Duplicate, Corrupt: im.Corrupt, RateBps: im.RateBps, Direction: im.Direction, Match: im.Match, Seed: seed})
	case scenarios.ActionImpairClear:
		return l.ImpairClear(ctx, s.Host)
	case scenarios.ActionLinkMTU:
		return l.SetLinkMTU(ctx, s.Host, s.MTU)
	case scenarios.ActionEtcdCompact:
		rev, err := l.EtcdCompact(ctx)
		if err == nil {
			r.logf("  compacted etcd at revision %d", rev)
		}
		return err
	case scenarios.ActionEtcdWipe:
		return l.EtcdWipe(ctx, s.KeepConfig)
	case scenarios.ActionOffload:
		changed, err := l.SetOffloads(s.Host, s.Offload.Dev, offloadMap(s.Offload))
		if err == nil {
			r.logf("  %s %s: %s", s.Host, s.Offload.Dev, strings.Join(changed, ", "))
		}
		return err
	case scenarios.ActionAgentUpgrade:
		return l.UpgradeAgent(ctx, s.Host, s.Binary, false)
	}
	return fmt.Errorf("unknown action %q", s.Action)
}

type offloadSwitch struct {
	name string
	on   *bool // nil: left as it is
}

// offloads names a step's offload switches, in the order reports list them.
func offloads(o *scenarios.Offload) []offloadSwitch {
	return []offloadSwitch{{"tx-checksum", o.TxChecksum}, {"tso", o.TSO}, {"gro", o.GRO}}
}

// offloadMap is the switches a step sets, as the lab takes them.
func offloadMap(o *scenarios.Offload) map[string]bool {
	m := map[string]bool{}
	for _, x := range offloads(o) {
		if x.on != nil {
			m[x.name] = *x.on
		}
	}
	return m
}

func offloadDetail(o *scenarios.Offload) string {
	var parts []string
	for _, x := range offloads(o) {
		if x.on != nil {
			parts = append(parts, x.name+" "+map[bool]string{true: "on", false: "off"}[*x.on])
		}
	}
	return o.Dev + ": " + strings.Join(parts, ", ")
}

func (r *runner) hostAdd(ctx context.Context, s *scenarios.Step) error {
	o := lab.HostOptions{Containers: s.Containers, AgentArgs: s.AgentArgs, Agent: s.Agent}
	if r.o.Agent.Path != "" {
		o.Agent = r.o.Agent
	}
	h, err := r.lab.AddHost(ctx, o)
	if err != nil {
		return err
	}
	if h.Name != s.Host {
		return fmt.Errorf("the lab named the new host %s, the scenario expected %s", h.Name, s.Host)
	}
	at := r.since()
	th := topologyHost(h)
	th.AddedAt = &at
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLeases(h)
	r.res.Topology.Hosts = append(r.res.Topology.Hosts, th)
	return nil
}

func (r *runner) etcdStart(ctx context.Context, member string) error {
	if member != "stopped" {
		k, err := r.member(ctx, member)
		if err != nil {
			return err
		}
		return r.lab.StartEtcd(ctx, k)
	}
	st := r.lab.Snapshot()
	var errs []error
	for k := 1; k <= st.EtcdMembers(); k++ {
		if !st.EtcdMemberAlive(k) {
			errs = append(errs, r.lab.StartEtcd(ctx, k))
		}
	}
	return errors.Join(errs...)
}

// member resolves an etcd-stop/start target: "leader", "follower" (a
// running member that does not lead) or a 1-based index.
func (r *runner) member(ctx context.Context, m string) (int, error) {
	switch m {
	case "", "1":
		return 1, nil
	case "leader", "follower":
		leader, err := r.lab.EtcdLeader(ctx)
		if err != nil {
			return 0, err
		}
		if m == "leader" {
			return leader, nil
		}
		st := r.lab.Snapshot()
		for k := 1; k <= st.EtcdMembers(); k++ {
			if k != leader && st.EtcdMemberAlive(k) {
				return k, nil
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
