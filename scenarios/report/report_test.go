package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func durPtr(d time.Duration) *time.Duration { return &d }

// sampleResult is a realistic failed run: h1..h4 at start, h5 added at 3s,
// h4 removed at 8s, four steps (one failed), and expectations of every kind,
// among them a failing ping matrix with three bad cells and a capture.
func sampleResult() *Result {
	ctrs := func(h string, subnet3 int, n int) []TopologyContainer {
		var cs []TopologyContainer
		for i := 1; i <= n; i++ {
			cs = append(cs, TopologyContainer{Name: fmt.Sprintf("c%d", i), IP: fmt.Sprintf("10.10.%d.%d", subnet3, i+1)})
		}
		return cs
	}
	eps := []string{"h1/c1", "h2/c1", "h3/c1", "h5/c1"}
	full := func(v string) [][]string {
		m := make([][]string, len(eps))
		for i := range m {
			m[i] = make([]string, len(eps))
			for j := range m[i] {
				if i != j {
					m[i][j] = v
				}
			}
		}
		return m
	}
	counts := func(v int) [][]int {
		m := make([][]int, len(eps))
		for i := range m {
			m[i] = make([]int, len(eps))
			for j := range m[i] {
				if i != j {
					m[i][j] = v
				}
			}
		}
		return m
	}
	bools := func() [][]bool {
		m := make([][]bool, len(eps))
		for i := range m {
			m[i] = make([]bool, len(eps))
		}
		return m
	}

	okMatrix := &MatrixResult{Endpoints: eps, Want: full("answer"), Sent: counts(3), Received: counts(3), Bad: bools()}

	// After the restart h2 does not get its routes back: h1 and h3 cannot
	// reach h2/c1, and h5/c1, which should be fenced off from h1/c1, answers.
	bad := &MatrixResult{Endpoints: eps, Want: full("answer"), Sent: counts(3), Received: counts(3), Bad: bools()}
	bad.Want[0][3], bad.Want[3][0] = "silent", "silent"
	bad.Received[3][0] = 0
	bad.Received[0][1], bad.Bad[0][1] = 0, true                   // h1 -> h2 lost
	bad.Received[2][1], bad.Bad[2][1] = 1, true                   // h3 -> h2 lossy
	bad.Bad[0][3] = true                                          // h1 -> h5 leaked
	bad.Sent[1][2], bad.Received[1][2], bad.Want[1][2] = 0, 0, "" // not probed

	return &Result{
		Scenario: "vxlan-churn",
		File:     "scenarios/vxlan-churn.yaml",
		Lab:      "churn",
		Seed:     42,
		Backend:  "vxlan",
		Network:  "10.10.0.0/16",
		Started:  time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC),
		Duration: 14*time.Second + 230*time.Millisecond,
		Passed:   false,
		Topology: Topology{
			Underlay: "192.168.77.0/24",
			EtcdIP:   "192.168.77.250",
			Hosts: []TopologyHost{
				{Name: "h1", UnderlayIP: "192.168.77.1", Subnet: "10.10.1.0/24", Containers: ctrs("h1", 1, 2)},
				{Name: "h2", UnderlayIP: "192.168.77.2", Subnet: "10.10.2.0/24", Containers: ctrs("h2", 2, 2)},
				{Name: "h3", UnderlayIP: "192.168.77.3", Subnet: "10.10.3.0/24", Containers: ctrs("h3", 3, 2)},
				{Name: "h4", UnderlayIP: "192.168.77.4", Subnet: "10.10.4.0/24", Containers: ctrs("h4", 4, 1),
					RemovedAt: durPtr(8 * time.Second)},
				{Name: "h5", UnderlayIP: "192.168.77.5", Subnet: "10.10.5.0/24", Containers: ctrs("h5", 5, 1),
					AddedAt: durPtr(3 * time.Second)},
			},
		},
		Timeline: []StepResult{
			{Name: "add-h5", Action: "host-add", Host: "h5", Detail: "1 container", At: 3 * time.Second, Duration: 420 * time.Millisecond},
			{Name: "kill-h2", Action: "agent-kill", Host: "h2", Detail: "signal KILL", At: 5 * time.Second, Duration: 12 * time.Millisecond},
			{Name: "start-h2", Action: "agent-start", Host: "h2", At: 6 * time.Second, Duration: 5 * time.Second,
				Error: "agent h2 not ready after 5s: no lease"},
			{Name: "host-remove (line 31)", Action: "host-remove", Host: "h4", At: 11 * time.Second, Duration: 310 * time.Millisecond},
		},
		Expectations: []ExpectResult{
			{Name: "mesh-ready", Kind: "ping", When: "at 0s", Passed: true, Message: "12 of 12 pairs answered",
				Start: 0, End: 900 * time.Millisecond, Matrix: okMatrix},
			{Name: "encap-on-wire", Kind: "encap", When: "during 0s..kill-h2", Passed: true,
				Message: "412 packets on udp/8472 vni 1, no bare inner packets", Start: 0, End: 5012 * time.Millisecond,
				Pcap: "pcaps/encap-on-wire.pcap"},
			{Name: "h5-route", Kind: "route", When: "after add-h5", Passed: true, Message: "h1 has 10.10.5.0/24 via flannel.1",
				Start: 3420 * time.Millisecond, End: 3650 * time.Millisecond},
			{Name: "h2-agent-log", Kind: "agent", When: "after start-h2", Passed: false,
				Message: "log of h2 never matched /lease acquired/ within 10s\nlast line: \"etcd: context deadline exceeded\"",
				Start:   11 * time.Second, End: 13 * time.Second},
			{Name: "mesh-after-restart", Kind: "ping", When: "after start-h2 + 1s", Passed: false,
				Message: "3 of 11 probed pairs broke the expectation", Start: 12 * time.Second, End: 13500 * time.Millisecond,
				Matrix: bad, Pcap: "pcaps/mesh-after-restart.pcap"},
			{Name: "h1-lease", Kind: "lease", When: "final", Passed: true, Message: "h1 still holds 10.10.1.0/24",
				Start: 13600 * time.Millisecond, End: 13610 * time.Millisecond},
		},
		Artifacts: []string{
			"pcaps/encap-on-wire.pcap", "pcaps/mesh-after-restart.pcap",
			"dumps/h2/routes.txt", "dumps/h2/fdb.txt", "dumps/etcd-keys.txt", "logs/agent-h2.log",
		},
	}
}

