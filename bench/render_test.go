package bench

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// sampleReport is a hand-made run: three rounds of four configurations,
// udp-fast did not come up, one round of host-gw lost its 4-stream figure.
func sampleReport() *Report {
	r := &Report{
		Date:    time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		Machine: Machine{CPU: "Test CPU 9000", Cores: 2, GoCPUs: 2, MemoryGiB: 23.5, Kernel: "Linux 6.1.0", Arch: "x86_64", GoVersion: "go1.26.0", LoadAvg: "0.10 0.20 0.30"},
		Command: "overlaylab bench", Rounds: 3, DurationSec: 5, WarmupSec: 0.5, Probes: 200, ProbeIntervalMs: 5,
		Metrics: Metrics, ElapsedSec: 190,
	}
	mk := func(name string, rounds ...map[string]float64) ConfigResult {
		var c Config
		for _, d := range DefaultConfigs() {
			if d.Name == name {
				c = d
			}
		}
		cr := ConfigResult{Config: c, Lab: "bn" + c.labSuffix, Path: "h1/c1 10.10.1.2 → h2/c1 10.10.2.2, MTU 1450", Summary: map[string]Summary{}}
		for i, v := range rounds {
			cr.Rounds = append(cr.Rounds, RoundResult{Round: i + 1, Values: v})
		}
		for _, m := range Metrics {
			var xs []float64
			for _, v := range rounds {
				if x, ok := v[m.Key]; ok {
					xs = append(xs, x)
				}
			}
			if len(xs) > 0 {
				cr.Summary[m.Key] = Summarize(xs)
			}
		}
		return cr
	}
	vals := func(t1, t4, p50, p99, cpu, rss float64) map[string]float64 {
		return map[string]float64{MTCP1: t1, MTCP4: t4, MRTT50: p50, MRTT99: p99, MRTT1C: p50 * 0.6, MCPU: cpu, MRSS: rss, MAnon: rss / 2}
	}
	base := mk(CfgBaseline, vals(10, 11, 20, 40, 0, 30), vals(10.2, 11.1, 21, 45, 0.1, 30.5), vals(9.8, 10.9, 19, 50, 0, 30.2))
	base.Path = "h1 eth0 192.168.77.1 → h2 eth0 192.168.77.2, no overlay, MTU 1500"
	fast := mk(CfgUDPFast)
	fast.Error = "agent on h1 (pid 77) exited before it was ready\n--- /run/overlaylab/bnudpf/logs/h1-agent.log ---\ntime=... level=INFO msg=starting\noverlaylab: --udp-mode \"fast\": use simple"
	fast.Path = ""
	simple := mk(CfgUDPSimple, vals(0.5, 0.6, 90, 200, 98, 20), vals(0.52, 0.58, 95, 210, 99, 21), vals(0.48, 0.61, 92, 190, 97, 20.5))
	// One worker per CPU: fixed here so that the golden files do not
	// depend on the machine the test runs on.
	mq := mk(CfgUDPFastMQ, vals(5, 5.5, 90, 150, 120, 45), vals(5.2, 5.6, 95, 160, 125, 46), vals(4.8, 5.4, 85, 170, 118, 44))
	mq.Workers, mq.AgentArgs = 2, []string{"--udp-mode=fast", "--udp-workers=2", "--pprof"}
	vx := mk(CfgVXLAN, vals(9, 9.5, 40, 80, 0, 30), vals(9.2, 9.6, 42, 85, 0, 30), vals(8.8, 9.4, 41, 90, 0.1, 30))
	hg := mk(CfgHostGW, vals(9.5, 10, 30, 60, 0, 30), vals(9.6, 0, 31, 61, 0, 30), vals(9.4, 10.2, 29, 59, 0, 30))
	// host-gw round 2 lost its 4-stream transfer.
	delete(hg.Rounds[1].Values, MTCP4)
	hg.Rounds[1].Errors = []string{"tcp 4 streams: connect 3/4 from ol-bnhgw-h1-c1 to 10.10.2.2:40000: i/o timeout"}
	hg.Summary[MTCP4] = Summarize([]float64{10, 10.2})
	r.Configs = []ConfigResult{base, fast, mq, simple, vx, hg}
	r.Ratios = computeRatios(r)
	r.Targets = evaluateTargets(r)
	return r
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./bench -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test ./bench -run %s -update rewrites it):\n--- got ---\n%s", path, t.Name(), got)
	}
}

