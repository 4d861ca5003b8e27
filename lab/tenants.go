package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/pcapcheck"
	"github.com/overlaylab/overlaylab/topo"
)

// Tenant networks share hosts and may share addresses; a lab of them is
// verified per network (its matrix and its encapsulation on the wire, one
// network at a time so that each one's frames are judged alone) and across
// them: a tenant must never reach another's containers, whether the address
// exists only in the other network or in both.

// multi reports whether the lab has named tenant networks.
func (s *State) multi() bool {
	return len(s.Networks) > 1 || (len(s.Networks) == 1 && s.Networks[0].Name != "")
}

// verifyTenants is Verify for a multi-network lab.
func (l *Lab) verifyTenants(ctx context.Context, pr *progress) error {
	st := l.Snapshot()
	h1 := st.Hosts[0].Name
	for _, n := range st.Networks {
		eps := st.Endpoints(n.Name)
		if len(eps) < 2 {
			pr.printf("  %s: fewer than 2 containers, no matrix\n", n.Name)
			continue
		}
		pair := st.sample(eps)
		traffic := func(ctx context.Context) ([]Endpoint, *Matrix, error) {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c, err := Probe(pctx, eps, pair, ProbeOptions{Interval: 250 * time.Millisecond, UntilAnswered: true})
			return eps, Judge(eps, pair, c, Want{Kind: WantAll, Once: true}), err
		}
		res, err := l.CheckWire(ctx, WireCheck{Host: h1, Network: n.Name, Traffic: traffic, CheckMACs: true,
			Pcap: filepath.Join(l.dir, "capture-"+h1+"-"+n.Name+".pcap")})
		if err != nil {
			return err
		}
		if !res.Matrix.OK() {
			return fmt.Errorf("network %s: ping matrix: %d of %d pairs wrong (the lab stays up for inspection)\n%s", n.Name, res.Matrix.Failures(), res.Matrix.Pairs(), res.Matrix)
		}
		pr.printf("  %s: ping matrix %d/%d pairs answered\n", n.Name, res.Matrix.Pairs(), res.Matrix.Pairs())
		if !res.OK {
			return fmt.Errorf("network %s: %s (capture %s)", n.Name, res.Summary, res.Pcap)
		}
		pr.printf("  %s: wire: %s\n", n.Name, res.Summary)
	}
	if len(st.Networks) < 2 || len(st.Hosts) < 2 {
		return nil
	}
	iso, err := l.CheckIsolation(ctx, st.Networks[0].Name, st.Networks[1].Name)
	if err != nil {
		return err
	}
	for _, line := range iso.Lines {
		pr.printf("  isolation: %s\n", line)
	}
	if !iso.OK {
		return fmt.Errorf("isolation between %s and %s broken: %s (the lab stays up for inspection)", st.Networks[0].Name, st.Networks[1].Name, iso.Problem)
	}
	return nil
}

// Isolation is the verdict of CheckIsolation.
type Isolation struct {
	OK      bool
	Problem string
	Lines   []string // what was tried and seen, in order
}

// isolationProbeHost is the host part of the address the check gives a
// container of the second network, one no container of the first has.
const isolationProbeHost = 200

// CheckIsolation proves that network a cannot reach network b's
// containers, from a's first container on the first host, against a
// container of each network on the second host:
//   - an address that exists in both networks (b's twin of a's target, or a
//     temporary second address on b's container) answers, from a's
//     container, and b's container sees no packet of it;
//   - an address that exists only in b (a temporary address on b's
//     container, .200 of its subnet) answers from b (the control) and not
//     from a, and b's container sees nothing of a's attempt.
func (l *Lab) CheckIsolation(ctx context.Context, a, b string) (*Isolation, error) {
	st := l.Snapshot()
	src, ta, err := tenantPair(st, a)
	if err != nil {
		return nil, err
	}
	srcB, tb, err := tenantPair(st, b)
	if err != nil {
		return nil, err
	}
	iso := &Isolation{OK: true}
	fail := func(format string, args ...any) {
		if iso.OK {
			iso.OK, iso.Problem = false, fmt.Sprintf(format, args...)
		}
		iso.Lines = append(iso.Lines, "FAIL "+fmt.Sprintf(format, args...))
	}
	// 1. An address in both networks.
	both := ta.IP
	undo, err := l.ensureAddress(tb, both, ta.IP != tb.IP)
	if err != nil {
		return nil, err
	}
	answered, seen, err := pingWatching(ctx, src, both, tb)
	undo()
	if err != nil {
		return nil, err
	}
	switch {
	case !answered:
		fail("%s → %s (in both %s and %s): no reply from %s's own container", src.Name, both, a, b, a)
	case seen > 0:
		fail("%s → %s (in both): %d packets reached %s's container %s", src.Name, both, seen, b, tb.Name)
	default:
		iso.Lines = append(iso.Lines, fmt.Sprintf("%s → %s, an address in both networks: answered by %s's %s, nothing reached %s's %s", src.Name, both, a, ta.Name, b, tb.Name))
	}
	// 2. An address only in b.
	only, err := addressOnlyIn(st, b, a, tb)
	if err != nil {
		return nil, err
	}
	undo, err = l.ensureAddress(tb, only, true)
	if err != nil {
		return nil, err
	}
	defer undo()
	control, _, err := pingWatching(ctx, srcB, only, Endpoint{})
	if err != nil {
		return nil, err
	}
	answered, seen, err = pingWatching(ctx, src, only, tb)
	if err != nil {
		return nil, err
	}
	switch {
	case !control:
		fail("%s → %s (only in %s): %s's own container does not answer, so the check proves nothing", srcB.Name, only, b, b)
	case answered || seen > 0:
		fail("%s → %s (only in %s): answered %v, %d packets reached %s", src.Name, only, b, answered, seen, tb.Name)
	default:
		iso.Lines = append(iso.Lines, fmt.Sprintf("%s → %s, an address only in %s: no reply, nothing reached %s (from %s it answers)", src.Name, only, b, tb.Name, srcB.Name))
	}
	return iso, nil
}

