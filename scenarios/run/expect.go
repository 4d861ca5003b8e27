package run

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

// expect waits for an expectation's moment and checks it.
func (r *runner) expect(ctx context.Context, e *scenarios.Expectation) report.ExpectResult {
	res := report.ExpectResult{Name: e.Name, Kind: string(e.Kind), When: describeWhen(e.When)}
	var end <-chan struct{}
	switch e.When.Kind {
	case scenarios.WhenAt:
		if !sleepUntil(ctx, r.ready.Add(e.When.At)) {
			return failed(res, "cancelled")
		}
	case scenarios.WhenAfter:
		r.waitStep(ctx, e.When.Step)
		r.doneMu.Lock()
		at, ok := r.doneAt[e.When.Step]
		r.doneMu.Unlock()
		if !ok {
			return failed(res, fmt.Sprintf("step %s never completed", e.When.Step))
		}
		sleepUntil(ctx, r.ready.Add(at+e.When.Delay))
	case scenarios.WhenFinal:
		// schedule starts it once the timeline and every other check ended.
	case scenarios.WhenDuring:
		if !r.waitMark(ctx, e.When.From) {
			return failed(res, fmt.Sprintf("window start %s never came", e.When.From))
		}
		ch := make(chan struct{})
		go func() { r.waitMark(ctx, e.When.To); close(ch) }()
		end = ch
	}
	res.Start = r.since()
	var pass bool
	var msg string
	switch e.Kind {
	case scenarios.KindPing:
		pass, msg, res.Matrix, res.Pcap = r.checkPing(ctx, e, end)
	case scenarios.KindEncap:
		pass, msg, res.Pcap = r.checkEncap(ctx, e, end)
	case scenarios.KindPMTU:
		pass, msg = r.checkPMTU(ctx, e)
	case scenarios.KindTCP:
		pass, msg = r.checkTCP(ctx, e)
	case scenarios.KindFlow:
		pass, msg, res.Flow = r.checkFlow(ctx, e, end)
	case scenarios.KindResources:
		pass, msg = r.checkResources(ctx, e, end)
	default:
		pass, msg = r.retry(ctx, e, end)
	}
	res.End = r.since()
	res.Passed, res.Message = pass, msg
	mark := "✓"
	if !pass {
		mark = "✗"
	}
	r.logf("%s expect %s (%s): %s", mark, e.Name, res.When, firstLine(msg))
	return res
}

