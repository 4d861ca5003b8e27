package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/overlaylab/overlaylab/internal/procfs"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// Config is one data-plane configuration: a backend (with agent flags), or
// the baseline, which measures host to host over the underlay with no
// overlay in the path.
type Config struct {
	Name      string   `json:"name"`
	Backend   string   `json:"backend"`
	AgentArgs []string `json:"agentArgs,omitempty"`
	Baseline  bool     `json:"baseline,omitempty"`
	// Workers is the udp fast datapath's --udp-workers (0: not a udp-fast
	// configuration).
	Workers int `json:"workers,omitempty"`
	// ImpairRTT and ImpairTCP, when set, go on h1's underlay link (the lab's
	// userspace link emulator) for the round-trip and the throughput
	// measurements respectively.
	ImpairRTT *lab.Impairment `json:"impairRTT,omitempty"`
	ImpairTCP *lab.Impairment `json:"impairTCP,omitempty"`
	labSuffix string          // the lab is named <prefix><labSuffix>
	profile   bool            // take CPU profiles of the agents (needs --pprof)
}

// Configuration names.
const (
	CfgBaseline  = "baseline"
	CfgUDPFast   = "udp-fast"
	CfgUDPFastMQ = "udp-fast-mq"
	CfgUDPSimple = "udp-simple"
	CfgVXLAN     = config.BackendVXLAN
	CfgHostGW    = config.BackendHostGW
	// CfgImpaired is vxlan through h1's link emulator: RTT with 10 ms
	// delay and 2 ms jitter each way, TCP with the delay only.
	CfgImpaired = "vxlan-impaired"
)

// DefaultConfigs lists every configuration, in the order they are measured
// within a round. The baseline's lab runs host-gw agents, which stay out of
// a host-to-host path; they are measured like every other agent. udp-fast
// is the single-queue fast datapath (one worker); udp-fast-mq has one
// worker per CPU of this machine (at least 2).
func DefaultConfigs() []Config {
	mq := max(2, runtime.NumCPU())
	return []Config{
		{Name: CfgBaseline, Backend: config.BackendHostGW, Baseline: true, labSuffix: "base"},
		{Name: CfgUDPFast, Backend: config.BackendUDP, AgentArgs: []string{"--udp-mode=fast", "--udp-workers=1", "--pprof"}, Workers: 1,
			labSuffix: "udpf", profile: true},
		{Name: CfgUDPFastMQ, Backend: config.BackendUDP, AgentArgs: []string{"--udp-mode=fast", fmt.Sprintf("--udp-workers=%d", mq), "--pprof"}, Workers: mq,
			labSuffix: "udpm", profile: true},
		{Name: CfgUDPSimple, Backend: config.BackendUDP, AgentArgs: []string{"--udp-mode=simple", "--pprof"}, labSuffix: "udps", profile: true},
		{Name: CfgVXLAN, Backend: config.BackendVXLAN, labSuffix: "vxl"},
		{Name: CfgHostGW, Backend: config.BackendHostGW, labSuffix: "hgw"},
		{Name: CfgImpaired, Backend: config.BackendVXLAN, labSuffix: "imp",
			ImpairRTT: &lab.Impairment{Delay: 10 * time.Millisecond, Jitter: 2 * time.Millisecond, Seed: 1},
			ImpairTCP: &lab.Impairment{Delay: 10 * time.Millisecond, Seed: 1}},
	}
}

// SelectConfigs returns the named configurations in the standard order;
// nil or empty names select all.
func SelectConfigs(names []string) ([]Config, error) {
	all := DefaultConfigs()
	if len(names) == 0 {
		return all, nil
	}
	var known []string
	for _, c := range all {
		known = append(known, c.Name)
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("--configs: unknown configuration %q (known: %s)", n, strings.Join(known, ", "))
		}
		want[n] = true
	}
	var out []Config
	for _, c := range all {
		if want[c.Name] {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--configs: no configuration selected")
	}
	return out, nil
}

// Metric is one measured quantity per configuration and round.
type Metric struct {
	Key    string `json:"key"`
	Label  string `json:"label"`
	Unit   string `json:"unit"`
	Digits int    `json:"-"`
}

