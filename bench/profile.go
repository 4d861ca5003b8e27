package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// ProfileEntry is one function's share of an agent's CPU samples.
type ProfileEntry struct {
	Function string  `json:"function"`
	FlatPct  float64 `json:"flatPct"` // samples in the function itself
	CumPct   float64 `json:"cumPct"`  // samples in it and what it calls
}

// AgentProfile is where one agent spent its CPU during a transfer.
type AgentProfile struct {
	Host    string         `json:"host"`
	Role    string         `json:"role"` // "sender side (encapsulates)" / "receiver side (decapsulates)"
	Seconds int            `json:"seconds"`
	Top     []ProfileEntry `json:"top"`
	Error   string         `json:"error,omitempty"`
}

// fetchProfile takes a CPU profile of the agent serving pprof on
// 127.0.0.1:port inside ns, and ranks functions by flat samples.
func fetchProfile(ctx context.Context, ns string, port int, seconds, top int) ([]ProfileEntry, error) {
	dial := nsutil.DialContext(ns)
	c := &http.Client{Timeout: time.Duration(seconds+10) * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) },
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, seconds), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("pprof: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	p, err := profile.Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse profile: %w", err)
	}
	return rankFunctions(p, top), nil
}

// rankFunctions sums CPU samples per function, flat (leaf frame) and
// cumulative (anywhere on the stack, once per sample).
func rankFunctions(p *profile.Profile, top int) []ProfileEntry {
	vi := len(p.SampleType) - 1 // cpu nanoseconds
	flat := map[string]int64{}
	cum := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		seen := map[string]bool{}
		for li, loc := range s.Location {
			for ln, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				name := line.Function.Name
				if li == 0 && ln == 0 {
					flat[name] += v
				}
				if !seen[name] {
					cum[name] += v
					seen[name] = true
				}
			}
		}
	}
	if total == 0 {
		return nil
	}
	var out []ProfileEntry
	for name, v := range flat {
		out = append(out, ProfileEntry{Function: name, FlatPct: 100 * float64(v) / float64(total), CumPct: 100 * float64(cum[name]) / float64(total)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FlatPct > out[j].FlatPct })
	if len(out) > top {
		out = out[:top]
	}
	return out
}
