package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/overlaylab/overlaylab/lab"
)

// cell is a metric's "median (min–max)" for one configuration.
func cell(c *ConfigResult, m Metric) string {
	s, ok := c.Summary[m.Key]
	if !ok || s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return formatFloat(s.Median, m.Digits)
	}
	return fmt.Sprintf("%s (%s–%s)", formatFloat(s.Median, m.Digits), formatFloat(s.Min, m.Digits), formatFloat(s.Max, m.Digits))
}

func header(m Metric) string { return m.Label + " " + m.Unit }

// workersCell is a configuration's udp worker count, "–" where it has none.
func workersCell(c *ConfigResult) string {
	if c.Workers == 0 {
		return "–"
	}
	return fmt.Sprint(c.Workers)
}

// ratioRows groups the ratios by pair, with one column per metric.
func ratioRows(rs []Ratio) (names []string, cols []Metric, byName map[string]map[string]Ratio) {
	byName = map[string]map[string]Ratio{}
	used := map[string]bool{}
	for _, r := range rs {
		if byName[r.Name()] == nil {
			byName[r.Name()] = map[string]Ratio{}
			names = append(names, r.Name())
		}
		byName[r.Name()][r.Metric] = r
		used[r.Metric] = true
	}
	for _, m := range Metrics {
		if used[m.Key] {
			cols = append(cols, m)
		}
	}
	return names, cols, byName
}

func ratioCell(rs map[string]Ratio, metric string) string {
	r, ok := rs[metric]
	switch {
	case !ok:
		return ""
	case r.Value == nil:
		return "n/a"
	default:
		return formatFloat(*r.Value, 2) + "×"
	}
}