func TestMarkdownGolden(t *testing.T) {
	golden(t, "dataplane.md", Markdown(sampleReport()))
}

func TestTableGolden(t *testing.T) {
	var b bytes.Buffer
	WriteTable(&b, sampleReport())
	golden(t, "dataplane.txt", b.String())
}

func TestRatiosAndTargets(t *testing.T) {
	r := sampleReport()
	find := func(metric, num, den string) *Ratio {
		for i := range r.Ratios {
			if x := &r.Ratios[i]; x.Metric == metric && x.Num == num && x.Den == den {
				return x
			}
		}
		return nil
	}
	if x := find(MTCP1, CfgVXLAN, CfgBaseline); x == nil || x.Value == nil || !near(*x.Value, 0.9) {
		t.Errorf("vxlan/baseline tcp1 = %+v, want 0.9", x)
	}
	if x := find(MTCP1, CfgUDPFast, CfgVXLAN); x == nil || x.Value != nil {
		t.Errorf("udp-fast/vxlan should be present and n/a: %+v", x)
	}
	if x := find(MRTT50, CfgHostGW, CfgVXLAN); x == nil || x.Value == nil || !near(*x.Value, 30.0/41) {
		t.Errorf("host-gw/vxlan rtt = %+v", x)
	}
	if x := find(MTCP1, CfgBaseline, CfgBaseline); x != nil {
		t.Errorf("baseline/baseline should not be listed")
	}
	// The single-queue targets first, then the workers' (udp-fast-mq):
	// 5.5/5 → 1.1 (missed 1.2); 5.5/9.5 → 0.58 (met 0.45); 5/9 → 0.56 (met).
	if len(r.Targets) != 8 {
		t.Fatalf("%d targets, want 8", len(r.Targets))
	}
	for i, want := range []string{Missed, Met, Met} {
		tg := r.Targets[5+i]
		if tg.Status != want || tg.Value == nil {
			t.Errorf("target %q: %s, want %s (%s)", tg.Name, tg.Status, want, tg.Measured)
		}
	}
	if m := r.Targets[5].Measured; m != "1.10× (udp-fast-mq TCP 4 streams 5.50 Gbit/s vs udp-fast-mq TCP 1 stream 5.00 Gbit/s, medians)" {
		t.Errorf("measured: %q", m)
	}
	if x := find(MTCP4, CfgUDPFastMQ, CfgUDPFast); x == nil || x.Value != nil {
		t.Errorf("udp-fast-mq/udp-fast should be present and n/a: %+v", x)
	}
	for _, tg := range r.Targets[:5] {
		if tg.Status != NotMeasured || !strings.Contains(tg.Measured, "udp-fast did not run") || !strings.Contains(tg.Measured, `--udp-mode "fast": use simple`) {
			t.Errorf("target %q: %s (%s); want not measured, naming udp-fast's reason", tg.Name, tg.Status, tg.Measured)
		}
	}

	// Now with udp-fast measured: 4.6 vs vxlan 9 → 0.51 (met 0.5, missed
	// 0.8); vs simple 0.5 → 9.2× (met); RTT 100 vs 41 → 2.4× (missed); RSS 60 (missed).
	c := r.Config(CfgUDPFast)
	c.Error = ""
	c.Summary = map[string]Summary{MTCP1: {Median: 4.6, Min: 4.5, Max: 4.7, N: 3}, MRTT50: {Median: 100, Min: 99, Max: 101, N: 3}, MRSS: {Median: 40, Min: 39, Max: 60, N: 3}, MAnon: {Median: 20, Min: 19, Max: 30, N: 3}}
	ts := evaluateTargets(r)[:5]
	want := []string{Met, Missed, Met, Missed, Missed}
	for i, tg := range ts {
		if tg.Status != want[i] {
			t.Errorf("target %q: %s, want %s (%s)", tg.Name, tg.Status, want[i], tg.Measured)
		}
		if tg.Value == nil {
			t.Errorf("target %q has no value", tg.Name)
		}
	}
	if !strings.HasPrefix(ts[0].Measured, "0.51×") || !strings.HasPrefix(ts[4].Measured, "60.0 MiB") || !strings.Contains(ts[4].Measured, "anonymous memory at most 30.0 MiB") {
		t.Errorf("measured: %q, %q", ts[0].Measured, ts[4].Measured)
	}
}