// errorResult is the sample as a run whose lab never came up properly.
func errorResult() *Result {
	r := sampleResult()
	r.Error = "lab did not come up: agent h3 holds no lease after 30s\n(etcd at 192.168.77.250:2379 unreachable)"
	return r
}

func badCells(r *Result) int {
	n := 0
	for _, e := range r.Expectations {
		if e.Matrix == nil {
			continue
		}
		for _, row := range e.Matrix.Bad {
			for _, b := range row {
				if b {
					n++
				}
			}
		}
	}
	return n
}

func TestWriteJSONRoundTrip(t *testing.T) {
	for _, r := range []*Result{sampleResult(), errorResult()} {
		var buf bytes.Buffer
		if err := WriteJSON(&buf, r); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "\n  \"scenario\": \"vxlan-churn\"") {
			t.Errorf("JSON not indented:\n%.200s", buf.String())
		}
		var back Result
		if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&back, r) {
			t.Errorf("round trip differs:\n got %+v\nwant %+v", back, *r)
		}
	}
}

// The JUnit shape as a CI tool reads it.
type parsedJUnit struct {
	XMLName  xml.Name `xml:"testsuites"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Suites   []struct {
		Name      string `xml:"name,attr"`
		Tests     int    `xml:"tests,attr"`
		Failures  int    `xml:"failures,attr"`
		Time      string `xml:"time,attr"`
		Timestamp string `xml:"timestamp,attr"`
		Props     []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			ClassName string `xml:"classname,attr"`
			Name      string `xml:"name,attr"`
			Time      string `xml:"time,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
		} `xml:"testcase"`
		SystemOut string `xml:"system-out"`
	} `xml:"testsuite"`
}

