package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/lab"
)

func TestScaleOptionsRejectBadInput(t *testing.T) {
	for _, o := range []ScaleOptions{{Hosts: []int{1}}, {Containers: -1}, {Underlay: "172.20.0.0/33"}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestScaleMarkdown: every phase in its column, a phase a run lacks as a
// dash, a failed run with its first error line and as many cells as the
// header.
func TestScaleMarkdown(t *testing.T) {
	r := &ScaleReport{Date: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), Command: "overlaylab bench scale --hosts 500,1000", Underlay: "172.20.0.0/16",
		Runs: []ScaleRun{
			{Hosts: 500, Containers: 1, Backend: "udp", UpMs: 95000, DownMs: 20000, AgentRSSKiB: 20480, AgentAnonKiB: 8192, EtcdRSSKiB: 102400, MachineKiBPerHost: 15360,
				Phases: []lab.Phase{{Name: "underlay", Took: time.Second}, {Name: "etcd", Took: 2 * time.Second}, {Name: "hosts", Took: 30 * time.Second},
					{Name: "agents", Took: 40 * time.Second}, {Name: "containers", Took: 12 * time.Second}}},
			{Hosts: 1000, Containers: 1, Backend: "udp", Error: "agents: h731 not ready\nsecond line"},
		}}
	md := ScaleMarkdown(r)
	var rows []string
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "| ") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 3 {
		t.Fatalf("want header and two rows, got %d:\n%s", len(rows), md)
	}
	cols := strings.Count(rows[0], "|")
	for _, row := range rows[1:] {
		if n := strings.Count(row, "|"); n != cols {
			t.Errorf("row has %d bars, header %d: %s", n, cols, row)
		}
	}
	for _, want := range []string{"| 500 | 1 | udp | 95.0 | 1.0 | 2.0 | 30.0 | 40.0 | 12.0 | – | 20.0 | 20.0 (8.0) | 100 | 15.0 |", "failed: agents: h731 not ready |", "2026-11-27"} {
		if !strings.Contains(md, want) {
			t.Errorf("missing %q in:\n%s", want, md)
		}
	}
	if strings.Contains(md, "second line") {
		t.Errorf("a failed run shows more than its first error line:\n%s", md)
	}
}

func TestProcsStat(t *testing.T) {
	r, b := procsStat([]byte("cpu  1 2 3\nctxt 5\nprocs_running 3\nprocs_blocked 7\n"))
	if r != 3 || b != 7 {
		t.Fatalf("got running %d, blocked %d", r, b)
	}
}

// TestImpairedTarget: the delay the link emulator adds is judged against
// the unimpaired vxlan row: met within 20 ms ± 10 %, missed outside, not
// measured without either row.
func TestImpairedTarget(t *testing.T) {
	rep := func(impaired, vxlan float64) *Report {
		row := func(name string, p50 float64) ConfigResult {
			c := ConfigResult{Config: Config{Name: name}, Summary: map[string]Summary{MRTT50: {N: 3, Median: p50}, MRTT99: {N: 3, Median: p50 + 3500}}}
			if name == CfgImpaired {
				c.ImpairRTT = &lab.Impairment{Delay: 10 * time.Millisecond, Jitter: 2 * time.Millisecond}
			}
			return c
		}
		r := &Report{Configs: []ConfigResult{row(CfgVXLAN, vxlan), row(CfgImpaired, impaired)}}
		return r
	}
	why := func(...string) string { return "missing" }
	for _, c := range []struct {
		impaired, vxlan float64
		want            string
	}{{20070, 60, Met}, {26000, 60, Missed}, {15000, 60, Missed}} {
		got := impairedTarget(rep(c.impaired, c.vxlan), why)
		if got.Status != c.want {
			t.Errorf("p50 %v vs %v: %s (%s), want %s", c.impaired, c.vxlan, got.Status, got.Measured, c.want)
		}
	}
	r := rep(20000, 60)
	r.Configs = r.Configs[1:]
	if got := impairedTarget(r, why); got.Status != NotMeasured {
		t.Errorf("without the vxlan row: %s", got.Status)
	}
}

// TestDelayOnlyTarget: one TCP stream through the delay-only link is judged
// against 1 Gbit/s; without the row's figure it is not measured.
func TestDelayOnlyTarget(t *testing.T) {
	why := func(...string) string { return "missing" }
	row := func(gbit float64) *Report {
		c := ConfigResult{Config: Config{Name: CfgImpaired, ImpairTCP: &lab.Impairment{Delay: 10 * time.Millisecond}}}
		if gbit > 0 {
			c.Summary = map[string]Summary{MTCP1: {N: 3, Median: gbit}}
		}
		return &Report{Configs: []ConfigResult{c}}
	}
	for _, c := range []struct {
		gbit float64
		want string
	}{{1.4, Met}, {0.54, Missed}, {0, NotMeasured}} {
		if got := delayOnlyTarget(row(c.gbit), why); got.Status != c.want {
			t.Errorf("%v Gbit/s: %s (%s), want %s", c.gbit, got.Status, got.Measured, c.want)
		}
	}
}
