package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Ratio compares the medians of one metric between two configurations.
type Ratio struct {
	Metric string   `json:"metric"`
	Num    string   `json:"num"`
	Den    string   `json:"den"`
	Value  *float64 `json:"value"` // null when either side was not measured
}

// Name is "num / den".
func (r Ratio) Name() string { return r.Num + " / " + r.Den }

func ratio(rep *Report, metric, num, den string) Ratio {
	r := Ratio{Metric: metric, Num: num, Den: den}
	a, ok1 := rep.Config(num).Median(metric)
	b, ok2 := rep.Config(den).Median(metric)
	if ok1 && ok2 && b != 0 {
		v := a / b
		r.Value = &v
	}
	return r
}

// computeRatios: for throughput, udp-fast against vxlan and against
// udp-simple, and every configuration against the baseline; for the RTT
// median, every configuration against vxlan. Only configurations that were
// part of the run appear.
func computeRatios(rep *Report) []Ratio {
	in := func(name string) bool { return rep.Config(name) != nil }
	var out []Ratio
	for _, m := range []string{MTCP1, MTCP4} {
		if in(CfgUDPFast) && in(CfgVXLAN) {
			out = append(out, ratio(rep, m, CfgUDPFast, CfgVXLAN))
		}
		if in(CfgUDPFastMQ) && in(CfgVXLAN) {
			out = append(out, ratio(rep, m, CfgUDPFastMQ, CfgVXLAN))
		}
		if in(CfgUDPFastMQ) && in(CfgUDPFast) {
			out = append(out, ratio(rep, m, CfgUDPFastMQ, CfgUDPFast))
		}
		if in(CfgUDPFast) && in(CfgUDPSimple) {
			out = append(out, ratio(rep, m, CfgUDPFast, CfgUDPSimple))
		}
		if in(CfgBaseline) {
			for _, c := range rep.Configs {
				if c.Name != CfgBaseline {
					out = append(out, ratio(rep, m, c.Name, CfgBaseline))
				}
			}
		}
	}
	if in(CfgVXLAN) {
		for _, c := range rep.Configs {
			if c.Name != CfgVXLAN {
				out = append(out, ratio(rep, MRTT50, c.Name, CfgVXLAN))
			}
		}
	}
	return out
}

// Target statuses.
const (
	Met         = "met"
	Missed      = "missed"
	NotMeasured = "not measured"
)

// Target is one performance goal, evaluated on the run's figures.
type Target struct {
	Name     string   `json:"name"`
	Goal     string   `json:"goal"`
	Value    *float64 `json:"value"`
	Measured string   `json:"measured"`
	Status   string   `json:"status"`
}

// evaluateTargets checks the udp fast path's goals: single-stream TCP at
// least 0.5× kernel VXLAN (aim 0.8×) and at least 5× the simple loop, RTT
// p50 at most 2× VXLAN's, agent RSS at most 50 MiB; and with one worker
// per CPU (udp-fast-mq): 4 streams at least 1.2× its 1 stream and 0.45×
// VXLAN's 4 streams, 1 stream at least 0.5× VXLAN's.
func evaluateTargets(rep *Report) []Target {
	fast := rep.Config(CfgUDPFast)
	why := func(names ...string) string {
		var parts []string
		for _, n := range names {
			c := rep.Config(n)
			switch {
			case c == nil:
				parts = append(parts, n+" was not part of the run")
			case !c.OK():
				parts = append(parts, n+" did not run ("+shortReason(c.Error)+")")
			}
		}
		if len(parts) == 0 {
			return "a metric is missing"
		}
		return strings.Join(parts, "; ")
	}
	// crossTarget compares metric nm of configuration num with metric dm
	// of configuration den.
	crossTarget := func(name, goal, num, nm, den, dm string, threshold float64, atMost bool, unit string) Target {
		t := Target{Name: name, Goal: goal}
		a, ok1 := rep.Config(num).Median(nm)
		b, ok2 := rep.Config(den).Median(dm)
		if !ok1 || !ok2 || b == 0 {
			t.Status, t.Measured = NotMeasured, why(num, den)
			return t
		}
		v := a / b
		t.Value = &v
		label := func(cfg, m string) string {
			if nm == dm {
				return cfg
			}
			return cfg + " " + metricLabel(m)
		}
		t.Measured = fmt.Sprintf("%s× (%s %s vs %s %s, medians)", formatFloat(v, 2), label(num, nm), formatUnit(a, nm, unit), label(den, dm), formatUnit(b, dm, unit))
		ok := v >= threshold
		if atMost {
			ok = v <= threshold
		}
		t.Status = Missed
		if ok {
			t.Status = Met
		}
		return t
	}
	ratioTarget := func(name, goal, metric, num, den string, threshold float64, atMost bool, unit string) Target {
		return crossTarget(name, goal, num, metric, den, metric, threshold, atMost, unit)
	}
	var out []Target
	out = append(out,
		ratioTarget("udp single-stream TCP vs kernel VXLAN", "≥ 0.5×", MTCP1, CfgUDPFast, CfgVXLAN, 0.5, false, "Gbit/s"),
		ratioTarget("udp single-stream TCP vs kernel VXLAN (aim)", "≥ 0.8×", MTCP1, CfgUDPFast, CfgVXLAN, 0.8, false, "Gbit/s"),
		ratioTarget("udp single-stream TCP vs the simple loop", "≥ 5×", MTCP1, CfgUDPFast, CfgUDPSimple, 5, false, "Gbit/s"),
		ratioTarget("udp RTT p50 vs VXLAN", "≤ 2×", MRTT50, CfgUDPFast, CfgVXLAN, 2, true, "µs"),
	)
	rss := Target{Name: "udp agent RSS", Goal: "≤ 50 MiB"}
	if s, ok := fast.summary(MRSS); ok {
		v := s.Max
		rss.Value = &v
		rss.Measured = fmt.Sprintf("%s MiB (the largest of both agents' VmRSS in %s; median %s MiB)", formatFloat(s.Max, 1), plural(s.N, "round"), formatFloat(s.Median, 1))
		if a, ok := fast.summary(MAnon); ok {
			rss.Measured += fmt.Sprintf("; anonymous memory at most %s MiB, the rest mapped pages of the binary", formatFloat(a.Max, 1))
		}
		rss.Status = Missed
		if v <= 50 {
			rss.Status = Met
		}
	} else {
		rss.Status, rss.Measured = NotMeasured, why(CfgUDPFast)
	}
	out = append(out, rss)
	if rep.Config(CfgImpaired) != nil {
		out = append(out, impairedTarget(rep, why), delayOnlyTarget(rep, why))
	}
	if rep.Config(CfgUDPFastMQ) != nil {
		out = append(out,
			crossTarget("udp workers: 4 streams vs 1 stream", "≥ 1.2×", CfgUDPFastMQ, MTCP4, CfgUDPFastMQ, MTCP1, 1.2, false, "Gbit/s"),
			ratioTarget("udp workers: 4 streams vs kernel VXLAN", "≥ 0.45×", MTCP4, CfgUDPFastMQ, CfgVXLAN, 0.45, false, "Gbit/s"),
			ratioTarget("udp workers: single-stream vs kernel VXLAN", "≥ 0.5×", MTCP1, CfgUDPFastMQ, CfgVXLAN, 0.5, false, "Gbit/s"),
		)
	}
	return out
}