func TestSelectConfigs(t *testing.T) {
	cs, err := SelectConfigs([]string{"vxlan", " baseline"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != CfgBaseline || cs[1].Name != CfgVXLAN {
		t.Errorf("SelectConfigs kept %v; want the standard order baseline, vxlan", cs)
	}
	if _, err := SelectConfigs([]string{"ipip"}); err == nil || !strings.Contains(err.Error(), "udp-fast") {
		t.Errorf("an unknown name should fail and list the known ones: %v", err)
	}
	all, _ := SelectConfigs(nil)
	for _, c := range all {
		if n := len("bn" + c.labSuffix); n > 7 {
			t.Errorf("lab name bn%s is %d characters; at most 7", c.labSuffix, n)
		}
	}
}

func TestControlMarkdown(t *testing.T) {
	r := &ControlReport{
		Date: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Machine: sampleReport().Machine, Command: "overlaylab bench control --agents 1000",
		Agents: 1000, Clients: 20, Network: "10.0.0.0/8", SubnetLen: 24, Subnets: 65535, Etcd: "etcd 3.6.16 embedded in the benchmark process on http://127.0.0.1:1234, data dir on ext4",
		AcquireP50Ms: 12.34, AcquireP99Ms: 80.5, AcquireMaxMs: 99, AllSeenMs: 4321, SeenP50Ms: 3000, Converged: 1000,
		Keys: 1000, DistinctSubnets: 1000, DistinctPublicIPs: 1000, OK: true, ElapsedSec: 6.2,
	}
	golden(t, "control.md", ControlMarkdown(r))
	var b bytes.Buffer
	WriteControlTable(&b, r)
	golden(t, "control.txt", b.String())
}

func TestRoundTripNote(t *testing.T) {
	r := sampleReport()
	if got := roundTripNote(r); got != "" {
		t.Fatalf("note without udp-fast figures: %q", got)
	}
	fast := r.Config(CfgUDPFast)
	fast.Error = ""
	fast.Summary[MRTT50] = Summarize([]float64{90, 95, 100})
	fast.Summary[MRTT1C] = Summarize([]float64{50, 45, 40})
	note := roundTripNote(r)
	// vxlan's p50 is 41 in the sample; 95 − 45 = 50 is the cross-CPU part,
	// 45 − 41 = 4 the rest.
	for _, want := range []string{"(p50 41 µs)", "the p50 is 45 µs instead of 95 µs: 50 µs", "The remaining 4 µs over VXLAN", "On one CPU udp-fast's p50 is 1.10× VXLAN's"} {
		if !strings.Contains(note, want) {
			t.Errorf("note lacks %q:\n%s", want, note)
		}
	}
	delete(fast.Summary, MRTT1C)
	if got := roundTripNote(r); got != "" {
		t.Fatalf("note without the one-CPU figure: %q", got)
	}
}