// Metric keys.
const (
	MTCP1   = "tcp1_gbps"
	MTCP4   = "tcp4_gbps"
	MRTT50  = "rtt_p50_us"
	MRTT99  = "rtt_p99_us"
	MRTT1C  = "rtt_p50_1cpu_us"
	MCPU    = "agent_cpu_pct"
	MRSS    = "agent_rss_mib"
	MAnon   = "agent_rss_anon_mib"
	MRTTLos = "rtt_lost"
)

// Metrics are the table's columns, in order.
var Metrics = []Metric{
	{Key: MTCP1, Label: "TCP 1 stream", Unit: "Gbit/s", Digits: 2},
	{Key: MTCP4, Label: "TCP 4 streams", Unit: "Gbit/s", Digits: 2},
	{Key: MRTT50, Label: "RTT p50", Unit: "µs", Digits: 0},
	{Key: MRTT99, Label: "RTT p99", Unit: "µs", Digits: 0},
	{Key: MRTT1C, Label: "RTT p50 on one CPU", Unit: "µs", Digits: 0},
	{Key: MCPU, Label: "agent CPU", Unit: "%", Digits: 1},
	{Key: MRSS, Label: "agent RSS", Unit: "MiB", Digits: 1},
	{Key: MAnon, Label: "agent anon RSS", Unit: "MiB", Digits: 1},
}

// Options configure a data-plane run.
type Options struct {
	Configs       []Config      // nil = DefaultConfigs()
	Rounds        int           // default 3
	Duration      time.Duration // per transfer, warm-up included; default 5s
	Warmup        time.Duration // default 500ms
	Probes        int           // ICMP probes per round; default 200
	ProbeInterval time.Duration // default 5ms
	StateRoot     string        // default plan.DefaultStateRoot
	Binary        string        // the overlaylab binary the labs run
	LabPrefix     string        // lab names are <prefix><suffix>; default "bn" (at most 3 characters)
	Command       string        // how the run was invoked, for the report
	Progress      io.Writer     // nil = quiet
}