func TestWriteJUnit(t *testing.T) {
	for _, tc := range []struct {
		name            string
		r               *Result
		tests, failures int
	}{
		{"failed checks", sampleResult(), 6, 2},
		{"run error", errorResult(), 7, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteJUnit(&buf, tc.r); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			if !strings.HasPrefix(out, "<?xml") {
				t.Errorf("no XML declaration")
			}
			var j parsedJUnit
			if err := xml.Unmarshal(buf.Bytes(), &j); err != nil {
				t.Fatalf("junit does not parse: %v\n%s", err, out)
			}
			if j.Tests != tc.tests || j.Failures != tc.failures {
				t.Errorf("testsuites tests=%d failures=%d, want %d %d", j.Tests, j.Failures, tc.tests, tc.failures)
			}
			if len(j.Suites) != 1 {
				t.Fatalf("%d testsuites, want 1", len(j.Suites))
			}
			s := j.Suites[0]
			if s.Name != "vxlan-churn" || s.Tests != tc.tests || s.Failures != tc.failures || len(s.Cases) != tc.tests {
				t.Errorf("testsuite name=%q tests=%d failures=%d cases=%d", s.Name, s.Tests, s.Failures, len(s.Cases))
			}
			if s.Time != "14.230" || s.Timestamp != "2025-03-14T09:26:53" {
				t.Errorf("testsuite time=%q timestamp=%q", s.Time, s.Timestamp)
			}
			props := map[string]string{}
			for _, p := range s.Props {
				props[p.Name] = p.Value
			}
			if props["backend"] != "vxlan" || props["seed"] != "42" || props["lab"] != "churn" {
				t.Errorf("properties: %v", props)
			}
			failed := 0
			byName := map[string]int{}
			for i, c := range s.Cases {
				byName[c.Name] = i
				if c.ClassName != "overlaylab.vxlan-churn" {
					t.Errorf("case %q classname %q", c.Name, c.ClassName)
				}
				if c.Failure != nil {
					failed++
				}
			}
			if failed != tc.failures {
				t.Errorf("%d failed cases, want %d", failed, tc.failures)
			}
			if i, ok := byName["mesh-ready"]; !ok || s.Cases[i].Failure != nil || s.Cases[i].Time != "0.900" {
				t.Errorf("mesh-ready case wrong: %+v", s.Cases)
			}
			mesh := s.Cases[byName["mesh-after-restart"]]
			if mesh.Failure == nil {
				t.Fatal("mesh-after-restart did not fail")
			}
			if mesh.Failure.Message != "3 of 11 probed pairs broke the expectation" {
				t.Errorf("failure message %q", mesh.Failure.Message)
			}
			for _, want := range []string{
				`from\to`, "h1/c1", "FAIL 0/3", "FAIL 1/3", "LEAK 3/3", "ok 3/3", "ok 0/3",
				"pcaps/mesh-after-restart.pcap", "3 of 11 probed pairs",
			} {
				if !strings.Contains(mesh.Failure.Text, want) {
					t.Errorf("failure text lacks %q:\n%s", want, mesh.Failure.Text)
				}
			}
			agent := s.Cases[byName["h2-agent-log"]]
			if agent.Failure == nil || !strings.Contains(agent.Failure.Text, `"etcd: context deadline exceeded"`) {
				t.Errorf("agent failure: %+v", agent.Failure)
			}
			i, hasSetup := byName["setup"]
			if hasSetup != (tc.r.Error != "") {
				t.Errorf("setup case present=%v with Error %q", hasSetup, tc.r.Error)
			}
			if hasSetup && (s.Cases[i].Failure == nil || s.Cases[i].Failure.Message != tc.r.Error) {
				t.Errorf("setup case: %+v", s.Cases[i].Failure)
			}
			for _, want := range []string{"+3s", "add-h5", "agent-kill", "signal KILL", "agent h2 not ready after 5s: no lease", "host-remove (line 31)"} {
				if !strings.Contains(s.SystemOut, want) {
					t.Errorf("system-out lacks %q:\n%s", want, s.SystemOut)
				}
			}
			if n := strings.Count(strings.TrimSpace(s.SystemOut), "\n"); n != len(tc.r.Timeline) {
				t.Errorf("system-out has %d step lines, want %d:\n%s", n, len(tc.r.Timeline), s.SystemOut)
			}
		})
	}
}

