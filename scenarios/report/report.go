package report

import (
	_ "embed"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// The files WriteReports writes, in the order it returns their paths.
const (
	reportJSONName  = "result.json"
	reportJUnitName = "junit.xml"
	reportHTMLName  = "report.html"
)

var errNilResult = errors.New("nil result")

// WriteReports writes result.json, junit.xml and report.html into dir
// (created if missing) and returns their paths. Each file is written to a
// temporary name and renamed into place, so a reader never sees half a
// report, and a rerun into the same dir replaces the previous one.
func WriteReports(dir string, r *Result) ([]string, error) {
	if r == nil {
		return nil, errNilResult
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create report dir: %w", err)
	}
	writers := []struct {
		name  string
		write func(io.Writer, *Result) error
	}{
		{reportJSONName, WriteJSON},
		{reportJUnitName, WriteJUnit},
		{reportHTMLName, WriteHTML},
	}
	paths := make([]string, 0, len(writers))
	for _, wr := range writers {
		path := filepath.Join(dir, wr.name)
		if err := writeFileAtomic(path, func(w io.Writer) error { return wr.write(w, r) }); err != nil {
			return paths, fmt.Errorf("write %s: %w", path, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// writeFileAtomic writes path through a temporary file renamed into place.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; reports are meant to be read by CI and
	// by people other than the (root) runner.
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// WriteJSON writes the Result as indented JSON.
func WriteJSON(w io.Writer, r *Result) error {
	if r == nil {
		return errNilResult
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Messages and details are full of "<", ">" and "&" (matrices, "a -> b");
	// the file is never embedded in HTML, so keep them readable.
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// ---------------------------------------------------------------------------
// JUnit XML

// The JUnit schema as CI tools read it (Jenkins, GitLab, GitHub actions that
// publish test results): a testsuites root holding one testsuite.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
	SystemOut  *junitCDATA     `xml:"system-out,omitempty"`

	dur time.Duration // what Time says, for the root's total
}

type junitCDATA struct {
	Text string `xml:",cdata"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	ClassName string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	// Bodies are CDATA so that the matrix keeps its line breaks for a person
	// reading the file (chardata would write each one as &#xA;).
	Text string `xml:",cdata"`
}

// WriteJUnit writes the Result as a JUnit XML report: one testsuite named
// after the scenario, one testcase per expectation (plus a failing "setup"
// case when Result.Error is set), the timeline in system-out.
func WriteJUnit(w io.Writer, r *Result) error {
	if r == nil {
		return errNilResult
	}
	suite := junitSuiteOf(r, r.Scenario)
	return writeJUnitDoc(w, []junitSuite{suite})
}

// junitSuiteOf is one run as a testsuite.
func junitSuiteOf(r *Result, name string) junitSuite {
	suite := junitSuite{
		Name: name,
		Properties: []junitProperty{
			{"file", r.File},
			{"lab", r.Lab},
			{"backend", r.Backend},
			{"network", r.Network},
			{"underlay", r.Topology.Underlay},
			{"seed", fmt.Sprint(r.Seed)},
		},
	}
	if r.Runtime != "" {
		suite.Properties = append(suite.Properties, junitProperty{"runtime", r.Runtime})
	}
	for _, h := range r.Topology.Hosts {
		if h.Agent.Path != "" {
			suite.Properties = append(suite.Properties, junitProperty{"agent." + h.Name, h.Agent.Path + " (" + h.Agent.Version + ")"})
		}
	}
	if out := timelineText(r); out != "" {
		suite.SystemOut = &junitCDATA{xmlText(out)}
	}
	if !r.Started.IsZero() {
		// The JUnit schema's timestamp has no zone: write UTC.
		suite.Timestamp = r.Started.UTC().Format("2006-01-02T15:04:05")
	}
	class := "overlaylab." + r.Scenario
	if r.Error != "" {
		suite.Cases = append(suite.Cases, junitCase{
			ClassName: class,
			Name:      "setup",
			Time:      junitSeconds(0),
			Failure:   &junitFailure{Message: r.Error, Type: "setup", Text: xmlText(r.Error)},
		})
	}
	for i := range r.Expectations {
		e := &r.Expectations[i]
		c := junitCase{ClassName: class, Name: e.Name, Time: junitSeconds(e.End - e.Start)}
		if !e.Passed {
			c.Failure = &junitFailure{Message: e.Message, Type: string(e.Kind), Text: xmlText(failureText(e))}
		}
		suite.Cases = append(suite.Cases, c)
	}
	suite.tally(r.Duration)
	return suite
}

// tally sets the suite's counts from its cases, and its time.
func (s *junitSuite) tally(d time.Duration) {
	s.Tests, s.Failures = len(s.Cases), 0
	for _, c := range s.Cases {
		if c.Failure != nil {
			s.Failures++
		}
	}
	s.Time, s.dur = junitSeconds(d), d
}

// writeJUnitDoc writes suites under one testsuites root.
func writeJUnitDoc(w io.Writer, suites []junitSuite) error {
	doc := junitSuites{Name: "overlaylab", Suites: suites}
	var total time.Duration
	for _, s := range suites {
		doc.Tests += s.Tests
		doc.Failures += s.Failures
		total += s.dur
	}
	doc.Time = junitSeconds(total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encode junit: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// xmlText makes s safe to write as CDATA, which encoding/xml writes
// verbatim: characters XML 1.0 cannot carry at all (NUL, the ESC of a
// coloured log line, invalid UTF-8) become U+FFFD. Attributes and chardata
// need none of this; the encoder does the same for them.
func xmlText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r',
			r >= 0x20 && r <= 0xD7FF,
			r >= 0xE000 && r <= 0xFFFD,
			r >= 0x10000 && r <= 0x10FFFF:
			return r
		}
		return '\uFFFD'
	}, s)
}

func junitSeconds(d time.Duration) string {
	return fmt.Sprintf("%.3f", max(d, 0).Seconds())
}

// failureText is the body of a failed expectation's <failure>: its message,
// when it was checked, the ping matrix and the capture.
func failureText(e *ExpectResult) string {
	var b strings.Builder
	b.WriteString(strings.TrimRight(e.Message, "\n"))
	fmt.Fprintf(&b, "\n\n%s check %q, %s, checked %s..%s\n", e.Kind, e.Name, e.When, shortDur(e.Start), shortDur(e.End))
	if e.Matrix != nil {
		b.WriteString("\n")
		b.WriteString(matrixText(e.Matrix))
	}
	if e.Pcap != "" {
		fmt.Fprintf(&b, "\ncapture: %s\n", e.Pcap)
	}
	return b.String()
}

// matrixText renders a ping matrix as an aligned text table.
func matrixText(m *MatrixResult) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, `from\to`)
	for _, ep := range m.Endpoints {
		fmt.Fprintf(tw, "\t%s", ep)
	}
	fmt.Fprintln(tw)
	for i, from := range m.Endpoints {
		fmt.Fprint(tw, from)
		for j := range m.Endpoints {
			c := matrixCell(m, i, j)
			switch {
			case !c.probed:
				fmt.Fprint(tw, "\t-")
			default:
				fmt.Fprintf(tw, "\t%s %d/%d", c.verdict(), c.received, c.sent)
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	b.WriteString("cells: received/sent; ok = as wanted, FAIL = lost (wanted answers), " +
		"LEAK = answered (wanted silence), - = not probed\n")
	return b.String()
}

// cell is one pair of a ping matrix, read defensively: the matrix comes from
// a run that may have been cut short, so its rows may be ragged.
type cell struct {
	want           string
	sent, received int
	bad, probed    bool
}

func matrixCell(m *MatrixResult, i, j int) cell {
	var c cell
	if i < len(m.Want) && j < len(m.Want[i]) {
		c.want = m.Want[i][j]
	}
	if i < len(m.Sent) && j < len(m.Sent[i]) {
		c.sent = m.Sent[i][j]
	}
	if i < len(m.Received) && j < len(m.Received[i]) {
		c.received = m.Received[i][j]
	}
	if i < len(m.Bad) && j < len(m.Bad[i]) {
		c.bad = m.Bad[i][j]
	}
	// A bad cell is always shown, even if its counts are missing.
	c.probed = c.bad || (c.want != "" && c.sent > 0)
	return c
}

func (c cell) verdict() string {
	switch {
	case !c.bad:
		return "ok"
	case c.want == "silent":
		return "LEAK"
	default:
		return "FAIL"
	}
}

// timelineText is the timeline, one aligned line per step.
func timelineText(r *Result) string {
	if len(r.Timeline) == 0 {
		return ""
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "offset\tstep\taction\thost\tdetail\ttook\terror")
	for _, s := range r.Timeline {
		fmt.Fprintf(tw, "+%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortDur(s.At), oneLine(s.Name), s.Action,
			dash(s.Host), dash(oneLine(s.Detail)), shortDur(s.Duration), oneLine(s.Error))
	}
	tw.Flush()
	// tabwriter pads the empty error column: trim it.
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n") + "\n"
}

// oneLine keeps a table row on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDur prints a duration rounded to what a person reads: to the
// millisecond above a second, to 0.1 ms above a millisecond, else to the µs.
func shortDur(d time.Duration) string {
	switch a := d.Abs(); {
	case a >= time.Second:
		return d.Round(time.Millisecond).String()
	case a >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// ---------------------------------------------------------------------------
// HTML

//go:embed report.html.tmpl
var reportHTMLText string

var reportHTMLTmpl = template.Must(template.New("report").Parse(reportHTMLText))

// WriteHTML writes a self-contained HTML page: header, topology drawing,
// timeline (table and chart), expectations with ping matrices, artifacts.
func WriteHTML(w io.Writer, r *Result) error {
	if r == nil {
		return errNilResult
	}
	if err := reportHTMLTmpl.Execute(w, newHTMLView(r)); err != nil {
		return fmt.Errorf("render html: %w", err)
	}
	return nil
}

// htmlView is everything the template shows, laid out in Go so the
// template only places values.
type htmlView struct {
	R        *Result
	Started  string
	Duration string
	Passed   int
	Failed   int
	StepErrs int
	Failing  []htmlExpectLink
	Topo     topoView
	Steps    []htmlStep
	Chart    chartView
	Expects  []htmlExpect
	// Agents says which agents ran ("overlaylab" or per host), HostAgents
	// lists them when the hosts differ.
	Agents     string
	HostAgents []TopologyHost
}

type htmlExpectLink struct {
	ID, Name string
}

type htmlStep struct {
	StepResult
	Offset, Took string
}

type htmlExpect struct {
	ExpectResult
	ID       string
	Interval string
	Grid     *htmlMatrix // the Matrix, laid out
	Plot     *flowPlot   // the Flow, laid out
}

type htmlMatrix struct {
	Endpoints []string
	Rows      []htmlMatrixRow
}

type htmlMatrixRow struct {
	From  string
	Cells []htmlMatrixCell
}

type htmlMatrixCell struct {
	Class string // cell-ok, cell-bad, cell-none
	Text  string // received/sent
	Note  string // small second line: FAIL, LEAK, silent
	Title string // tooltip
}

func newHTMLView(r *Result) *htmlView {
	v := &htmlView{
		R:        r,
		Started:  "-",
		Duration: r.Duration.Round(10 * time.Millisecond).String(),
		Topo:     layoutTopology(&r.Topology),
		Chart:    layoutChart(r),
	}
	if !r.Started.IsZero() {
		v.Started = r.Started.Format("2006-01-02 15:04:05 MST")
	}
	v.Agents, v.HostAgents = agentsOf(&r.Topology)
	for _, s := range r.Timeline {
		if s.Error != "" {
			v.StepErrs++
		}
		v.Steps = append(v.Steps, htmlStep{StepResult: s, Offset: "+" + shortDur(s.At), Took: shortDur(s.Duration)})
	}
	for i, e := range r.Expectations {
		he := htmlExpect{
			ExpectResult: e,
			ID:           fmt.Sprintf("expect-%d", i+1),
			Interval:     shortDur(e.Start) + " .. " + shortDur(e.End),
		}
		if e.Matrix != nil {
			he.Grid = newHTMLMatrix(e.Matrix)
		}
		he.Plot = layoutFlow(e.Flow)
		if e.Passed {
			v.Passed++
		} else {
			v.Failed++
			v.Failing = append(v.Failing, htmlExpectLink{ID: he.ID, Name: e.Name})
		}
		v.Expects = append(v.Expects, he)
	}
	return v
}

func newHTMLMatrix(m *MatrixResult) *htmlMatrix {
	hm := &htmlMatrix{Endpoints: m.Endpoints}
	for i, from := range m.Endpoints {
		row := htmlMatrixRow{From: from}
		for j, to := range m.Endpoints {
			c := matrixCell(m, i, j)
			hc := htmlMatrixCell{Class: "cell-none", Text: "–", Title: from + " → " + to + ": not probed"}
			if c.probed {
				hc.Text = fmt.Sprintf("%d/%d", c.received, c.sent)
				want := c.want
				if want == "" {
					want = "?"
				}
				hc.Title = fmt.Sprintf("%s → %s: %d of %d answered, want %s", from, to, c.received, c.sent, want)
				switch {
				case c.bad:
					hc.Class = "cell-bad"
					hc.Note = c.verdict()
				default:
					hc.Class = "cell-ok"
					if c.want == "silent" {
						hc.Note = "silent"
					}
				}
			}
			row.Cells = append(row.Cells, hc)
		}
		hm.Rows = append(hm.Rows, row)
	}
	return hm
}

// ---------------------------------------------------------------------------
// Topology drawing

// Geometry of the topology drawing, in SVG user units (px at 100%).
const (
	topoMargin    = 16
	topoTrunkX    = 24  // x of the vertical trunk joining wrapped bus rows
	topoSlotW     = 184 // one host column
	topoBoxW      = 164
	topoStem      = 22 // bus to host box
	topoHostH     = 62 // host box without annotation
	topoNoteH     = 14 // per annotation line (added/removed)
	topoCtrGap    = 8
	topoCtrH      = 24
	topoCtrIndent = 14
	topoMaxCols   = 6
	topoMaxCtrs   = 6 // containers drawn per host; the rest are summarised
	topoRowGap    = 26
	topoTopPad    = 30 // room for the CIDR label above the first bus
)

type topoView struct {
	W, H   int
	Label  string // underlay CIDR
	LabelX int
	LabelY int
	Trunk  *svgLine
	Buses  []svgLine
	Nodes  []topoNode
	Empty  bool
}

type svgLine struct{ X1, Y1, X2, Y2 int }

type topoNode struct {
	Etcd    bool
	Dashed  bool
	Removed bool
	X, Y    int // box top-left
	W, H    int
	Stem    svgLine
	TapX    int
	TapY    int
	Lines   []svgText // name, IP, subnet, notes
	Title   string
	CtrLine *svgLine
	Ctrs    []topoCtr
	More    *svgText
}

type svgText struct {
	X, Y  int
	Text  string
	Class string
}

type topoCtr struct {
	X, Y, W, H int
	Tick       svgLine
	Name, IP   string
	NameX, IPX int
	TextY      int
	Title      string
}

// layoutTopology places the etcd node and the hosts along the underlay bus,
// wrapping into rows of topoMaxCols so that 20 hosts keep legible text; each
// row has its own bus segment, joined by a trunk on the left.
func layoutTopology(t *Topology) topoView {
	v := topoView{Label: "underlay " + dash(t.Underlay)}
	type slot struct {
		etcd bool
		host *TopologyHost
	}
	slots := []slot{{etcd: true}}
	for i := range t.Hosts {
		slots = append(slots, slot{host: &t.Hosts[i]})
	}
	cols := min(len(slots), topoMaxCols)
	left := topoTrunkX + 14
	v.W = max(left+cols*topoSlotW+topoMargin, 420)
	v.LabelX, v.LabelY = topoTrunkX, topoMargin+12

	hostHeight := func(h *TopologyHost) int {
		n := 0
		if h.AddedAt != nil {
			n++
		}
		if h.RemovedAt != nil {
			n++
		}
		return topoHostH + n*topoNoteH
	}
	ctrsHeight := func(h *TopologyHost) int {
		n := min(len(h.Containers), topoMaxCtrs)
		if len(h.Containers) > topoMaxCtrs {
			n++ // the "+N more" line
		}
		if n == 0 {
			return 0
		}
		return n * (topoCtrH + topoCtrGap)
	}

	y := topoMargin + topoTopPad
	for start := 0; start < len(slots); start += cols {
		row := slots[start:min(start+cols, len(slots))]
		busY := y
		v.Buses = append(v.Buses, svgLine{topoTrunkX, busY, left + len(row)*topoSlotW - (topoSlotW-topoBoxW)/2, busY})
		rowH := topoHostH
		for i, s := range row {
			x := left + i*topoSlotW
			n := topoNode{X: x, Y: busY + topoStem, W: topoBoxW}
			cx := x + topoBoxW/2
			n.Stem = svgLine{cx, busY, cx, n.Y}
			n.TapX, n.TapY = cx, busY
			tx := x + 10
			if s.etcd {
				n.Etcd = true
				n.H = topoHostH - 16
				n.Lines = []svgText{
					{tx, n.Y + 18, "etcd", "name"},
					{tx, n.Y + 34, dash(t.EtcdIP), "mono"},
				}
				n.Title = "etcd " + t.EtcdIP
			} else {
				h := s.host
				n.H = hostHeight(h)
				n.Dashed = h.AddedAt != nil || h.RemovedAt != nil
				n.Removed = h.RemovedAt != nil
				n.Lines = []svgText{
					{tx, n.Y + 18, clip(h.Name, 20), "name"},
					{tx, n.Y + 35, clip(dash(h.UnderlayIP), 21), "mono"},
					{tx, n.Y + 51, clip(dash(h.Subnet), 21), "mono subnet"},
				}
				ly := n.Y + 51
				if h.AddedAt != nil {
					ly += topoNoteH
					n.Lines = append(n.Lines, svgText{tx, ly, "added at " + shortDur(*h.AddedAt), "note added"})
				}
				if h.RemovedAt != nil {
					ly += topoNoteH
					n.Lines = append(n.Lines, svgText{tx, ly, "removed at " + shortDur(*h.RemovedAt), "note removed"})
				}
				n.Title = fmt.Sprintf("%s: underlay %s, subnet %s", h.Name, dash(h.UnderlayIP), dash(h.Subnet))
				layoutContainers(&n, h)
			}
			h := n.H
			if !s.etcd {
				h += ctrsHeight(s.host)
			}
			rowH = max(rowH, h)
			v.Nodes = append(v.Nodes, n)
		}
		y += rowH + topoStem + topoRowGap
	}
	if len(v.Buses) > 1 {
		v.Trunk = &svgLine{topoTrunkX, v.Buses[0].Y1, topoTrunkX, v.Buses[len(v.Buses)-1].Y1}
	}
	v.H = y - topoRowGap + topoMargin
	v.Empty = len(t.Hosts) == 0
	return v
}

// layoutContainers hangs a host's containers under its box on a short
// vertical line (the host's bridge), indented so the line shows.
func layoutContainers(n *topoNode, h *TopologyHost) {
	if len(h.Containers) == 0 {
		return
	}
	lineX := n.X + topoCtrIndent/2
	y := n.Y + n.H + topoCtrGap
	last := y
	for i, c := range h.Containers {
		if i == topoMaxCtrs {
			more := len(h.Containers) - topoMaxCtrs
			n.More = &svgText{n.X + topoCtrIndent + 6, y + topoCtrH/2 + 4, fmt.Sprintf("+%d more", more), "note"}
			break
		}
		ct := topoCtr{
			X: n.X + topoCtrIndent, Y: y, W: topoBoxW - topoCtrIndent, H: topoCtrH,
			Name: clip(c.Name, 6), IP: clip(dash(c.IP), 15),
			Title: c.Name + " " + c.IP,
		}
		ct.Tick = svgLine{lineX, y + topoCtrH/2, ct.X, y + topoCtrH/2}
		// The name from the left edge, the address right-aligned: both fit
		// side by side at their clipped widths.
		ct.NameX = ct.X + 7
		ct.IPX = ct.X + ct.W - 7
		ct.TextY = y + topoCtrH/2 + 4
		last = y + topoCtrH/2
		n.Ctrs = append(n.Ctrs, ct)
		y += topoCtrH + topoCtrGap
	}
	n.CtrLine = &svgLine{lineX, n.Y + n.H, lineX, last}
}

// clip shortens s to n runes so it fits its box; the full text is in the
// element's <title>.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// ---------------------------------------------------------------------------
// Timeline chart

const (
	chartLabelW = 230
	chartPlotW  = 680
	chartRowH   = 22
	chartTop    = 30
	chartPad    = 14
)

type chartView struct {
	W, H    int
	PlotX   int
	PlotW   int
	PlotEnd int
	AxisY   int
	TickY   int
	BottomY int
	Ticks   []chartTick
	Markers []chartMarker
	Rows    []chartRow
	Sep     *svgLine
}

type chartTick struct {
	X     int
	Label string
}

type chartMarker struct {
	X     int
	Error bool
}

type chartRow struct {
	Y          int // row top
	LabelY     int
	Label      string
	Title      string
	LabelClass string
	Class      string // bar-step, bar-step-err, bar-pass, bar-fail
	BarX, BarW int
	BarY, BarH int
	Diamond    string // polygon points for a step's start marker
}

// layoutChart draws the run as rows on a shared time axis: one row per step
// (a diamond at its start, a bar for its duration) and one per expectation
// (a bar over Start..End), so a failed check can be read against the
// faults before it. Every step also drops a faint line across all rows.
func layoutChart(r *Result) chartView {
	end := time.Duration(0)
	for _, s := range r.Timeline {
		end = max(end, s.At+s.Duration)
	}
	for _, e := range r.Expectations {
		end = max(end, e.End, e.Start)
	}
	if end <= 0 {
		end = r.Duration
	}
	if end <= 0 {
		end = time.Second
	}
	step := niceStep(end, 10)
	// End the axis on a tick at or after the last event.
	axisEnd := time.Duration(math.Ceil(float64(end)/float64(step))) * step

	v := chartView{PlotX: chartLabelW, PlotW: chartPlotW, PlotEnd: chartLabelW + chartPlotW,
		AxisY: chartTop, TickY: chartTop - 8}
	v.W = chartLabelW + chartPlotW + 40
	xOf := func(d time.Duration) int {
		d = min(max(d, 0), axisEnd)
		return v.PlotX + int(math.Round(float64(d)/float64(axisEnd)*float64(v.PlotW)))
	}
	for t := time.Duration(0); t <= axisEnd; t += step {
		v.Ticks = append(v.Ticks, chartTick{xOf(t), shortDur(t)})
	}

	y := chartTop + 8
	for _, s := range r.Timeline {
		x := xOf(s.At)
		row := chartRow{
			Y: y, LabelY: y + chartRowH/2 + 4, LabelClass: "lbl-step",
			Label: clip(s.Name, 30),
			Title: fmt.Sprintf("%s: %s %s at +%s, took %s", s.Name, s.Action, s.Host, shortDur(s.At), shortDur(s.Duration)),
			Class: "bar-step",
			BarX:  x, BarW: max(xOf(s.At+s.Duration)-x, 2),
			BarY: y + 7, BarH: chartRowH - 14,
		}
		if s.Error != "" {
			row.Class = "bar-step-err"
			row.LabelClass = "lbl-fail"
			row.Title += ": " + s.Error
		}
		cy := y + chartRowH/2
		row.Diamond = fmt.Sprintf("%d,%d %d,%d %d,%d %d,%d", x, cy-6, x+6, cy, x, cy+6, x-6, cy)
		v.Markers = append(v.Markers, chartMarker{X: x, Error: s.Error != ""})
		v.Rows = append(v.Rows, row)
		y += chartRowH
	}
	if len(r.Timeline) > 0 && len(r.Expectations) > 0 {
		v.Sep = &svgLine{chartPad, y + 3, v.PlotX + v.PlotW, y + 3}
		y += 6
	}
	for _, e := range r.Expectations {
		x := xOf(e.Start)
		row := chartRow{
			Y: y, LabelY: y + chartRowH/2 + 4, LabelClass: "lbl-expect",
			Label: clip(e.Name, 30),
			Title: fmt.Sprintf("%s (%s, %s): %s .. %s", e.Name, e.Kind, e.When, shortDur(e.Start), shortDur(e.End)),
			Class: "bar-pass",
			BarX:  x, BarW: max(xOf(e.End)-x, 3),
			BarY: y + 5, BarH: chartRowH - 10,
		}
		if !e.Passed {
			row.Class = "bar-fail"
			row.LabelClass = "lbl-fail"
			row.Title += ": FAILED"
		}
		v.Rows = append(v.Rows, row)
		y += chartRowH
	}
	v.BottomY = y + 4
	v.H = v.BottomY + chartPad
	return v
}

// niceStep picks a tick interval of 1, 2 or 5 times a power of ten (in
// seconds, or milliseconds below a second) giving at most about n ticks.
func niceStep(span time.Duration, n int) time.Duration {
	raw := float64(span) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	var step float64
	switch f := raw / mag; {
	case f <= 1:
		step = mag
	case f <= 2:
		step = 2 * mag
	case f <= 5:
		step = 5 * mag
	default:
		step = 10 * mag
	}
	d := time.Duration(step)
	// Past ten seconds, step in whole seconds that read well on a clock.
	if d >= 10*time.Second {
		for _, s := range []time.Duration{10 * time.Second, 15 * time.Second, 30 * time.Second,
			time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute,
			30 * time.Minute, time.Hour} {
			if s >= d {
				return s
			}
		}
	}
	return max(d, time.Microsecond)
}

// agentsOf names the agents of a run: one line when every host ran the same
// binary, else a table of hosts.
func agentsOf(t *Topology) (string, []TopologyHost) {
	seen := map[string]bool{}
	var names []string
	for _, h := range t.Hosts {
		a := h.Agent.Path
		if a == "" {
			continue
		}
		label := filepath.Base(a) + " " + h.Agent.Version
		if !seen[label] {
			seen[label] = true
			names = append(names, label)
		}
	}
	if len(names) <= 1 {
		return strings.Join(names, ""), nil
	}
	return strings.Join(names, "; "), t.Hosts
}

// flowPlot is a flow's bytes over time, laid out as SVG.
type flowPlot struct {
	W, H, X0, X1, Y0, Y1, TickY, TopY int
	Points, DurLabel, BytesLabel      string
	Stalls                            []flowStall
}

type flowStall struct {
	X, Y, W, H int
	Title      string
}

func layoutFlow(f *FlowResult) *flowPlot {
	if f == nil || len(f.Samples) == 0 || f.Duration <= 0 {
		return nil
	}
	p := &flowPlot{W: 720, H: 180, X0: 70, X1: 700, Y0: 150, Y1: 14, TickY: 168, TopY: 20}
	maxB := max(f.Bytes, 1)
	x := func(d time.Duration) int { return p.X0 + int(float64(p.X1-p.X0)*float64(d)/float64(f.Duration)) }
	y := func(b int64) int { return p.Y0 - int(float64(p.Y0-p.Y1)*float64(b)/float64(maxB)) }
	pts := []string{fmt.Sprintf("%d,%d", p.X0, p.Y0)}
	// The longest stretch with no new byte: from the last sample that
	// moved to each later one that did not.
	var longest struct{ from, to time.Duration }
	moved := FlowSample{}
	for _, s := range f.Samples {
		pts = append(pts, fmt.Sprintf("%d,%d", x(s.At), y(s.Bytes)))
		if s.Bytes != moved.Bytes {
			moved = s
			continue
		}
		if s.At-moved.At > longest.to-longest.from {
			longest.from, longest.to = moved.At, s.At
		}
	}
	p.Points = strings.Join(pts, " ")
	p.DurLabel = shortDur(f.Duration)
	p.BytesLabel = fmt.Sprintf("%.1f MB", float64(f.Bytes)/1e6)
	if longest.to > longest.from && f.MaxStall > 0 {
		p.Stalls = []flowStall{{X: x(longest.from), Y: p.Y1, W: max(x(longest.to)-x(longest.from), 1), H: p.Y0 - p.Y1,
			Title: fmt.Sprintf("no bytes from +%s to +%s", shortDur(longest.from), shortDur(longest.to))}}
	}
	return p
}