func (o *Options) defaults() error {
	if o.Configs == nil {
		o.Configs = DefaultConfigs()
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Duration == 0 {
		o.Duration = 5 * time.Second
	}
	if o.Warmup == 0 {
		o.Warmup = 500 * time.Millisecond
	}
	if o.Probes == 0 {
		o.Probes = 200
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 5 * time.Millisecond
	}
	if o.StateRoot == "" {
		o.StateRoot = plan.DefaultStateRoot
	}
	if o.LabPrefix == "" {
		o.LabPrefix = "bn"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	switch {
	case o.Rounds < 1:
		return fmt.Errorf("--rounds %d: need at least 1", o.Rounds)
	case o.Duration <= o.Warmup:
		return fmt.Errorf("--duration %s: must be longer than the %s warm-up", o.Duration, o.Warmup)
	case len(o.LabPrefix) > 3:
		return fmt.Errorf("lab prefix %q: at most 3 characters (lab names stop at 7)", o.LabPrefix)
	case o.Binary == "":
		return errors.New("no overlaylab binary to run the labs with")
	}
	return nil
}

// Report is the outcome of a data-plane run.
type Report struct {
	Date            time.Time      `json:"date"`
	Machine         Machine        `json:"machine"`
	Command         string         `json:"command"`
	Rounds          int            `json:"rounds"`
	DurationSec     float64        `json:"durationSec"`
	WarmupSec       float64        `json:"warmupSec"`
	Probes          int            `json:"probes"`
	ProbeIntervalMs float64        `json:"probeIntervalMs"`
	Metrics         []Metric       `json:"metrics"`
	Configs         []ConfigResult `json:"configs"`
	Ratios          []Ratio        `json:"ratios"`
	Targets         []Target       `json:"targets"`
	ElapsedSec      float64        `json:"elapsedSec"`
}

// ConfigResult is one configuration's rounds and their summary.
type ConfigResult struct {
	Config
	Lab     string             `json:"lab"`
	Path    string             `json:"path,omitempty"` // what was measured, e.g. "h1/c1 10.10.3.2 → h2/c1 10.10.9.2, MTU 1450"
	Error   string             `json:"error,omitempty"`
	Rounds  []RoundResult      `json:"rounds"`
	Summary map[string]Summary `json:"summary"`
	// Profiles are CPU profiles of both agents during the first round's
	// one-stream transfer (udp configurations only).
	Profiles []AgentProfile `json:"profiles,omitempty"`
}

// RoundResult holds one round's figures of one configuration; a metric
// that could not be measured is absent and the reason is in Errors.
type RoundResult struct {
	Round  int                `json:"round"`
	Values map[string]float64 `json:"values"`
	Errors []string           `json:"errors,omitempty"`
}

// OK reports whether the configuration ran.
func (c *ConfigResult) OK() bool { return c.Error == "" }

// Median returns the median of a metric, if measured.
func (c *ConfigResult) Median(metric string) (float64, bool) {
	if c == nil || !c.OK() {
		return 0, false
	}
	s, ok := c.Summary[metric]
	if !ok || s.N == 0 {
		return 0, false
	}
	return s.Median, true
}

// Config finds a configuration's result.
func (r *Report) Config(name string) *ConfigResult {
	for i := range r.Configs {
		if r.Configs[i].Name == name {
			return &r.Configs[i]
		}
	}
	return nil
}

// runner is one configuration's live lab.
type runner struct {
	res *ConfigResult
	st  *lab.State
	// from and to: the traffic's endpoints.
	fromNS, toNS string
	toIP         netip.Addr
	agents       []int
	cfg          Config
	profiles     []AgentProfile
}

// Run brings up one lab per configuration, measures every configuration
// once per round, interleaved (round 1: every configuration, round 2: ...),
// so that a drift of the machine spreads over all of them, and tears every
// lab down, on error and cancellation too. A configuration that does not
// come up is reported as such; the others are still measured.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("overlaylab bench needs root to build its labs (network namespaces): run it with sudo")
	}
	started := time.Now()
	rep := &Report{
		Date: started.UTC().Truncate(time.Second), Machine: ReadMachine(), Command: o.Command,
		Rounds: o.Rounds, DurationSec: o.Duration.Seconds(), WarmupSec: o.Warmup.Seconds(),
		Probes: o.Probes, ProbeIntervalMs: float64(o.ProbeInterval) / float64(time.Millisecond),
		Metrics: Metrics,
	}
	pf := func(format string, args ...any) { fmt.Fprintf(o.Progress, format, args...) }

	var ours []string // labs this run created (or tried to): torn down at the end
	defer func() {
		if len(ours) == 0 {
			return
		}
		pf("tearing down %s ...\n", plural(len(ours), "lab"))
		for _, name := range ours {
			if _, err := lab.Down(context.Background(), o.StateRoot, name, lab.Options{Binary: o.Binary, Command: "bench"}); err != nil {
				pf("  %s: %v\n", name, err)
			}
		}
	}()

	pf("bench: %s, %s, %s per transfer (first %s not measured), %d RTT probes every %s\n",
		plural(len(o.Configs), "configuration"), plural(o.Rounds, "round"), o.Duration, o.Warmup, o.Probes, o.ProbeInterval)
	var runners []*runner
	rep.Configs = make([]ConfigResult, len(o.Configs))
	for i, c := range o.Configs {
		res := &rep.Configs[i]
		*res = ConfigResult{Config: c, Lab: o.LabPrefix + c.labSuffix, Rounds: []RoundResult{}, Summary: map[string]Summary{}}
		if ctx.Err() != nil {
			res.Error = "not started: interrupted"
			continue
		}
		t0 := time.Now()
		r, err := bringUp(ctx, o, c, res, &ours)
		if err != nil {
			res.Error = err.Error()
			pf("  %-10s lab %-7s did not come up: %s\n", c.Name, res.Lab, shortReason(res.Error))
			continue
		}
		pf("  %-10s lab %-7s up in %s: %s\n", c.Name, res.Lab, time.Since(t0).Round(10*time.Millisecond), res.Path)
		runners = append(runners, r)
	}

	runRounds(ctx, o, runners, pf)
	summarize(rep, ctx.Err() != nil)
	rep.Ratios = computeRatios(rep)
	rep.Targets = evaluateTargets(rep)
	rep.ElapsedSec = time.Since(started).Round(time.Second).Seconds()
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("bench interrupted: %w", err)
	}
	if len(runners) == 0 {
		return rep, errors.New("no configuration came up")
	}
	return rep, nil
}

