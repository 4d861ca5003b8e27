package run

import (
	"context"
	"slices"
	"sync"
	"time"
)

// agentWatch records every agent process each host had since ready, so an
// agent check can count restarts: a new agent process in the host, whoever
// started it.
type agentWatch struct {
	r    *runner
	mu   sync.Mutex
	seen map[string][]int // host -> PIDs in the order first seen
}

// sample records the agent processes every host has now.
func (w *agentWatch) sample() {
	st := w.r.lab.Snapshot()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, h := range st.Hosts {
		for _, pid := range st.AgentProcesses(h.Name) {
			if !slices.Contains(w.seen[h.Name], pid) {
				w.seen[h.Name] = append(w.seen[h.Name], pid)
			}
		}
	}
}

func (r *runner) watchAgents(ctx context.Context) *agentWatch {
	w := &agentWatch{r: r, seen: map[string][]int{}}
	sample := w.sample
	sample()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return w
}

// restarts is how many times host's agent process changed since ready, and
// the PIDs seen.
func (w *agentWatch) restarts(host string) (int, []int) {
	w.sample() // what runs now counts too
	w.mu.Lock()
	defer w.mu.Unlock()
	pids := slices.Clone(w.seen[host])
	return max(len(pids)-1, 0), pids
}