// tenantPair picks a network's first container on the first host (the
// source) and its first container on the second host (the target).
func tenantPair(st *State, network string) (Endpoint, Endpoint, error) {
	var src, dst Endpoint
	for k, h := range st.Hosts[:2] {
		for _, c := range h.Containers {
			if c.Network != network {
				continue
			}
			e := Endpoint{Name: h.Name + "/" + c.Name, Netns: c.Netns, IP: netip.MustParseAddr(c.IP)}
			if k == 0 && src.Name == "" {
				src = e
			} else if k == 1 && dst.Name == "" {
				dst = e
			}
		}
	}
	if src.Name == "" || dst.Name == "" {
		return src, dst, fmt.Errorf("network %s: need a container on each of the first two hosts to check isolation", network)
	}
	return src, dst, nil
}

// addressOnlyIn is an address in target's subnet that no container of the
// other network has.
func addressOnlyIn(st *State, network, other string, target Endpoint) (netip.Addr, error) {
	taken := map[netip.Addr]bool{}
	for _, e := range st.Endpoints(other) {
		taken[e.IP] = true
	}
	h := st.hostOf(target)
	sub, err := netip.ParsePrefix(h.Subnets[network])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network %s on %s: no subnet", network, h.Name)
	}
	a := plan.NthAddr(sub.Addr(), isolationProbeHost)
	if !sub.Contains(a) || taken[a] {
		return netip.Addr{}, fmt.Errorf("no free address in %s's %s to probe isolation with", network, sub)
	}
	return a, nil
}

// ensureAddress gives e's interface the address ip for a probe (when add)
// and returns what undoes it.
func (l *Lab) ensureAddress(e Endpoint, ip netip.Addr, add bool) (func(), error) {
	if !add {
		return func() {}, nil
	}
	p := netip.PrefixFrom(ip, 32)
	if err := topo.AddAddress(e.Netns, plan.HostIf, p); err != nil {
		return nil, err
	}
	return func() { _ = topo.DelAddress(e.Netns, plan.HostIf, p) }, nil
}

// pingWatching pings ip from src (a few echoes, answered or not) while
// capturing in watch's namespace (when set), and reports whether any echo
// was answered and how many echo requests to ip reached watch.
func pingWatching(ctx context.Context, src Endpoint, ip netip.Addr, watch Endpoint) (bool, int, error) {
	var capt *pcapcheck.Capture
	if watch.Netns != "" {
		var err error
		if capt, err = pcapcheck.Start(ctx, watch.Netns, plan.HostIf); err != nil {
			return false, 0, err
		}
	}
	eps := []Endpoint{src, {Name: ip.String(), IP: ip}}
	pair := func(i, j int) bool { return i == 0 && j == 1 }
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	c, err := Probe(pctx, eps, pair, ProbeOptions{Interval: 200 * time.Millisecond})
	cancel()
	seen := 0
	if capt != nil {
		frames, _ := capt.Stop()
		for _, p := range pcapcheck.Decode(frames, pcapcheck.Encap{Kind: pcapcheck.KindHostGW, Network: netip.PrefixFrom(ip, 32)}) {
			if p.IsEchoRequest() && p.OuterDst == ip {
				seen++
			}
		}
	}
	if err != nil {
		return false, seen, err
	}
	return c.Received[0][1] > 0, seen, nil
}
