package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/internal/procfs"
	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// SectionScale is the doc section `overlaylab bench scale` rewrites.
const SectionScale = "scale"

// ScaleOptions configure a scale run: for each host count, a lab built
// exactly as `overlaylab up` builds it (verify included: the ping matrix over
// every pair of hosts and the wire check), measured, then torn down.
type ScaleOptions struct {
	Hosts      []int  // host counts, one lab each; default 500
	Containers int    // per host; default 1
	Underlay   string // default 172.20.0.0/16
	Backend    string // default the lab's (udp)
	StateRoot  string // default plan.DefaultStateRoot
	Binary     string // the overlaylab binary the labs run
	LabPrefix  string // lab names are <prefix><hosts>; default "scale"
	Command    string // how the run was invoked, for the report
	Progress   io.Writer
}

func (o *ScaleOptions) defaults() error {
	if len(o.Hosts) == 0 {
		o.Hosts = []int{500}
	}
	if o.Containers == 0 {
		o.Containers = 1
	}
	if o.Underlay == "" {
		o.Underlay = "172.20.0.0/16"
	}
	if o.Backend == "" {
		o.Backend = config.BackendUDP
	}
	if o.StateRoot == "" {
		o.StateRoot = plan.DefaultStateRoot
	}
	if o.LabPrefix == "" {
		o.LabPrefix = "scale"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Containers < 0 {
		return fmt.Errorf("--containers %d: need 0 or more", o.Containers)
	}
	for _, n := range o.Hosts {
		if n < 2 {
			return fmt.Errorf("--hosts %d: need at least 2", n)
		}
	}
	if _, err := netip.ParsePrefix(o.Underlay); err != nil {
		return fmt.Errorf("--underlay %q: %v", o.Underlay, err)
	}
	return nil
}

// ScaleRun is one lab of the run.
type ScaleRun struct {
	Lab        string      `json:"lab"`
	Hosts      int         `json:"hosts"`
	Containers int         `json:"containers"` // per host
	Backend    string      `json:"backend"`
	UpMs       float64     `json:"upMs"` // up, verify included
	Phases     []lab.Phase `json:"phases"`
	DownMs     float64     `json:"downMs"`
	// AgentRSSKiB and AgentAnonKiB are the agents' mean resident set and
	// its private (anonymous) part; the rest is the binary's pages, shared
	// by every agent.
	AgentRSSKiB  float64 `json:"agentRssKiB"`
	AgentAnonKiB float64 `json:"agentAnonKiB"`
	EtcdRSSKiB   float64 `json:"etcdRssKiB"`
	// MachineKiBPerHost is the drop of the machine's MemAvailable from
	// before up to after it, per host: agents, etcd, and the kernel's
	// namespaces, links, routes and neighbours together.
	MachineKiBPerHost float64 `json:"machineKiBPerHost"`
	Error             string  `json:"error,omitempty"`
}

// ScaleReport is the outcome of a scale run.
type ScaleReport struct {
	Date     time.Time  `json:"date"`
	Machine  Machine    `json:"machine"`
	Command  string     `json:"command"`
	Underlay string     `json:"underlay"`
	Runs     []ScaleRun `json:"runs"`
}

// RunScale builds, measures and removes one lab per host count, in order.
// A lab that fails is reported (and removed) and the run goes on.
func RunScale(ctx context.Context, o ScaleOptions) (*ScaleReport, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	rep := &ScaleReport{Date: time.Now().UTC(), Command: o.Command, Underlay: o.Underlay}
	for i, n := range o.Hosts {
		name := fmt.Sprintf("%s%d", o.LabPrefix, n)
		if lab.Exists(o.StateRoot, name) {
			return rep, fmt.Errorf("lab %q already exists: remove it with `overlaylab down --name %s` and run again", name, name)
		}
		// The kernel frees a removed lab's namespaces in the background,
		// minutes of work for a large one (this run's or an earlier one's):
		// measure each lab on a quiet machine.
		fmt.Fprintf(o.Progress, "  waiting for the machine to settle\n")
		waitQuiet(ctx, 5*time.Minute)
		if i == 0 {
			rep.Machine = ReadMachine()
		}
		fmt.Fprintf(o.Progress, "• %d hosts × %d containers, %s (lab %s)\n", n, o.Containers, o.Backend, name)
		run := scaleOne(ctx, o, name, n)
		if run.Error != "" {
			fmt.Fprintf(o.Progress, "  failed: %s\n", run.Error)
		} else {
			fmt.Fprintf(o.Progress, "  up %.1f s (%s), down %.1f s, %.1f MiB per host\n",
				run.UpMs/1000, phaseLine(run.Phases), run.DownMs/1000, run.MachineKiBPerHost/1024)
		}
		rep.Runs = append(rep.Runs, run)
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func scaleOne(ctx context.Context, o ScaleOptions, name string, hosts int) ScaleRun {
	run := ScaleRun{Lab: name, Hosts: hosts, Containers: o.Containers, Backend: o.Backend}
	nw, err := plan.NewNetwork("", plan.DefaultNetworkFor(hosts), 0, o.Backend)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	spec := plan.Spec{
		Name: name, Hosts: hosts, Containers: o.Containers, Networks: []plan.Network{nw},
		Underlay: netip.MustParsePrefix(o.Underlay),
	}
	availBefore, _ := procfs.MemInfoKiB("MemAvailable")
	start := time.Now()
	l, err := lab.Up(ctx, o.StateRoot, spec, lab.UpOptions{Options: lab.Options{Binary: o.Binary, Command: "bench scale"}, Verify: true})
	run.UpMs = ms(time.Since(start))
	if l != nil {
		run.Phases = l.Phases()
		st := l.Snapshot()
		availAfter, _ := procfs.MemInfoKiB("MemAvailable")
		if availBefore > availAfter {
			run.MachineKiBPerHost = float64(availBefore-availAfter) / float64(hosts)
		}
		run.AgentRSSKiB, run.AgentAnonKiB = meanRSS(agentPIDs(st))
		var etcd []int
		for _, m := range st.Etcd.Members {
			etcd = append(etcd, m.PID)
		}
		run.EtcdRSSKiB, _ = meanRSS(etcd)
		l.Close()
	}
	if err != nil {
		run.Error = err.Error()
	}
	// Up removes what it built when the build fails; a lab that came up
	// (verified or not) is ours to remove.
	if lab.Exists(o.StateRoot, name) {
		start = time.Now()
		if _, derr := lab.Down(context.WithoutCancel(ctx), o.StateRoot, name, lab.Options{Binary: o.Binary, Command: "bench scale"}); derr != nil {
			run.Error = strings.TrimSpace(run.Error + "\nremoving the lab: " + derr.Error())
		}
		run.DownMs = ms(time.Since(start))
	}
	return run
}

// waitQuiet waits until, for three seconds in a row, no more tasks are
// runnable than there are CPUs and none is blocked in the kernel (what
// namespace teardown leaves behind), or until max.
func waitQuiet(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	quiet := 0
	for quiet < 3 && time.Now().Before(deadline) && ctx.Err() == nil {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			return
		}
		running, blocked := procsStat(data)
		if running <= runtime.NumCPU() && blocked == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(time.Second)
	}
}

// procsStat reads procs_running and procs_blocked from /proc/stat.
func procsStat(data []byte) (running, blocked int) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "procs_running":
			running, _ = strconv.Atoi(f[1])
		case "procs_blocked":
			blocked, _ = strconv.Atoi(f[1])
		}
	}
	return running, blocked
}