// TestWriteJUnitControlChars: bytes XML cannot carry (ANSI colours from a
// log) must not make the report unreadable.
func TestWriteJUnitControlChars(t *testing.T) {
	r := sampleResult()
	r.Expectations[3].Message = "\x1b[31merror\x1b[0m \x00 nul"
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, r); err != nil {
		t.Fatal(err)
	}
	var j parsedJUnit
	if err := xml.Unmarshal(buf.Bytes(), &j); err != nil {
		t.Fatalf("junit with control characters does not parse: %v", err)
	}
	var text string
	for _, c := range j.Suites[0].Cases {
		if c.Name == "h2-agent-log" && c.Failure != nil {
			text = c.Failure.Text
		}
	}
	if !strings.HasPrefix(text, "\uFFFD[31merror\uFFFD[0m \uFFFD nul\n") {
		t.Errorf("failure text %q", text)
	}
}

// checkWellFormed parses the page as XML: the template is written so that
// its output is well-formed, which catches unbalanced tags.
func checkWellFormed(t *testing.T, page string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			line := strings.Split(page, "\n")
			n, _ := d.InputPos()
			t.Fatalf("HTML not well-formed: %v (line %d: %.200s)", err, n, line[min(n, len(line))-1])
		}
	}
}

func TestWriteHTML(t *testing.T) {
	for _, r := range []*Result{sampleResult(), errorResult()} {
		var buf bytes.Buffer
		if err := WriteHTML(&buf, r); err != nil {
			t.Fatal(err)
		}
		page := buf.String()
		checkWellFormed(t, page)
		want := []string{
			"<svg", "FAILED", `class="badge fail"`, "vxlan-churn", "churn", "10.10.0.0/16",
			"192.168.77.0/24", "192.168.77.250", "2025-03-14 09:26:53 UTC", "14.23s",
			"added at 3s", "removed at 8s", `href="pcaps/mesh-after-restart.pcap"`,
			`href="dumps/etcd-keys.txt"`, `href="#expect-5"`,
		}
		for _, h := range r.Topology.Hosts {
			want = append(want, ">"+h.Name+"<", h.UnderlayIP, h.Subnet)
		}
		for _, s := range r.Timeline {
			want = append(want, ">"+s.Name+"<")
		}
		for _, e := range r.Expectations {
			want = append(want, ">"+e.Name+"<")
		}
		for _, w := range want {
			if !strings.Contains(page, w) {
				t.Errorf("page lacks %q", w)
			}
		}
		if got, want := strings.Count(page, `class="cell-bad"`), badCells(r); got != want {
			t.Errorf("%d bad cells marked, want %d", got, want)
		}
		if got := strings.Count(page, `class="cell-none"`); got != 4+4+1 {
			t.Errorf("%d not-probed cells, want 9 (two diagonals and one pair)", got)
		}
		if got := strings.Count(page, `<span class="badge small fail">FAIL</span>`); got != 2 {
			t.Errorf("%d failed expectation badges, want 2", got)
		}
		hasErr := strings.Contains(page, `class="runerror"`)
		if hasErr != (r.Error != "") || (hasErr && !strings.Contains(page, "lab did not come up")) {
			t.Errorf("run error box shown=%v with Error %q", hasErr, r.Error)
		}
		// Self-contained: nothing is loaded from elsewhere.
		for _, bad := range []string{"<script", "<link", "src=", "http://", "https://"} {
			if strings.Contains(strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
				t.Errorf("page contains %q", bad)
			}
		}
	}
}

func TestWriteHTMLPassed(t *testing.T) {
	r := sampleResult()
	r.Passed = true
	for i := range r.Expectations {
		r.Expectations[i].Passed = true
		if m := r.Expectations[i].Matrix; m != nil {
			for _, row := range m.Bad {
				clear(row)
			}
		}
	}
	r.Timeline[2].Error = ""
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkWellFormed(t, page)
	if !strings.Contains(page, `<span class="badge pass">PASSED</span>`) || strings.Contains(page, "FAILED") {
		t.Error("passed run not shown as PASSED")
	}
	if strings.Contains(page, `class="cell-bad"`) {
		t.Error("bad cell in a passed run")
	}
}

