package run

import (
	"context"
	"slices"
	"sync"
	"time"
)

// agentWatch records every agent process each host had since ready, so an
// agent check can count restarts: an agent process in the host that the lab
// did not start (the lab's own starts, kills and upgrades are steps, not
// restarts; an agent that re-executes itself, or one a supervisor or a user
// started, is).
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
	w.sample()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

// restarts is how many agent processes host had since ready that the lab
// did not start, every PID seen, and those the lab started.
func (w *agentWatch) restarts(host string) (n int, seen, started []int) {
	w.sample() // what runs now counts too
	if h, ok := w.r.lab.Snapshot().Host(host); ok {
		started = h.Agent.Started
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen = slices.Clone(w.seen[host])
	for _, pid := range seen {
		if !slices.Contains(started, pid) {
			n++
		}
	}
	return n, seen, started
}
