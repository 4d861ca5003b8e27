package run

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
)

// State checks (log, metric, route, neigh, fdb) run through retry; pmtu,
// tcp, flow and resources measure something and have their own timing.

// selects reports whether a selector picks the lab's container ep.
func selects(s scenarios.Selector, ep lab.Endpoint) bool {
	host, ctr, _ := strings.Cut(ep.Name, "/")
	return s.Match(host, ctr)
}

// endpoint resolves a selector naming one container.
func endpoint(st *lab.State, s scenarios.Selector) (lab.Endpoint, error) {
	for _, ep := range st.Endpoints("") {
		if selects(s, ep) {
			return ep, nil
		}
	}
	return lab.Endpoint{}, fmt.Errorf("no container %s in the lab now", s)
}

// endpoints resolves a check's two selectors, each naming one container.
func endpoints(st *lab.State, from, to scenarios.Selector) (lab.Endpoint, lab.Endpoint, error) {
	f, err := endpoint(st, from)
	if err != nil {
		return f, lab.Endpoint{}, err
	}
	t, err := endpoint(st, to)
	return f, t, err
}

// hostNow finds a host of the lab as it is now.
func hostNow(st *lab.State, name string) (*lab.HostState, error) {
	if h, ok := st.Host(name); ok {
		return h, nil
	}
	return nil, fmt.Errorf("host %s is not in the lab", name)
}

// peerSubnet is the subnet peer held at ready (or when it joined).
func (r *runner) peerSubnet(peer string) (netip.Prefix, error) {
	r.mu.Lock()
	sub := r.lease[peer]
	r.mu.Unlock()
	p, err := netip.ParsePrefix(sub)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("peer %s has no known subnet", peer)
	}
	return p, nil
}

// peerUnderlay is peer's underlay address now.
func peerUnderlay(st *lab.State, peer string) (netip.Addr, error) {
	h, ok := st.Host(peer)
	if !ok {
		return netip.Addr{}, fmt.Errorf("peer %s is not in the lab", peer)
	}
	return netip.MustParseAddr(h.UnderlayIP), nil
}

// waitEnd waits until a window ends (or ctx does).
func waitEnd(ctx context.Context, end <-chan struct{}) {
	select {
	case <-end:
	case <-ctx.Done():
	}
}

// untilEnd is ctx, cancelled also when the window ends.
func untilEnd(ctx context.Context, end <-chan struct{}) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		waitEnd(wctx, end)
		cancel()
	}()
	return wctx, cancel
}