// WriteTable prints the report for a terminal: the table of medians with
// their range, the ratios and the targets.
func WriteTable(w io.Writer, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cols := []string{"CONFIGURATION", "WORKERS"}
	for _, m := range Metrics {
		cols = append(cols, upperASCII(m.Label)+" "+m.Unit)
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for i := range r.Configs {
		c := &r.Configs[i]
		row := []string{c.Name, workersCell(c)}
		for j, m := range Metrics {
			switch {
			case c.OK():
				row = append(row, cell(c, m))
			case j == 0:
				row = append(row, "did not run")
			default:
				row = append(row, "–")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	fmt.Fprintf(w, "median (min–max) over %s; %s per transfer\n", plural(r.Rounds, "round"), time.Duration(r.DurationSec*float64(time.Second)))
	for i := range r.Configs {
		c := &r.Configs[i]
		if !c.OK() {
			fmt.Fprintf(w, "  %s did not run: %s\n", c.Name, shortReason(c.Error))
		}
		for _, rr := range c.Rounds {
			for _, e := range rr.Errors {
				fmt.Fprintf(w, "  %s round %d: %s\n", c.Name, rr.Round, firstLine(e))
			}
		}
	}

	if len(r.Ratios) > 0 {
		fmt.Fprintln(w)
		names, mcols, by := ratioRows(r.Ratios)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		hdr := []string{"RATIO OF MEDIANS"}
		for _, m := range mcols {
			hdr = append(hdr, upperASCII(m.Label))
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		for _, n := range names {
			row := []string{n}
			for _, m := range mcols {
				row = append(row, ratioCell(by[n], m.Key))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tGOAL\tSTATUS\tMEASURED")
		for _, t := range r.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Goal, strings.ToUpper(t.Status), t.Measured)
		}
		tw.Flush()
	}
}

// upperASCII upper-cases ASCII letters only ("µs" stays "µs").
func upperASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// mdEscape keeps text from breaking a markdown table.
func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Markdown renders the data-plane section of docs/PERFORMANCE.md.
func Markdown(r *Report) string {
	var b strings.Builder
	dur := time.Duration(r.DurationSec * float64(time.Second))
	warm := time.Duration(r.WarmupSec * float64(time.Second))
	fmt.Fprintf(&b, "## Data plane\n\n")
	fmt.Fprintf(&b, "Measured on %s with `%s` (the run took %s).\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"), r.Command, time.Duration(r.ElapsedSec*float64(time.Second)))
	writeMachine(&b, r.Machine)
	fmt.Fprintf(&b, "**Method.** One lab per configuration, 2 hosts × 1 container, each up once and reused. "+
		"The baseline is TCP between the two hosts' `eth0` over the underlay (veth and bridge, no overlay); "+
		"every other configuration is container to container across the overlay. "+
		"%s, interleaved (each round measures every configuration once). "+
		"TCP: overlaylab's own Go generator, a receiver in the h2 endpoint's namespace that discards and counts, a sender in h1's writing 128 KiB buffers for %s per transfer; "+
		"goodput is what the receiver counted after the first %s. "+
		"RTT: %d ICMP echoes every %s ms on the idle path, after 5 uncounted ones, timed with kernel receive timestamps; then as many again with every thread of both agents and of the prober pinned to one CPU (\"on one CPU\"), which turns every wakeup on the path into a local context switch. "+
		"Agent CPU: utime+stime of the agent process during the 1-stream transfer over the wall time × 100 (the busier of the two hosts' agents; 100 = one core); "+
		"agent RSS: the largest `VmRSS` of either agent, sampled every 100 ms during that transfer, and the largest `RssAnon` (what the agent allocated; the rest of VmRSS is mostly the binary's file pages). "+
		"Cells are the median over rounds with the range (min–max).\n\n",
		plural(r.Rounds, "round"), dur, warm, r.Probes, formatFloat(r.ProbeIntervalMs, 0))

	writeConfigTable(&b, r)
	b.WriteString("Paths measured:\n\n")
	for i := range r.Configs {
		c := &r.Configs[i]
		path := c.Path
		if path == "" {
			path = "(the lab did not come up)"
		}
		fmt.Fprintf(&b, "- %s (backend %s%s): %s%s\n", c.Name, c.Backend, argsNote(c.AgentArgs), path, impairNote(c.Config))
	}
	b.WriteString("\n")

	writeRatios(&b, r)
	b.WriteString(roundTripNote(r))
	writeProfiles(&b, r)
	if len(r.Targets) > 0 {
		b.WriteString("### Targets\n\nThe udp backend's fast datapath (`--udp-mode fast`) against its goals, from the figures above.\n\n")
		b.WriteString("| target | goal | status | measured |\n|---|---|---|---|\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Goal, statusMark(t.Status), mdEscape(t.Measured))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writeConfigTable writes the table of medians, then what did not run and
// notes on single rounds.
func writeConfigTable(b *strings.Builder, r *Report) {
	b.WriteString("| configuration | udp workers |")
	for _, m := range Metrics {
		fmt.Fprintf(b, " %s |", header(m))
	}
	b.WriteString("\n|---|---:|")
	for range Metrics {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	var failed, notes []string
	for i := range r.Configs {
		c := &r.Configs[i]
		fmt.Fprintf(b, "| %s | %s |", c.Name, workersCell(c))
		for _, m := range Metrics {
			v := "–"
			if c.OK() {
				v = cell(c, m)
			}
			fmt.Fprintf(b, " %s |", v)
		}
		b.WriteString("\n")
		if !c.OK() {
			failed = append(failed, fmt.Sprintf("- **%s** (lab `%s`, backend %s%s): did not run: `%s`", c.Name, c.Lab, c.Backend, argsNote(c.AgentArgs), mdEscape(shortReason(c.Error))))
		}
		for _, rr := range c.Rounds {
			for _, e := range rr.Errors {
				notes = append(notes, fmt.Sprintf("- %s, round %d: `%s`", c.Name, rr.Round, mdEscape(firstLine(e))))
			}
			if lost := rr.Values[MRTTLos]; lost > 0 {
				notes = append(notes, fmt.Sprintf("- %s, round %d: %.0f of %d echoes unanswered within 1 s", c.Name, rr.Round, lost, r.Probes))
			}
		}
	}
	b.WriteString("\n")
	if len(failed) > 0 {
		b.WriteString("Configurations that did not run:\n\n" + strings.Join(failed, "\n") + "\n\n")
	}
	if len(notes) > 0 {
		b.WriteString("Notes on individual rounds:\n\n" + strings.Join(notes, "\n") + "\n\n")
	}
}

// writeRatios writes the ratios of the medians.
func writeRatios(b *strings.Builder, r *Report) {
	if len(r.Ratios) > 0 {
		b.WriteString("### Ratios\n\nOf the medians above; n/a where a side was not measured.\n\n")
		names, mcols, by := ratioRows(r.Ratios)
		b.WriteString("| ratio |")
		for _, m := range mcols {
			fmt.Fprintf(b, " %s |", m.Label)
		}
		b.WriteString("\n|---|")
		for range mcols {
			b.WriteString("---:|")
		}
		b.WriteString("\n")
		for _, n := range names {
			fmt.Fprintf(b, "| %s |", n)
			for _, m := range mcols {
				fmt.Fprintf(b, " %s |", ratioCell(by[n], m.Key))
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
}

// writeProfiles writes where the agents spent their CPU, per profiled
// configuration.
func writeProfiles(b *strings.Builder, r *Report) {
	for i := range r.Configs {
		c := &r.Configs[i]
		if len(c.Profiles) == 0 {
			continue
		}
		fmt.Fprintf(b, "### Where the %s agents spend their CPU\n\n", c.Name)
		b.WriteString("Go CPU profiles (`--pprof`) of both agents during round 1's one-stream transfer; the functions with the most samples of their own (flat), with the share including what they call (cum). Time in system calls shows under `internal/runtime/syscall/linux.Syscall6` (the fast path makes raw syscalls) and friends: that is the kernel's work for the TUN device and the UDP socket, including carrying each batch through the stack to the receiving socket or container.\n\n")
		for _, p := range c.Profiles {
			fmt.Fprintf(b, "**%s, %s** (%d s):", p.Host, p.Role, p.Seconds)
			if p.Error != "" {
				fmt.Fprintf(b, " no profile: %s\n\n", mdEscape(p.Error))
				continue
			}
			b.WriteString("\n\n| function | flat % | cum % |\n|---|---:|---:|\n")
			for _, e := range p.Top {
				fmt.Fprintf(b, "| `%s` | %.1f | %.1f |\n", e.Function, e.FlatPct, e.CumPct)
			}
			b.WriteString("\n")
		}
	}
}

// roundTripNote explains, from the measured figures, where udp-fast's round
// trip goes beyond VXLAN's; empty when a figure is missing.
func roundTripNote(r *Report) string {
	fast, vx := r.Config(CfgUDPFast), r.Config(CfgVXLAN)
	f, ok1 := fast.Median(MRTT50)
	f1, ok2 := fast.Median(MRTT1C)
	v, ok3 := vx.Median(MRTT50)
	if !ok1 || !ok2 || !ok3 {
		return ""
	}
	var b strings.Builder
	b.WriteString("### Where the udp-fast round trip goes\n\n")
	fmt.Fprintf(&b, "A VXLAN echo never leaves the kernel: the request is encapsulated, delivered and answered inside the prober's own "+
		"system call, and nothing sleeps (p50 %s µs). A udp-fast echo crosses user space four times, and three of those crossings "+
		"wake a sleeping thread: the request wakes h1's agent (TUN readable), its datagram wakes h2's agent (socket readable), "+
		"whose reply wakes h1's agent again (the prober's own wakeup is not timed: replies carry kernel receive timestamps). "+
		"With every agent thread and the prober on one CPU the p50 is %s µs instead of %s µs: %s µs of the round trip is the price of "+
		"waking a thread on the other, idle CPU (an inter-processor interrupt and, on a virtual machine, the exit from the halted "+
		"vCPU), not work. The remaining %s µs over VXLAN is three local wakeups and the system calls and copies of both agents. "+
		"On one CPU udp-fast's p50 is %s× VXLAN's (the target is ≤ 2×): what the target misses by is where the scheduler "+
		"runs the woken agents, which an agent does not choose (pinning itself, and whatever it talks to, to one core would; "+
		"so would a datapath thread that never sleeps, at the price of a spinning core).\n\n",
		formatFloat(v, 0), formatFloat(f1, 0), formatFloat(f, 0), formatFloat(f-f1, 0), formatFloat(f1-v, 0), formatFloat(f1/v, 2))
	return b.String()
}

func statusMark(s string) string {
	switch s {
	case Met:
		return "**met**"
	case Missed:
		return "**missed**"
	default:
		return s
	}
}

// impairNote says what a configuration's link emulator did.
func impairNote(c Config) string {
	say := func(im *lab.Impairment) string {
		s := "delay " + im.Delay.String()
		if im.Jitter > 0 {
			s += ", jitter ±" + im.Jitter.String()
		}
		return s + " each way"
	}
	if c.ImpairRTT == nil && c.ImpairTCP == nil {
		return ""
	}
	s := "; through h1's link emulator (overlaylab impair)"
	if c.ImpairRTT != nil {
		s += ": RTT with " + say(c.ImpairRTT)
	}
	if c.ImpairTCP != nil {
		s += ", TCP with " + say(c.ImpairTCP)
	}
	return s
}

func argsNote(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return ", agent `" + strings.Join(args, " ") + "`"
}

func writeMachine(b *strings.Builder, m Machine) {
	cpu := m.CPU
	if cpu == "" {
		cpu = "CPU model not readable"
	}
	fmt.Fprintf(b, "**Machine.** %s; %d logical CPUs (%d usable by Go); %.1f GiB memory; %s (%s); %s. Load average at the start: %s.\n\n",
		cpu, m.Cores, m.GoCPUs, m.MemoryGiB, m.Kernel, m.Arch, m.GoVersion, orDash(m.LoadAvg))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// controlRows are the control-plane figures as label/value pairs, shared by
// the terminal table and the markdown.
func controlRows(r *ControlReport) [][2]string {
	allSeen := "not reached"
	if r.AllSeenMs > 0 {
		allSeen = formatFloat(r.AllSeenMs, 0) + " ms"
	}
	verdict := "yes"
	if !r.OK {
		verdict = "NO"
	}
	return [][2]string{
		{"agents (etcd clients)", fmt.Sprintf("%d (%d)", r.Agents, r.Clients)},
		{"acquire p50 / p99 / max", fmt.Sprintf("%s / %s / %s ms", formatFloat(r.AcquireP50Ms, 1), formatFloat(r.AcquireP99Ms, 1), formatFloat(r.AcquireMaxMs, 1))},
		{"acquire failures", fmt.Sprint(r.AcquireFailed)},
		{"start → every agent has seen every lease", allSeen},
		{"median agent: start → has seen every lease", formatFloat(r.SeenP50Ms, 0) + " ms"},
		{"agents that saw every lease", fmt.Sprintf("%d of %d", r.Converged, r.Agents)},
		{"lease keys in etcd", fmt.Sprint(r.Keys)},
		{"distinct subnets", fmt.Sprint(r.DistinctSubnets)},
		{"PublicIPs held exactly once", fmt.Sprint(r.DistinctPublicIPs)},
		{"agents sharing a subnet", fmt.Sprint(r.DuplicateSubnets)},
		{"overlapping keys", fmt.Sprint(r.OverlappingKeys)},
		{"verified (N keys, N subnets, each PublicIP once, all converged)", verdict},
	}
}

// WriteControlTable prints a control-plane report for a terminal.
func WriteControlTable(w io.Writer, r *ControlReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTROL PLANE\t")
	for _, row := range controlRows(r) {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", firstLine(e))
	}
}

// ControlMarkdown renders the control-plane section of docs/PERFORMANCE.md.
func ControlMarkdown(r *ControlReport) string {
	var b strings.Builder
	b.WriteString("## Control plane\n\n")
	fmt.Fprintf(&b, "Measured on %s with `%s` (the run took %s).\n\n", r.Date.UTC().Format("2006-01-02 15:04 MST"), r.Command, time.Duration(r.ElapsedSec*float64(time.Second)).Round(100*time.Millisecond))
	writeMachine(&b, r.Machine)
	fmt.Fprintf(&b, "**Method.** %d lease-only agents (a `subnet.Manager` each, no datapath), %d sharing each etcd client, "+
		"against %s. Network %s with /%d subnets (%d leasable); each agent has its own PublicIP (data only). "+
		"All start at the same instant; each acquires a lease (acquire time: its `Acquire` call), then follows the lease set as the agent does "+
		"(`Leases`, then `WatchLeases` from that revision) until it has seen all %d. Afterwards the keys are listed from etcd to verify them.\n\n",
		r.Agents, (r.Agents+r.Clients-1)/max(r.Clients, 1), r.Etcd, r.Network, r.SubnetLen, r.Subnets, r.Agents)
	b.WriteString("| | |\n|---|---:|\n")
	for _, row := range controlRows(r) {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
	}
	b.WriteString("\n")
	if len(r.Errors) > 0 {
		b.WriteString("First errors:\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- `%s`\n", mdEscape(firstLine(e)))
		}
		b.WriteString("\n")
	}
	return b.String()
}