// impair puts im on h1's underlay link (nothing when nil), through the lab's
// handle like `overlaylab impair`.
func (r *runner) impair(ctx context.Context, o Options, im *lab.Impairment) error {
	if im == nil {
		return nil
	}
	l, err := lab.Open(ctx, o.StateRoot, r.res.Lab, lab.Options{Binary: o.Binary, Command: "bench"})
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Impair(ctx, r.st.Hosts[0].Name, *im)
}

// runRounds measures every configuration once per round, interleaved.
func runRounds(ctx context.Context, o Options, runners []*runner, pf func(string, ...any)) {
	for round := 1; round <= o.Rounds && len(runners) > 0; round++ {
		pf("round %d/%d\n", round, o.Rounds)
		for _, r := range runners {
			if ctx.Err() != nil {
				return
			}
			rr := r.measure(ctx, o, round)
			if ctx.Err() != nil {
				return // an interrupted round is not a measurement
			}
			r.res.Rounds = append(r.res.Rounds, rr)
			if r.profiles != nil && r.res.Profiles == nil {
				r.res.Profiles = r.profiles
			}
			pf("  %-10s %s\n", r.res.Name, roundLine(rr))
		}
	}
}

// summarize fills each configuration's summary over its rounds, and says
// why one that came up has none.
func summarize(rep *Report, interrupted bool) {
	for i := range rep.Configs {
		c := &rep.Configs[i]
		for _, m := range Metrics {
			var xs []float64
			for _, rr := range c.Rounds {
				if v, ok := rr.Values[m.Key]; ok {
					xs = append(xs, v)
				}
			}
			if len(xs) > 0 {
				c.Summary[m.Key] = Summarize(xs)
			}
		}
		if c.OK() && len(c.Summary) == 0 && interrupted {
			c.Error = "interrupted before it was measured"
		} else if c.OK() && len(c.Summary) == 0 {
			c.Error = "no round produced a measurement"
			for _, rr := range c.Rounds {
				if len(rr.Errors) > 0 {
					c.Error += ": " + rr.Errors[0]
					break
				}
			}
		}
	}
}