func (r *runner) checkPMTU(ctx context.Context, e *scenarios.Expectation) (bool, string) {
	c := e.PMTU
	from, to, err := endpoints(r.lab.Snapshot(), c.From, c.To)
	if err != nil {
		return false, err.Error()
	}
	deadline := time.Now().Add(e.Within)
	for {
		got, probes, err := lab.PathMTU(ctx, from, to)
		var tried []string
		for _, p := range probes {
			tried = append(tried, fmt.Sprintf("%d:%s", p.Size, map[bool]string{true: "passed", false: "lost"}[p.Passed]))
		}
		msg := fmt.Sprintf("path MTU %s → %s: the largest DF packet that crossed is %d bytes, want %d (probed %s)",
			from.Name, to.Name, got, c.MTU, strings.Join(tried, " "))
		if err != nil {
			msg = err.Error()
		}
		if (err == nil && got == c.MTU) || !time.Now().Before(deadline) || ctx.Err() != nil {
			return err == nil && got == c.MTU, msg
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (r *runner) checkTCP(ctx context.Context, e *scenarios.Expectation) (bool, string) {
	c := e.TCP
	from, to, err := endpoints(r.lab.Snapshot(), c.From, c.To)
	if err != nil {
		return false, err.Error()
	}
	listen := c.Result != lab.TCPRefused
	deadline := time.Now().Add(e.Within)
	for {
		got, err := lab.TryTCP(ctx, from, to, c.Port, listen, 3*time.Second)
		msg := fmt.Sprintf("tcp %s → %s:%d (%s): %s, want %s", from.Name, to.IP, c.Port,
			map[bool]string{true: "listening there", false: "nothing listening"}[listen], got, c.Result)
		if err != nil {
			msg = err.Error()
		}
		if (err == nil && got == c.Result) || !time.Now().Before(deadline) || ctx.Err() != nil {
			return err == nil && got == c.Result, msg
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkFlow holds a flow through the window and judges it: no reset, no
// stall longer than maxStall, an average rate of at least minRate.
func (r *runner) checkFlow(ctx context.Context, e *scenarios.Expectation, end <-chan struct{}) (bool, string, *report.FlowResult) {
	c := e.Flow
	from, to, err := endpoints(r.lab.Snapshot(), c.From, c.To)
	if err != nil {
		return false, err.Error(), nil
	}
	rate := uint64(20e6)
	if c.MinRateBps > 0 {
		rate = min(max(2*c.MinRateBps, rate), 1e9)
	}
	f, err := lab.StartFlow(ctx, from, to, lab.FlowOptions{Proto: c.Proto, RateBps: rate, Port: 5301 + flowPort(e.Name)})
	if err != nil {
		return false, err.Error(), nil
	}
	waitEnd(ctx, end)
	res := f.Stop()
	fr := &report.FlowResult{Proto: res.Proto, Bytes: res.Bytes, Duration: res.Duration, MaxStall: res.MaxStall, Broken: res.Broken}
	for _, s := range res.Samples {
		fr.Samples = append(fr.Samples, report.FlowSample{At: s.At, Bytes: s.Bytes})
	}
	var bad []string
	if res.Broken != "" {
		bad = append(bad, "the connection broke ("+res.Broken+")")
	}
	if c.MaxStall > 0 && res.MaxStall > c.MaxStall {
		bad = append(bad, fmt.Sprintf("stalled %s > maxStall %s", res.MaxStall.Round(time.Millisecond), c.MaxStall))
	}
	if c.MinRateBps > 0 && res.RateBps() < float64(c.MinRateBps) {
		bad = append(bad, fmt.Sprintf("%.1f Mbit/s < minRate %.1f Mbit/s", res.RateBps()/1e6, float64(c.MinRateBps)/1e6))
	}
	msg := fmt.Sprintf("%s flow %s → %s over %s: %d bytes, %.1f Mbit/s, longest stall %s", res.Proto, from.Name, to.Name,
		res.Duration.Round(time.Millisecond), res.Bytes, res.RateBps()/1e6, res.MaxStall.Round(time.Millisecond))
	if len(bad) > 0 {
		return false, msg + ": " + strings.Join(bad, "; "), fr
	}
	return true, msg, fr
}

// flowPort spreads concurrent flows of one run over ports.
func flowPort(name string) int {
	h := 0
	for _, c := range name {
		h = h*31 + int(c)
	}
	return (h & 0x7fffffff) % 500
}

func (r *runner) checkResources(ctx context.Context, e *scenarios.Expectation, end <-chan struct{}) (bool, string) {
	c := e.Resources
	h, err := hostNow(r.lab.Snapshot(), c.Host)
	if err != nil {
		return false, err.Error()
	}
	sctx, cancel := untilEnd(ctx, end)
	u, err := lab.SampleProcess(sctx, h.AgentPID, 200*time.Millisecond)
	cancel()
	if err != nil {
		return false, err.Error()
	}
	msg := fmt.Sprintf("%s's agent (pid %d): cpu %.1f%% of one core, rss up to %.1f MiB (%d samples)", c.Host, h.AgentPID, u.CPUPercent, float64(u.MaxRSS)/(1<<20), u.Samples)
	pass := true
	if c.CPU != nil && !c.CPU.Holds(u.CPUPercent) {
		pass = false
		msg += fmt.Sprintf("; cpu must be %s%%", c.CPU)
	}
	if c.RSS != nil && !c.RSS.Holds(float64(u.MaxRSS)) {
		pass = false
		msg += fmt.Sprintf("; rss must be %s bytes", c.RSS)
	}
	return pass, msg
}

func checkLog(st *lab.State, c *scenarios.LogCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	data, err := os.ReadFile(h.AgentLog)
	if err != nil {
		return false, err.Error()
	}
	n, first := 0, ""
	for _, line := range strings.Split(string(data), "\n") {
		if c.Match.MatchString(line) {
			if n == 0 {
				first = line
			}
			n++
		}
	}
	msg := fmt.Sprintf("%s's agent log: %d lines match /%s/, want %s", c.Host, n, c.Match, c.Count)
	if first != "" {
		msg += fmt.Sprintf(" (first: %q)", truncate(first, 100))
	}
	return c.Count.Holds(float64(n)), msg
}

func checkMetric(ctx context.Context, st *lab.State, c *scenarios.MetricCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	ms, err := lab.Metrics(ctx, h.Netns)
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	for _, s := range ms[c.Name] {
		if !labelsMatch(s.Labels, c.Labels) {
			continue
		}
		msg := fmt.Sprintf("%s's %s%s = %g, want %s", c.Host, c.Name, labelText(s.Labels), s.Value, c.Value)
		return c.Value.Holds(s.Value), msg
	}
	for _, s := range ms[c.Name] {
		seen = append(seen, labelText(s.Labels))
	}
	if len(seen) == 0 {
		return false, fmt.Sprintf("%s's agent has no metric %s", c.Host, c.Name)
	}
	return false, fmt.Sprintf("%s's %s has no sample with labels %s (it has %s)", c.Host, c.Name, labelText(c.Labels), strings.Join(seen, " "))
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func labelText(ls map[string]string) string {
	if len(ls) == 0 {
		return ""
	}
	var parts []string
	for k, v := range ls {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func (r *runner) checkNeigh(st *lab.State, c *scenarios.NeighCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	ip := c.IP
	if c.IPPeer != "" {
		p, err := r.peerSubnet(c.IPPeer)
		if err != nil {
			return false, err.Error()
		}
		ip = p.Addr()
	}
	ns, err := lab.Neighbors(h.Netns)
	if err != nil {
		return false, err.Error()
	}
	var found []string
	for _, n := range ns {
		if n.IP == ip && (c.Dev == "" || n.Dev == c.Dev) && (c.LLAddr == "" || n.MAC == c.LLAddr) {
			found = append(found, fmt.Sprintf("%s dev %s lladdr %s %s", n.IP, n.Dev, n.MAC, n.State))
		}
	}
	return presence(c.Host, "neighbour "+ip.String(), c.Present, found)
}

func (r *runner) checkFDB(st *lab.State, c *scenarios.FDBCheck) (bool, string) {
	h, err := hostNow(st, c.Host)
	if err != nil {
		return false, err.Error()
	}
	dst := c.Dst
	if c.DstPeer != "" {
		if dst, err = peerUnderlay(st, c.DstPeer); err != nil {
			return false, err.Error()
		}
	}
	es, err := lab.FDB(h.Netns)
	if err != nil {
		return false, err.Error()
	}
	var found []string
	for _, x := range es {
		if (c.MAC == "" || x.MAC == c.MAC) && (c.Dev == "" || x.Dev == c.Dev) && (!dst.IsValid() || x.Dst == dst) {
			found = append(found, fmt.Sprintf("%s dev %s dst %s", x.MAC, x.Dev, x.Dst))
		}
	}
	what := "fdb entry"
	if c.MAC != "" {
		what += " " + c.MAC
	}
	if dst.IsValid() {
		what += " to " + dst.String()
	}
	return presence(c.Host, what, c.Present, found)
}

// presence judges a present/absent check on what was found.
func presence(host, what string, want bool, found []string) (bool, string) {
	if want {
		if len(found) == 0 {
			return false, fmt.Sprintf("%s has no %s", host, what)
		}
		return true, fmt.Sprintf("%s has %s", host, strings.Join(found, "; "))
	}
	if len(found) > 0 {
		return false, fmt.Sprintf("%s still has %s", host, strings.Join(found, "; "))
	}
	return true, fmt.Sprintf("%s has no %s", host, what)
}