func failed(res report.ExpectResult, msg string) report.ExpectResult {
	res.Passed, res.Message = false, msg
	return res
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// waitMark waits until a mark: an offset from ready or a step's completion.
func (r *runner) waitMark(ctx context.Context, m scenarios.Mark) bool {
	if m.Step == "" {
		return sleepUntil(ctx, r.ready.Add(m.Offset))
	}
	r.waitStep(ctx, m.Step)
	r.doneMu.Lock()
	_, ok := r.doneAt[m.Step]
	r.doneMu.Unlock()
	return ok
}

func describeWhen(w scenarios.When) string {
	switch w.Kind {
	case scenarios.WhenAt:
		return "at " + w.At.String()
	case scenarios.WhenAfter:
		if w.Delay > 0 {
			return fmt.Sprintf("%s after %s", w.Delay, w.Step)
		}
		return "after " + w.Step
	case scenarios.WhenDuring:
		return fmt.Sprintf("during %s..%s", w.From, w.To)
	}
	return "final"
}

// retry evaluates a state check until it passes or its deadline (within,
// or the window's end) passes; a window check must hold throughout.
func (r *runner) retry(ctx context.Context, e *scenarios.Expectation, end <-chan struct{}) (bool, string) {
	check := func() (bool, string) {
		st := r.lab.Snapshot()
		switch e.Kind {
		case scenarios.KindLease:
			return r.checkLease(ctx, st, e.Lease)
		case scenarios.KindRoute:
			return r.checkRoute(st, e.Route)
		case scenarios.KindAgent:
			return r.checkAgent(ctx, st, e.Agent)
		case scenarios.KindLog:
			return checkLog(st, e.Log)
		case scenarios.KindMetric:
			return checkMetric(ctx, st, e.Metric)
		case scenarios.KindNeigh:
			return r.checkNeigh(st, e.Neigh)
		case scenarios.KindFDB:
			return r.checkFDB(st, e.FDB)
		}
		return false, fmt.Sprintf("no check for %s", e.Kind)
	}
	if end != nil {
		for {
			ok, msg := check()
			if !ok {
				return false, "broken inside the window: " + msg
			}
			select {
			case <-end:
				return true, msg + " (held throughout the window)"
			case <-ctx.Done():
				return false, "cancelled"
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	deadline := time.Now().Add(e.Within)
	for {
		ok, msg := check()
		if ok || !time.Now().Before(deadline) {
			if !ok && e.Within > 0 {
				msg += fmt.Sprintf(" (still so after %s)", e.Within)
			}
			return ok, msg
		}
		select {
		case <-ctx.Done():
			return false, "cancelled"
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *runner) checkLease(ctx context.Context, st *lab.State, c *scenarios.LeaseCheck) (bool, string) {
	key := c.Host
	if c.Network != "" {
		key += "/" + c.Network
	}
	r.mu.Lock()
	was := r.lease[key]
	r.mu.Unlock()
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	now, err := st.LeaseOf(ctx, c.Network, h.UnderlayIP)
	if err != nil {
		return false, err.Error()
	}
	same := now == was
	desc := fmt.Sprintf("%s's lease: %s at ready, now %s", c.Host, was, orNone(now))
	if c.State == scenarios.LeaseUnchanged {
		return same, desc
	}
	return !same, desc
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (r *runner) checkRoute(st *lab.State, c *scenarios.RouteCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	dst, via := c.Dst, c.Via
	if c.Peer != "" {
		if dst, err = r.peerSubnet(c.Peer); err != nil {
			return false, err.Error()
		}
	}
	if c.ViaPeer != "" {
		if via, err = peerUnderlay(st, c.ViaPeer); err != nil {
			return false, err.Error()
		}
	}
	table, err := lab.RouteTable(h.Netns)
	if err != nil {
		return false, err.Error()
	}
	var found string
	var all []string
	for _, rt := range table {
		all = append(all, rt.String())
		if rt.Dst == dst && (!via.IsValid() || rt.Gw == via) {
			found = rt.String()
		}
	}
	what := dst.String()
	if via.IsValid() {
		what += " via " + via.String()
	}
	if c.Present {
		if found == "" {
			return false, fmt.Sprintf("no route to %s on %s; routes: %s", what, c.Host, strings.Join(all, "; "))
		}
		return true, fmt.Sprintf("%s has %q", c.Host, found)
	}
	if found != "" {
		return false, fmt.Sprintf("%s still has %q", c.Host, found)
	}
	return true, fmt.Sprintf("%s has no route to %s", c.Host, what)
}

func (r *runner) checkAgent(ctx context.Context, st *lab.State, c *scenarios.AgentCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	if c.Alive != nil || c.Ready != nil || c.Restarts != nil {
		return r.checkAgentState(ctx, st, h, c)
	}
	if c.Log != nil {
		data, err := os.ReadFile(h.AgentLog)
		if err != nil {
			return false, err.Error()
		}
		if m := c.Log.Find(data); m != nil {
			return true, fmt.Sprintf("%s's agent log matches /%s/ (%d bytes: %q)", c.Host, c.Log, len(m), truncate(string(m), 80))
		}
		return false, fmt.Sprintf("%s's agent log has no match for /%s/", c.Host, c.Log)
	}
	code, how, ok := lab.AgentExit(h)
	if !ok {
		return false, fmt.Sprintf("%s's agent (pid %d) has not exited", c.Host, h.AgentPID)
	}
	if code != *c.ExitCode {
		return false, fmt.Sprintf("%s's agent exited with %d (%s), want %d", c.Host, code, how, *c.ExitCode)
	}
	return true, fmt.Sprintf("%s's agent exited with %d (%s)", c.Host, code, how)
}

// pingPairs resolves a ping check's selectors against the lab now.
func pingPairs(st *lab.State, c *scenarios.PingCheck) ([]lab.Endpoint, func(i, j int) bool) {
	type sel struct{ from, to bool }
	var eps []lab.Endpoint
	var sels []sel
	for _, ep := range st.Endpoints("") {
		if s := (sel{selects(c.From, ep), selects(c.To, ep)}); s.from || s.to {
			eps = append(eps, ep)
			sels = append(sels, s)
		}
	}
	return eps, func(i, j int) bool { return i != j && sels[i].from && sels[j].to }
}

// want is a ping check's expectation in the lab's terms.
func want(c *scenarios.PingCheck) lab.Want {
	switch c.Result {
	case scenarios.ResultNone:
		return lab.Want{Kind: lab.WantNone}
	case scenarios.ResultLoss:
		return lab.Want{Kind: lab.WantLoss, MaxLoss: c.MaxLoss}
	}
	return lab.Want{Kind: lab.WantAll}
}

// checkPing probes the selected pairs while capturing on the underlay.
// Point checks probe in rounds until the expectation holds or within
// passes; windows probe continuously until their end.
func (r *runner) checkPing(ctx context.Context, e *scenarios.Expectation, end <-chan struct{}) (bool, string, *report.MatrixResult, string) {
	c := e.Ping
	st := r.lab.Snapshot()
	eps, pair := pingPairs(st, c)
	if len(eps) < 2 {
		return false, "the selectors pick fewer than two containers", nil, ""
	}
	stopCapture, pcapPath := r.startCapture(ctx, e.Name)
	defer stopCapture()
	w := want(c)
	var m *lab.Matrix
	var err error
	if end != nil {
		wctx, cancel := untilEnd(ctx, end)
		var counts *lab.Counts
		counts, err = lab.Probe(wctx, eps, pair, lab.ProbeOptions{Interval: 200 * time.Millisecond, Size: c.Size, DF: c.DF})
		cancel()
		m = lab.Judge(eps, pair, counts, w)
	} else {
		deadline := time.Now().Add(max(e.Within, time.Second))
		for {
			round := time.Second
			if c.Result == scenarios.ResultLoss {
				round = 2 * time.Second
			}
			wctx, cancel := context.WithTimeout(ctx, round)
			var counts *lab.Counts
			counts, err = lab.Probe(wctx, eps, pair, lab.ProbeOptions{Interval: 100 * time.Millisecond, Size: c.Size, DF: c.DF})
			cancel()
			m = lab.Judge(eps, pair, counts, w)
			if (err == nil && m.OK()) || !time.Now().Before(deadline) || ctx.Err() != nil {
				break
			}
		}
	}
	msg := fmt.Sprintf("%s → %s, %s", c.From, c.To, m.Summary())
	pass := err == nil && m.OK()
	if err != nil {
		msg = err.Error() + "\n" + msg
	}
	return pass, msg + "\n" + m.String(), matrixResult(m), pcapPath
}

// matrixResult is the report's shape of a judged matrix.
func matrixResult(m *lab.Matrix) *report.MatrixResult {
	n := len(m.Endpoints)
	out := &report.MatrixResult{Endpoints: m.Endpoints}
	for i := range n {
		out.Want = append(out.Want, make([]string, n))
		out.Sent = append(out.Sent, make([]int, n))
		out.Received = append(out.Received, make([]int, n))
		out.Bad = append(out.Bad, make([]bool, n))
		for j := range n {
			x := m.Cells[i][j]
			if !x.Probed {
				continue
			}
			out.Sent[i][j], out.Received[i][j], out.Bad[i][j] = x.Sent, x.Received, x.Bad
			out.Want[i][j] = "answer"
			if m.Want.Kind == lab.WantNone {
				out.Want[i][j] = "silent"
			}
		}
	}
	return out
}

// startCapture captures on the underlay bridge for the length of a check
// (the lab makes the bridge promiscuous, so every frame between hosts is
// seen). The returned func stops it and writes the pcap.
func (r *runner) startCapture(ctx context.Context, name string) (func(), string) {
	if r.sc.Artifacts.Pcap == scenarios.PcapNever {
		return func() {}, ""
	}
	rel := filepath.Join("pcaps", safeName(name)+".pcap")
	stop, err := r.lab.CaptureUnderlay(ctx, filepath.Join(r.o.Out, rel))
	if err != nil {
		return func() {}, ""
	}
	return stop, rel
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// checkEncap is the lab's wire check on a host. A point check pings from
// the host's containers to every other host's and requires each answered
// echo to cross the wire in the backend's format; a window check requires
// that nothing crossed bare or wrongly encapsulated and that something
// crossed encapsulated.
func (r *runner) checkEncap(ctx context.Context, e *scenarios.Expectation, end <-chan struct{}) (bool, string, string) {
	c := e.Encap
	rel := filepath.Join("pcaps", safeName(e.Name)+".pcap")
	w := lab.WireCheck{Host: c.Host, Port: c.Port, VNI: c.VNI}
	if r.sc.Artifacts.Pcap != scenarios.PcapNever {
		w.Pcap = filepath.Join(r.o.Out, rel)
	}
	if end != nil {
		w.Traffic = func(ctx context.Context) ([]lab.Endpoint, *lab.Matrix, error) {
			waitEnd(ctx, end)
			return nil, nil, nil
		}
	} else {
		st := r.lab.Snapshot()
		eps := st.Endpoints("")
		pair := func(i, j int) bool {
			return strings.HasPrefix(eps[i].Name, c.Host+"/") && !strings.HasPrefix(eps[j].Name, c.Host+"/")
		}
		w.Traffic = func(ctx context.Context) ([]lab.Endpoint, *lab.Matrix, error) {
			pctx, cancel := context.WithTimeout(ctx, max(e.Within, 2*time.Second))
			defer cancel()
			counts, err := lab.Probe(pctx, eps, pair, lab.ProbeOptions{Interval: 250 * time.Millisecond, UntilAnswered: true})
			return eps, lab.Judge(eps, pair, counts, lab.Want{Kind: lab.WantAll, Once: true}), err
		}
	}
	res, err := r.lab.CheckWire(ctx, w)
	pcap := ""
	if res != nil && res.Pcap != "" {
		pcap = rel
	}
	if err != nil {
		return false, err.Error(), pcap
	}
	return res.OK, res.Summary, pcap
}

// checkAgentState checks alive, ready and restarts together.
func (r *runner) checkAgentState(ctx context.Context, st *lab.State, h *lab.HostState, c *scenarios.AgentCheck) (bool, string) {
	var got []string
	ok := true
	if c.Alive != nil {
		alive := st.AgentAlive(h.Name)
		got = append(got, fmt.Sprintf("alive=%v (pid %d)", alive, h.AgentPID))
		ok = ok && alive == *c.Alive
	}
	if c.Ready != nil {
		ready, why := r.lab.AgentReady(ctx, h.Name)
		s := fmt.Sprintf("ready=%v", ready)
		if !ready {
			s += " (" + why + ")"
		}
		got = append(got, s)
		ok = ok && ready == *c.Ready
	}
	if c.Restarts != nil {
		n, seen, started := r.watch.restarts(h.Name)
		got = append(got, fmt.Sprintf("restarts=%d (agent pids since ready: %v; started by the lab: %v), want %s", n, seen, started, c.Restarts))
		ok = ok && c.Restarts.Holds(float64(n))
	}
	return ok, fmt.Sprintf("%s's agent: %s", h.Name, strings.Join(got, ", "))
}