func agentPIDs(st *lab.State) []int {
	pids := make([]int, 0, len(st.Hosts))
	for _, h := range st.Hosts {
		pids = append(pids, h.AgentPID)
	}
	return pids
}

// meanRSS is the mean VmRSS and RssAnon of the processes that can be read.
func meanRSS(pids []int) (rss, anon float64) {
	n := 0
	for _, pid := range pids {
		r, a, err := procfs.RSSKiB(pid)
		if err != nil {
			continue
		}
		rss += float64(r)
		anon += float64(a)
		n++
	}
	if n == 0 {
		return 0, 0
	}
	return rss / float64(n), anon / float64(n)
}

func phaseLine(ps []lab.Phase) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%s %.1f s", p.Name, p.Took.Seconds())
	}
	return strings.Join(parts, ", ")
}

// scalePhases are the columns of the scale table, in build order.
var scalePhases = []string{"underlay", "etcd", "hosts", "agents", "containers", "verify"}

func phaseSeconds(ps []lab.Phase, name string) string {
	for _, p := range ps {
		if p.Name == name {
			return fmt.Sprintf("%.1f", p.Took.Seconds())
		}
	}
	return "–"
}

// ScaleMarkdown renders a scale report as the doc's scale section.
func ScaleMarkdown(r *ScaleReport) string {
	var b strings.Builder
	b.WriteString("## Lab scale\n\n")
	fmt.Fprintf(&b, "Measured %s with `%s`: for each host count, one lab built as `overlaylab up` builds it (underlay %s, "+
		"one agent process per host, verify included: a ping between every pair of hosts and the wire check), then removed.\n\n",
		r.Date.Format("2006-01-02"), r.Command, r.Underlay)
	writeMachine(&b, r.Machine)
	b.WriteString("| hosts | containers/host | backend | up s | " + strings.Join(scalePhases, " s | ") + " s | down s | agent RSS MiB (private) | etcd RSS MiB | machine MiB/host |\n")
	b.WriteString("|---|---|---|---|" + strings.Repeat("---|", len(scalePhases)) + "---|---|---|---|\n")
	for _, run := range r.Runs {
		if run.Error != "" {
			fmt.Fprintf(&b, "| %d | %d | %s | failed: %s |%s\n", run.Hosts, run.Containers, run.Backend,
				mdEscape(firstLine(run.Error)), strings.Repeat(" |", len(scalePhases)+4))
			continue
		}
		cells := make([]string, len(scalePhases))
		for i, p := range scalePhases {
			cells[i] = phaseSeconds(run.Phases, p)
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %.1f | %s | %.1f | %.1f (%.1f) | %.0f | %.1f |\n",
			run.Hosts, run.Containers, run.Backend, run.UpMs/1000, strings.Join(cells, " | "), run.DownMs/1000,
			run.AgentRSSKiB/1024, run.AgentAnonKiB/1024, run.EtcdRSSKiB/1024, run.MachineKiBPerHost/1024)
	}
	b.WriteString("\nAgent RSS is each agent's mean resident set; the private part (anonymous memory) is what one more host " +
		"costs, the rest is the binary's pages shared by all agents. Machine MiB/host is the fall of MemAvailable across " +
		"`up`, divided by the hosts: agents, etcd and the kernel's namespaces, links, routes and neighbours together.\n")
	return b.String()
}
