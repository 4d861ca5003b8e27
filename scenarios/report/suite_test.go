package report

import (
	"encoding/xml"
	"os"
	"strings"
	"testing"
	"time"
)

// WriteSuite writes a combined junit.xml (one testsuite per scenario and
// agent, repetitions prefixed, a run without a result as a failing case)
// and an index page, both readable by others, as the per-run reports are.
func TestWriteSuite(t *testing.T) {
	pass := func(d time.Duration) *Result {
		return &Result{Scenario: "s", Passed: true, Duration: d, Expectations: []ExpectResult{{Name: "e", Passed: true}}}
	}
	fail := &Result{Scenario: "s", Duration: time.Second, Expectations: []ExpectResult{{Name: "e", Message: "broke"}}}
	runs := []SuiteRun{
		{Scenario: "s", Agent: "a", Repeat: 1, Dir: "s-a-r1", Result: pass(2 * time.Second)},
		{Scenario: "s", Agent: "a", Repeat: 2, Dir: "s-a-r2", Result: fail},
		{Scenario: "s", Agent: "b", Repeat: 1, Dir: "s-b-r1", Err: "lab name taken"},
	}
	dir := t.TempDir()
	paths, err := WriteSuite(dir, runs)
	if err != nil || len(paths) != 2 {
		t.Fatalf("WriteSuite = %v, %v", paths, err)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, mode %v; want 0644", p, err, fi.Mode())
		}
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	var doc junitSuites
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Tests != 3 || doc.Failures != 2 || doc.Time != "3.000" || len(doc.Suites) != 2 {
		t.Fatalf("testsuites: tests %d failures %d time %s, %d suites; want 3, 2, 3.000, 2", doc.Tests, doc.Failures, doc.Time, len(doc.Suites))
	}
	a := doc.Suites[0]
	if a.Name != "s [a]" || a.Tests != 2 || a.Failures != 1 || a.Time != "3.000" || a.Cases[0].Name != "#1 e" || a.Cases[1].Name != "#2 e" {
		t.Errorf("suite a: %+v", a)
	}
	if b := doc.Suites[1]; b.Tests != 1 || b.Failures != 1 || b.Cases[0].Failure == nil || b.Cases[0].Failure.Message != "lab name taken" {
		t.Errorf("suite b: %+v", b)
	}
	index, err := os.ReadFile(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 of 3 runs passed", `href="s-a-r1/report.html"`, `title="lab name taken"`} {
		if !strings.Contains(string(index), want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
}