func TestReportsEscapeHostileStrings(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	r := errorResult()
	r.Scenario = evil
	r.Lab = evil
	r.Error = evil
	r.Topology.Hosts[0].Name = evil
	r.Topology.Hosts[0].Containers[0].Name = evil
	r.Timeline[0].Name = evil
	r.Timeline[0].Detail = evil
	r.Expectations[4].Name = evil
	r.Expectations[4].Message = evil + "\n]]></failure>"
	r.Expectations[4].Matrix.Endpoints[0] = evil
	r.Expectations[4].Pcap = "javascript:alert(1)"
	r.Artifacts = append(r.Artifacts, `"><script>alert(2)</script>`)

	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkWellFormed(t, page)
	if strings.Contains(page, "<script") {
		t.Error("unescaped <script in HTML")
	}
	if strings.Contains(page, `href="javascript:`) {
		t.Error("javascript: URL in an href")
	}
	if !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("hostile name not shown escaped")
	}

	buf.Reset()
	if err := WriteJUnit(&buf, r); err != nil {
		t.Fatal(err)
	}
	var j parsedJUnit
	if err := xml.Unmarshal(buf.Bytes(), &j); err != nil {
		t.Fatalf("junit with hostile strings does not parse: %v", err)
	}
	if s := j.Suites[0]; s.Name != evil || !strings.Contains(s.SystemOut, evil) ||
		!strings.Contains(s.Cases[5].Failure.Text, "]]></failure>") {
		t.Errorf("hostile strings did not survive the XML round trip: %q", s.Name)
	}
	buf.Reset()
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Scenario != evil {
		t.Errorf("JSON with hostile strings: %v %q", err, back.Scenario)
	}
}

func TestWriteReports(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "run-1")
	paths, err := WriteReports(dir, sampleResult())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"result.json", "junit.xml", "report.html"}
	if len(paths) != len(want) {
		t.Fatalf("paths %v", paths)
	}
	for i, p := range paths {
		if p != filepath.Join(dir, want[i]) {
			t.Errorf("path %d = %s, want %s", i, p, want[i])
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() == 0 || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: size %d mode %v", p, fi.Size(), fi.Mode())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("dir holds %d entries (temporary files left?)", len(entries))
	}
	// A second run into the same dir replaces the reports.
	if _, err := WriteReports(dir, errorResult()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(paths[0])
	if !strings.Contains(string(data), "lab did not come up") {
		t.Error("result.json not replaced")
	}
	if _, err := WriteReports(dir, nil); err == nil {
		t.Error("nil result accepted")
	}
}

// bigResult is a lab of n hosts with 3 containers each.
func bigResult(n int) *Result {
	r := sampleResult()
	r.Topology.Hosts = nil
	for i := 1; i <= n; i++ {
		h := TopologyHost{
			Name:       fmt.Sprintf("h%d", i),
			UnderlayIP: fmt.Sprintf("192.168.77.%d", i),
			Subnet:     fmt.Sprintf("10.10.%d.0/24", i),
		}
		for c := 1; c <= 3; c++ {
			h.Containers = append(h.Containers, TopologyContainer{Name: fmt.Sprintf("c%d", c), IP: fmt.Sprintf("10.10.%d.%d", i, c+1)})
		}
		if i == n {
			h.AddedAt = durPtr(3 * time.Second)
			h.Containers = append(h.Containers, make([]TopologyContainer, 10)...) // more than are drawn
		}
		r.Topology.Hosts = append(r.Topology.Hosts, h)
	}
	return r
}

type box struct{ x, y, w, h int }

func (a box) overlaps(b box) bool {
	return a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h
}

// TestTopologyLayout: twenty hosts wrap into rows that stay on the canvas
// without any box overlapping another.
func TestTopologyLayout(t *testing.T) {
	for _, n := range []int{0, 1, 3, 5, 20} {
		r := bigResult(n)
		v := layoutTopology(&r.Topology)
		if len(v.Nodes) != n+1 {
			t.Fatalf("%d hosts: %d nodes", n, len(v.Nodes))
		}
		if v.W > 1200 {
			t.Errorf("%d hosts: drawing %dpx wide", n, v.W)
		}
		var boxes []box
		for _, nd := range v.Nodes {
			boxes = append(boxes, box{nd.X, nd.Y, nd.W, nd.H})
			for _, c := range nd.Ctrs {
				boxes = append(boxes, box{c.X, c.Y, c.W, c.H})
			}
			if nd.More != nil {
				boxes = append(boxes, box{nd.More.X, nd.More.Y - 10, 60, 12})
			}
		}
		for i, a := range boxes {
			if a.x < 0 || a.y < 0 || a.x+a.w > v.W || a.y+a.h > v.H {
				t.Errorf("%d hosts: box %+v outside %dx%d", n, a, v.W, v.H)
			}
			for _, b := range boxes[i+1:] {
				if a.overlaps(b) {
					t.Errorf("%d hosts: boxes %+v and %+v overlap", n, a, b)
				}
			}
		}
		if n == 20 && (len(v.Buses) < 3 || v.Trunk == nil) {
			t.Errorf("20 hosts: %d bus rows, trunk %v", len(v.Buses), v.Trunk)
		}
		if n == 20 && v.Nodes[20].More == nil {
			t.Error("13 containers drawn without a +N more note")
		}
	}
	var buf bytes.Buffer
	if err := WriteHTML(&buf, bigResult(20)); err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, buf.String())
	if !strings.Contains(buf.String(), ">h20<") || !strings.Contains(buf.String(), "7 more<") {
		t.Error("20-host page lacks h20 or the +7 more note")
	}
}