// bringUp builds a configuration's lab and checks that its path answers.
func bringUp(ctx context.Context, o Options, c Config, res *ConfigResult, ours *[]string) (*runner, error) {
	if lab.Exists(o.StateRoot, res.Lab) {
		// Not ours to remove: maybe a lab someone is using, maybe a
		// leftover of an interrupted bench.
		return nil, fmt.Errorf("lab %q already exists: remove it with `overlaylab down --name %s` and run again", res.Lab, res.Lab)
	}
	containers := 1
	if c.Baseline {
		containers = 0
	}
	nw, err := plan.NewNetwork("", plan.DefaultNetwork, 0, c.Backend)
	if err != nil {
		return nil, err
	}
	spec := plan.Spec{
		Name: res.Lab, Hosts: 2, Containers: containers, Networks: []plan.Network{nw},
		Underlay: netip.MustParsePrefix(plan.DefaultUnderlay), AgentArgs: c.AgentArgs, Seed: 1,
	}
	*ours = append(*ours, res.Lab)
	l, err := lab.Up(ctx, o.StateRoot, spec, lab.UpOptions{Options: lab.Options{Binary: o.Binary, Command: "bench"}})
	if err != nil {
		return nil, err
	}
	st := l.Snapshot()
	l.Close()
	r := &runner{res: res, st: st, cfg: c}
	h1, h2 := &st.Hosts[0], &st.Hosts[1]
	r.agents = []int{h1.AgentPID, h2.AgentPID}
	var eps []lab.Endpoint
	if c.Baseline {
		r.fromNS, r.toNS = h1.Netns, h2.Netns
		r.toIP = netip.MustParseAddr(h2.UnderlayIP)
		eps = []lab.Endpoint{
			{Name: "h1", Netns: h1.Netns, IP: netip.MustParseAddr(h1.UnderlayIP)},
			{Name: "h2", Netns: h2.Netns, IP: r.toIP},
		}
		mtu := st.Underlay.MTU
		if mtu == 0 {
			mtu = 1500
		}
		res.Path = fmt.Sprintf("h1 eth0 %s → h2 eth0 %s, no overlay, MTU %d", h1.UnderlayIP, h2.UnderlayIP, mtu)
	} else {
		if len(h1.Containers) == 0 || len(h2.Containers) == 0 {
			return nil, fmt.Errorf("lab %s has no containers to measure between", res.Lab)
		}
		c1, c2 := h1.Containers[0], h2.Containers[0]
		r.fromNS, r.toNS = c1.Netns, c2.Netns
		r.toIP = netip.MustParseAddr(c2.IP)
		eps = st.Endpoints("")
		res.Path = fmt.Sprintf("h1/%s %s → h2/%s %s, MTU %d", c1.Name, c1.IP, c2.Name, c2.IP, h1.MTU)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	all := func(i, j int) bool { return i != j }
	counts, err := lab.Probe(pctx, eps, all, lab.ProbeOptions{Interval: 200 * time.Millisecond, UntilAnswered: true})
	if err != nil {
		return nil, fmt.Errorf("connectivity check: %w", err)
	}
	m := lab.Judge(eps, all, counts, lab.Want{Kind: lab.WantAll, Once: true})
	if !m.OK() {
		return nil, fmt.Errorf("connectivity check failed:\n%s", m)
	}
	return r, nil
}

// measure runs one round of one configuration: RTT on the idle path, then
// one stream (while the agents are sampled), then four streams.
func (r *runner) measure(ctx context.Context, o Options, round int) RoundResult {
	rr := RoundResult{Round: round, Values: map[string]float64{}}
	fail := func(what string, err error) {
		rr.Errors = append(rr.Errors, what+": "+err.Error())
	}
	if err := r.impair(ctx, o, r.cfg.ImpairRTT); err != nil {
		fail("impair for rtt", err)
	}
	rtt, err := lab.RTTProbe{Netns: r.fromNS, Dst: r.toIP, Warmup: 5, Count: o.Probes, Interval: o.ProbeInterval}.Run(ctx)
	if err != nil {
		fail("rtt", err)
	} else {
		ps := Percentiles(rtt.Micros(), 50, 99)
		rr.Values[MRTT50], rr.Values[MRTT99] = ps[0], ps[1]
		rr.Values[MRTTLos] = float64(rtt.Sent - rtt.Received)
	}
	// The same probe with the agents and the prober on one CPU.
	if _, restore, err := pinTasks(append([]int{os.Getpid()}, r.agents...)); err != nil {
		fail("rtt on one CPU", err)
	} else {
		rtt, err := lab.RTTProbe{Netns: r.fromNS, Dst: r.toIP, Warmup: 5, Count: o.Probes, Interval: o.ProbeInterval}.Run(ctx)
		restore()
		if err != nil {
			fail("rtt on one CPU", err)
		} else {
			rr.Values[MRTT1C] = Percentiles(rtt.Micros(), 50)[0]
		}
	}
	if err := r.impair(ctx, o, r.cfg.ImpairTCP); err != nil {
		fail("impair for tcp", err)
	}
	pause(ctx)

	var usage AgentUsage
	var uerr error
	during := func(ctx context.Context) { usage, uerr = SampleAgents(ctx, r.agents, 100*time.Millisecond) }
	if r.cfg.profile && round == 1 && len(r.st.Hosts) >= 2 {
		sample := during
		during = func(ctx context.Context) {
			var wg sync.WaitGroup
			secs := max(int((o.Duration-o.Warmup)/time.Second), 1)
			profs := make([]AgentProfile, 2)
			for k, role := range []string{"sender side (encapsulates)", "receiver side (decapsulates)"} {
				h := r.st.Hosts[k]
				profs[k] = AgentProfile{Host: h.Name, Role: role, Seconds: secs}
				wg.Add(1)
				go func() {
					defer wg.Done()
					top, err := fetchProfile(ctx, h.Netns, 9285, secs, 12)
					profs[k].Top = top
					if err != nil {
						profs[k].Error = err.Error()
					}
				}()
			}
			sample(ctx)
			wg.Wait()
			r.profiles = profs
		}
	}
	t1 := Transfer{FromNetns: r.fromNS, ToNetns: r.toNS, ToIP: r.toIP, Streams: 1, Duration: o.Duration, Warmup: o.Warmup,
		During: during}
	if res, err := t1.Run(ctx); err != nil {
		fail("tcp 1 stream", err)
	} else {
		rr.Values[MTCP1] = res.Gbps()
		if uerr != nil {
			fail("agent usage", uerr)
		} else {
			rr.Values[MCPU], rr.Values[MRSS], rr.Values[MAnon] = usage.MaxCPUPercent, usage.MaxRSSMiB, usage.MaxAnonMiB
		}
	}
	pause(ctx)

	t4 := Transfer{FromNetns: r.fromNS, ToNetns: r.toNS, ToIP: r.toIP, Streams: 4, Duration: o.Duration, Warmup: o.Warmup}
	if res, err := t4.Run(ctx); err != nil {
		fail("tcp 4 streams", err)
	} else {
		rr.Values[MTCP4] = res.Gbps()
	}
	for _, h := range r.st.Hosts {
		if !r.st.AgentAlive(h.Name) {
			fail("agent", fmt.Errorf("the agent on %s (pid %d) is gone; its log: %s", h.Name, h.AgentPID, h.AgentLog))
		}
	}
	pause(ctx)
	return rr
}

// pause lets queues and TIME_WAIT sockets settle between measurements.
func pause(ctx context.Context) { _ = sleepCtx(ctx, 300*time.Millisecond) }

// AgentUsage is what the agents used during a sampling window.
type AgentUsage struct {
	CPUPercent    []float64 // per agent: (utime+stime) delta / wall time × 100
	MaxCPUPercent float64
	MaxRSSMiB     float64 // the largest VmRSS of any agent in any sample
	MaxAnonMiB    float64 // the largest RssAnon likewise
}

// SampleAgents samples the processes' CPU time at the start and the end of
// the window (until ctx ends) and their RSS every interval in between.
func SampleAgents(ctx context.Context, pids []int, interval time.Duration) (AgentUsage, error) {
	var u AgentUsage
	start := make([]uint64, len(pids))
	for i, pid := range pids {
		t, err := procfs.CPUTicks(pid)
		if err != nil {
			return u, err
		}
		start[i] = t
	}
	t0 := time.Now()
	var maxKiB, maxAnon uint64
	sample := func() error {
		for _, pid := range pids {
			kib, anon, err := procfs.RSSKiB(pid)
			if err != nil {
				return err
			}
			maxKiB, maxAnon = max(maxKiB, kib), max(maxAnon, anon)
		}
		return nil
	}
	if err := sample(); err != nil {
		return u, err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if err := sample(); err != nil {
				return u, err
			}
		}
	}
	wall := time.Since(t0).Seconds()
	for i, pid := range pids {
		t, err := procfs.CPUTicks(pid)
		if err != nil {
			return u, err
		}
		pct := float64(t-start[i]) / procfs.UserHZ / wall * 100
		u.CPUPercent = append(u.CPUPercent, pct)
		u.MaxCPUPercent = max(u.MaxCPUPercent, pct)
	}
	u.MaxRSSMiB = float64(maxKiB) / 1024
	u.MaxAnonMiB = float64(maxAnon) / 1024
	return u, nil
}

func roundLine(rr RoundResult) string {
	var parts []string
	for _, m := range Metrics {
		if v, ok := rr.Values[m.Key]; ok {
			parts = append(parts, fmt.Sprintf("%s %s %s", m.Label, formatFloat(v, m.Digits), m.Unit))
		}
	}
	s := strings.Join(parts, ", ")
	if lost := rr.Values[MRTTLos]; lost > 0 {
		s += fmt.Sprintf(" (%.0f echoes unanswered)", lost)
	}
	for _, e := range rr.Errors {
		s += "\n    error: " + firstLine(e)
	}
	return s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
