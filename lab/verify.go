package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// fullMatrixLimit is the most containers whose every pair `up` probes; a
// larger lab probes a sample that still covers every pair of hosts.
const fullMatrixLimit = 40

// sample returns every pair for small labs; otherwise, for every pair of
// hosts, one container pair in one direction (from the lower host: an echo
// and its reply cross both ways, so the reverse pair would prove nothing
// more), rotating over containers so the sample spreads, plus every pair on
// the same host. In a multi-network lab only pairs within one network are
// probed here (across networks is isolation, checked separately).
func (s *State) sample(eps []Endpoint) func(i, j int) bool {
	host := s.endpointHosts(eps)   // endpoint -> host index
	index := make([]int, len(eps)) // endpoint -> container index on its host
	count := map[int]int{}
	for k, hi := range host {
		if hi < 0 {
			host[k] = 0 // unknown host: counted as the first (none is: eps come from s.Endpoints)
			continue
		}
		index[k] = count[hi]
		count[hi]++
	}
	if len(eps) <= fullMatrixLimit {
		return func(i, j int) bool { return i != j }
	}
	return func(i, j int) bool {
		a, b := host[i], host[j]
		if a == b {
			return i != j
		}
		return a < b && index[i] == (a+b)%count[a] && index[j] == (a*7+b)%count[b]
	}
}

// verifyRate is the echo rate of up's check: probeRate, and for a large lab
// 20 per host per second up to 20000 (a 1000-host lab sends each host's
// echoes at 20/s, spread over all its peers).
func verifyRate(hosts int) int {
	return min(max(probeRate, 20*hosts), 20000)
}

// Verify runs the container ping matrix while capturing on the first
// host's underlay interface, then checks that every cross-host echo from
// that host crossed the wire in the backend's format and that no bare
// container traffic did. The capture is kept in the state dir.
func (l *Lab) Verify(ctx context.Context, pr *progress) error {
	if pr == nil {
		pr = &progress{w: l.out, start: time.Now()}
	}
	st := l.Snapshot()
	if st.multi() {
		pr.phase("verify (per network, then across)")
		return l.verifyTenants(ctx, pr)
	}
	eps := st.Endpoints("")
	if len(eps) < 2 {
		pr.printf("  (fewer than 2 containers: no ping matrix to check)\n")
		return nil
	}
	pr.phase("verify")
	pair := st.sample(eps)
	pairs := 0
	for i := range eps {
		for j := range eps {
			if pair(i, j) {
				pairs++
			}
		}
	}
	// Enough time for several passes at the probe rate, and never less
	// than 20 s.
	rate := verifyRate(len(st.Hosts))
	deadline := max(20*time.Second, time.Duration(pairs)*4*time.Second/time.Duration(rate))
	traffic := func(ctx context.Context) ([]Endpoint, *Matrix, error) {
		pctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		c, err := Probe(pctx, eps, pair, ProbeOptions{Interval: 250 * time.Millisecond, UntilAnswered: true, Rate: rate})
		return eps, Judge(eps, pair, c, Want{Kind: WantAll, Once: true}), err
	}
	h1 := st.Hosts[0].Name
	capture := filepath.Join(l.dir, "capture-"+h1+".pcap")
	res, err := l.CheckWire(ctx, WireCheck{Host: h1, Traffic: traffic, CheckMACs: true, Pcap: capture})
	if res != nil && res.Pcap != "" {
		_ = l.update(func(st *State) error { st.Capture = res.Pcap; return nil })
	}
	if err != nil {
		return err
	}
	m := res.Matrix
	what := "pairs"
	if len(eps) > fullMatrixLimit {
		what = "sampled pairs (a container pair for every pair of hosts, and every same-host pair)"
	}
	if !m.OK() {
		return fmt.Errorf("ping matrix: %d of %d %s wrong (the lab stays up for inspection; `%s down --name %s` removes it)\n%s",
			m.Failures(), m.Pairs(), what, selfCommand(), l.name, m)
	}
	pr.printf("  ping matrix: %d/%d %s answered\n", m.Pairs(), m.Pairs(), what)
	if !res.OK {
		return fmt.Errorf("%s (capture %s)", res.Summary, res.Pcap)
	}
	pr.printf("  wire: %s; %d frames saved to %s\n", res.Summary, res.Frames, res.Pcap)
	return nil
}