func TestChartLayout(t *testing.T) {
	r := sampleResult()
	v := layoutChart(r)
	if len(v.Rows) != len(r.Timeline)+len(r.Expectations) {
		t.Fatalf("%d rows", len(v.Rows))
	}
	if n := len(v.Ticks); n < 4 || n > 12 {
		t.Errorf("%d ticks", n)
	}
	if last := v.Ticks[len(v.Ticks)-1]; last.X != v.PlotEnd || last.Label != "14s" {
		t.Errorf("axis ends at %+v, plot end %d", last, v.PlotEnd)
	}
	for _, row := range v.Rows {
		if row.BarX < v.PlotX || row.BarX+row.BarW > v.PlotEnd+3 || row.BarW <= 0 {
			t.Errorf("bar %+v outside the plot %d..%d", row, v.PlotX, v.PlotEnd)
		}
	}
	// An empty run still draws an axis.
	if v := layoutChart(&Result{}); len(v.Ticks) < 2 {
		t.Errorf("empty run: %d ticks", len(v.Ticks))
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct {
		span time.Duration
		want time.Duration
	}{
		{14 * time.Second, 2 * time.Second},
		{10 * time.Second, time.Second},
		{900 * time.Millisecond, 100 * time.Millisecond},
		{3 * time.Minute, 30 * time.Second},
		{25 * time.Minute, 5 * time.Minute},
		{time.Nanosecond, time.Microsecond},
	} {
		if got := niceStep(tc.span, 10); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.span, got, tc.want)
		}
	}
}

// TestRenderSample writes the sample page for a person to look at:
//
//	OVERLAYLAB_REPORT_SAMPLE=/tmp/overlaylab-report-sample.html go test -run RenderSample ./scenarios/
func TestRenderSample(t *testing.T) {
	path := os.Getenv("OVERLAYLAB_REPORT_SAMPLE")
	if path == "" {
		t.Skip("OVERLAYLAB_REPORT_SAMPLE not set")
	}
	for name, r := range map[string]*Result{path: sampleResult(), strings.TrimSuffix(path, ".html") + "-20.html": bigResult(20)} {
		var buf bytes.Buffer
		if err := WriteHTML(&buf, r); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", name)
	}
}

// A flow check's result is drawn as bytes over time, its longest stall
// shaded, in the HTML report and kept in the JSON.
func TestFlowPlot(t *testing.T) {
	r := &Result{Scenario: "flows", Expectations: []ExpectResult{{Name: "held", Kind: "flow", Passed: false,
		Flow: &FlowResult{Proto: "tcp", Bytes: 3000, Duration: 4 * time.Second, MaxStall: 2 * time.Second, Samples: []FlowSample{
			{At: time.Second, Bytes: 1000}, {At: 2 * time.Second, Bytes: 1000}, {At: 3 * time.Second, Bytes: 1000}, {At: 4 * time.Second, Bytes: 3000}}}}}}
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{`class="flowplot"`, `<polyline class="flowline"`, `class="stall"`, "no bytes from &#43;1s to &#43;3s"} {
		if !strings.Contains(html, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js.String(), `"maxStallNs": 2000000000`) {
		t.Errorf("json: %s", js.String())
	}
}
