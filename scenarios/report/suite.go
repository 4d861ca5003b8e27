package report

import (
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// SuiteRun is one run of a suite: a scenario, played with one agent, one
// repetition of it, and its result in Dir (relative to the suite's dir).
type SuiteRun struct {
	Scenario string
	Agent    string // the agent's label ("overlaylab", "flanneld", "default")
	Repeat   int    // 1-based
	Dir      string
	Result   *Result
	// Err is a failure of the run itself (no result).
	Err string
}

// Passed reports whether the run played and every expectation held.
func (r *SuiteRun) Passed() bool { return r.Err == "" && r.Result != nil && r.Result.Passed }

// WriteSuite writes junit.xml (one testsuite per scenario and agent, one
// testcase per expectation and repetition) and index.html (a pass/fail grid
// of scenarios by agents linking every run's report) into dir, and returns
// their paths.
func WriteSuite(dir string, runs []SuiteRun) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create report dir: %w", err)
	}
	var paths []string
	for _, w := range []struct {
		name  string
		write func(io.Writer, []SuiteRun) error
	}{{reportJUnitName, writeSuiteJUnit}, {"index.html", writeSuiteIndex}} {
		p := filepath.Join(dir, w.name)
		if err := writeFileAtomic(p, func(f io.Writer) error { return w.write(f, runs) }); err != nil {
			return paths, fmt.Errorf("write %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// cellKey groups runs: a scenario with an agent.
type cellKey struct{ scenario, agent string }

func groupRuns(runs []SuiteRun) ([]string, []string, map[cellKey][]*SuiteRun) {
	cells := map[cellKey][]*SuiteRun{}
	var scen, agents []string
	seenS, seenA := map[string]bool{}, map[string]bool{}
	for i := range runs {
		r := &runs[i]
		k := cellKey{r.Scenario, r.Agent}
		cells[k] = append(cells[k], r)
		if !seenS[r.Scenario] {
			seenS[r.Scenario] = true
			scen = append(scen, r.Scenario)
		}
		if !seenA[r.Agent] {
			seenA[r.Agent] = true
			agents = append(agents, r.Agent)
		}
	}
	for _, rs := range cells {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Repeat < rs[j].Repeat })
	}
	return scen, agents, cells
}

func writeSuiteJUnit(w io.Writer, runs []SuiteRun) error {
	scen, agents, cells := groupRuns(runs)
	var suites []junitSuite
	for _, s := range scen {
		for _, a := range agents {
			rs := cells[cellKey{s, a}]
			if len(rs) == 0 {
				continue
			}
			name := s + " [" + a + "]"
			var all junitSuite
			for _, r := range rs {
				prefix := ""
				if len(rs) > 1 {
					prefix = fmt.Sprintf("#%d ", r.Repeat)
				}
				if r.Result == nil {
					all.Cases = append(all.Cases, junitCase{ClassName: "overlaylab." + s, Name: prefix + "run",
						Time: junitSeconds(0), Failure: &junitFailure{Message: r.Err, Type: "run", Text: xmlText(r.Err)}})
					continue
				}
				one := junitSuiteOf(r.Result, name)
				if all.Name == "" {
					all = one
					all.Cases = nil
					all.Properties = append(all.Properties, junitProperty{"agent", a})
				}
				for _, c := range one.Cases {
					c.Name = prefix + c.Name
					c.ClassName = "overlaylab." + s + "." + a
					all.Cases = append(all.Cases, c)
				}
			}
			all.Name = name
			var dur time.Duration
			for _, r := range rs {
				if r.Result != nil {
					dur += r.Result.Duration
				}
			}
			all.tally(dur)
			all.SystemOut = nil
			suites = append(suites, all)
		}
	}
	return writeJUnitDoc(w, suites)
}

var suiteTmpl = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>overlaylab suite: {{.Passed}}/{{.Total}} runs passed</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.4em .7em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.pass{background:#e3f6e3}.fail{background:#fbe2e2}.part{background:#fdf3d6}
td a{margin-right:.4em}.count{font-weight:600}
</style></head><body>
<h1>overlaylab suite</h1>
<p>{{.Passed}} of {{.Total}} runs passed{{if .Failed}}; <strong>{{.Failed}} failed</strong>{{end}}. Rows are scenarios, columns agents; each cell counts the passing repetitions and links every run's report.</p>
<table><tr><th>scenario</th>{{range .Agents}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr><th>{{.Scenario}}</th>{{range .Cells}}<td class="{{.Class}}">{{if .Runs}}<span class="count">{{.Passed}}/{{len .Runs}}</span><br>{{range .Runs}}<a href="{{.Href}}" title="{{.Title}}">{{.Mark}}{{if .Repeat}} #{{.Repeat}}{{end}}</a>{{end}}{{else}}–{{end}}</td>{{end}}</tr>
{{end}}</table>
<p>Combined JUnit: <a href="junit.xml">junit.xml</a></p>
</body></html>
`))

type indexRun struct {
	Href, Title, Mark string
	Repeat            int
}

type indexCell struct {
	Class  string
	Passed int
	Runs   []indexRun
}

type indexRow struct {
	Scenario string
	Cells    []indexCell
}

func writeSuiteIndex(w io.Writer, runs []SuiteRun) error {
	scen, agents, cells := groupRuns(runs)
	v := struct {
		Agents                []string
		Rows                  []indexRow
		Total, Passed, Failed int
	}{Agents: agents, Total: len(runs)}
	for _, s := range scen {
		row := indexRow{Scenario: s}
		for _, a := range agents {
			var c indexCell
			for _, r := range cells[cellKey{s, a}] {
				ir := indexRun{Href: filepath.ToSlash(filepath.Join(r.Dir, "report.html")), Mark: "✗"}
				if len(cells[cellKey{s, a}]) > 1 {
					ir.Repeat = r.Repeat
				}
				switch {
				case r.Passed():
					c.Passed++
					v.Passed++
					ir.Mark = "✓"
					ir.Title = "passed"
				case r.Err != "":
					ir.Title = r.Err
				case r.Result != nil && r.Result.Error != "":
					ir.Title = r.Result.Error
				default:
					ir.Title = "an expectation failed"
				}
				c.Runs = append(c.Runs, ir)
			}
			switch {
			case len(c.Runs) == 0:
			case c.Passed == len(c.Runs):
				c.Class = "pass"
			case c.Passed == 0:
				c.Class = "fail"
			default:
				c.Class = "part"
			}
			row.Cells = append(row.Cells, c)
		}
		v.Rows = append(v.Rows, row)
	}
	v.Failed = v.Total - v.Passed
	return suiteTmpl.Execute(w, v)
}

// AgentLabel names an agent binary in suite reports: its file name, or
// "default" for the scenario's own choice.
func AgentLabel(path string) string {
	if path == "" {
		return "default"
	}
	return strings.TrimSuffix(filepath.Base(path), ".exe")
}