// impairedTarget checks the link emulator's delay: the row's delay on h1's
// link, each way, must add twice that (± 10 %) to the RTT p50 of the same
// path unimpaired (kernel VXLAN), with the jitter showing in p99. The goal
// follows from the row's own impairment (10 ms ± 2 ms by default).
func impairedTarget(rep *Report, why func(...string) string) Target {
	row := rep.Config(CfgImpaired)
	im := row.ImpairRTT
	if im == nil || im.Delay <= 0 {
		return Target{Name: "link emulator: RTT p50 added by the delay", Goal: "twice the delay ± 10 %", Status: NotMeasured,
			Measured: "the " + CfgImpaired + " row sets no RTT delay"}
	}
	want := 2 * float64(im.Delay) / float64(time.Millisecond)
	t := Target{Name: fmt.Sprintf("link emulator: RTT p50 added by %s delay + %s jitter each way", im.Delay, im.Jitter),
		Goal: fmt.Sprintf("%s ms ± 10 %%", formatFloat(want, 0))}
	a, ok1 := row.Median(MRTT50)
	b, ok2 := rep.Config(CfgVXLAN).Median(MRTT50)
	if !ok1 || !ok2 {
		t.Status, t.Measured = NotMeasured, why(CfgImpaired, CfgVXLAN)
		return t
	}
	added := (a - b) / 1000 // µs → ms
	t.Value = &added
	t.Measured = fmt.Sprintf("%s ms (p50 %s µs vs vxlan %s µs)", formatFloat(added, 2), formatFloat(a, 0), formatFloat(b, 0))
	if p99, ok := row.Median(MRTT99); ok {
		t.Measured += fmt.Sprintf("; p99 %s ms", formatFloat(p99/1000, 2))
	}
	t.Status = Missed
	if added >= 0.9*want && added <= 1.1*want {
		t.Status = Met
	}
	return t
}

// delayOnlyTarget checks what the link emulator carries when it only
// delays (issue 13: at least 1 Gbit/s): one TCP stream through the row's
// TCP impairment. Its window is the kernel's default, as a lab host's is.
func delayOnlyTarget(rep *Report, why func(...string) string) Target {
	row := rep.Config(CfgImpaired)
	t := Target{Name: "link emulator: TCP 1 stream through a delay-only link", Goal: "≥ 1 Gbit/s"}
	if im := row.ImpairTCP; im != nil {
		t.Name = fmt.Sprintf("link emulator: TCP 1 stream through %s delay each way, nothing else", im.Delay)
	}
	v, ok := row.Median(MTCP1)
	if !ok || row.ImpairTCP == nil {
		t.Status, t.Measured = NotMeasured, why(CfgImpaired)
		return t
	}
	t.Value = &v
	t.Measured = formatUnit(v, MTCP1, "Gbit/s") + " (median)"
	t.Status = Missed
	if v >= 1 {
		t.Status = Met
	}
	return t
}

// metricLabel is a metric's label ("TCP 4 streams").
func metricLabel(key string) string {
	for _, m := range Metrics {
		if m.Key == key {
			return m.Label
		}
	}
	return key
}

func (c *ConfigResult) summary(metric string) (Summary, bool) {
	if c == nil || !c.OK() {
		return Summary{}, false
	}
	s, ok := c.Summary[metric]
	return s, ok && s.N > 0
}

func formatUnit(v float64, metric, unit string) string {
	d := 2
	for _, m := range Metrics {
		if m.Key == metric {
			d = m.Digits
		}
	}
	return formatFloat(v, d) + " " + unit
}

// formatFloat prints v with d decimals ("–" for NaN).
func formatFloat(v float64, d int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

// shortReason picks the line of an error that says most: the last line of
// a log tail that reports an error, else the first line.
func shortReason(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i > 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "overlaylab:") || strings.Contains(l, "Error:") {
			return l
		}
	}
	return strings.TrimSpace(lines[0])
}
