package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/overlaylab/overlaylab/internal/linkem"
	"github.com/overlaylab/overlaylab/lab/plan"
)

// Link impairment without sch_netem: the lab puts a userspace relay
// (internal/linkem, run as `overlaylab linkem`) on the host's underlay link,
// inside the underlay namespace, where the host notices nothing. Every
// decision (loss, duplicate, corrupt, reorder) draws from streams seeded by
// the impairment's seed: the same seed and the same sequence of matched
// packets give the same outcome.

// Impairment is what `impair` does to a host's underlay link.
type Impairment struct {
	Delay, Jitter                     time.Duration
	Loss, Reorder, Duplicate, Corrupt float64 // percent
	RateBps                           uint64  // 0: no limit
	// Direction is relative to the host: out (host → underlay), in, or
	// both (the default).
	Direction string
	// Match: all (default), overlay (the backend's encapsulated traffic),
	// control (etcd's).
	Match string
	// Seed drives every random decision (0: the lab's seed, else 1).
	Seed int64
	// MTU is a narrower hop on the link (link-mtu): every wire packet
	// longer than it is dropped, in both directions, whatever Match says.
	MTU int
}

// empty reports whether the impairment does nothing at all.
func (im Impairment) empty() bool {
	return im.Delay == 0 && im.Jitter == 0 && im.Loss == 0 && im.Reorder == 0 && im.Duplicate == 0 &&
		im.Corrupt == 0 && im.RateBps == 0 && im.MTU == 0
}

// ImpairState is a host's active impairment.
type ImpairState struct {
	PID    int         `json:"pid"`
	Config string      `json:"config"` // the relay's config file
	Stats  string      `json:"stats"`  // its counters, refreshed every second
	Params Impairment  `json:"params"`
	Link   linkem.Link `json:"link"`
}

// Impair puts (or replaces) an impairment on a host's underlay link; a
// narrower hop set by SetLinkMTU stays.
func (l *Lab) Impair(ctx context.Context, host string, im Impairment) error {
	st := l.Snapshot()
	if h, err := st.host(host); err == nil && h.Impair != nil && im.MTU == 0 {
		im.MTU = h.Impair.Params.MTU
	}
	return l.impair(ctx, st, host, im)
}

func (l *Lab) impair(ctx context.Context, st *State, host string, im Impairment) error {
	h, err := st.host(host)
	if err != nil {
		return err
	}
	cfg, err := l.relayConfig(st, im)
	if err != nil {
		return err
	}
	if err := l.stopRelay(h); err != nil {
		return err
	}
	link, err := linkem.Insert(ctx, st.Underlay.Netns, st.Underlay.Bridge, plan.HostPort(h.Index))
	if err != nil {
		return fmt.Errorf("impair %s: %w", host, err)
	}
	lc := link.Config()
	cfg.Netns, cfg.HostIf, cfg.BridgeIf = lc.Netns, lc.HostIf, lc.BridgeIf
	dir := filepath.Join(l.dir, h.Name)
	is := &ImpairState{Config: filepath.Join(dir, "linkem.json"), Stats: filepath.Join(dir, "linkem-stats.json"), Params: im, Link: link}
	cfg.StatsFile = is.Stats
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(is.Config, data, 0o644); err != nil {
		return fmt.Errorf("impair %s: write %s: %w", host, is.Config, err)
	}
	_ = os.Remove(is.Stats) // the relay writes a fresh one once it runs
	logPath := filepath.Join(l.dir, "logs", h.Name+"-linkem.log")
	pid, err := spawn(l.bin, st.Underlay.Netns, l.name, "linkem-"+h.Name, []string{"linkem", "--config", is.Config}, logPath, true)
	if err != nil {
		_ = linkem.Remove(ctx, st.Underlay.Netns, st.Underlay.Bridge, plan.HostPort(h.Index))
		return err
	}
	is.PID = pid
	// The host carries nothing until the relay runs: wait for its first
	// counters (it writes them as soon as it forwards).
	for deadline := time.Now().Add(5 * time.Second); ; {
		// The relay also writes its counters when it ends: only a running
		// relay with counters is a started one.
		if _, err := os.Stat(is.Stats); err == nil && alive(pid, l.name) {
			break
		}
		if !alive(pid, l.name) || time.Now().After(deadline) {
			_ = stop(pid, l.name, syscall.SIGKILL, time.Second)
			_ = linkem.Remove(ctx, st.Underlay.Netns, st.Underlay.Bridge, plan.HostPort(h.Index))
			exit, _ := os.ReadFile(exitPath(logPath))
			_, serr := os.Stat(is.Stats)
			return fmt.Errorf("impair %s: the link relay (pid %d, alive %v, stats %v, exit %q) did not start\n--- %s ---\n%s", host, pid, alive(pid, l.name), serr, exit, logPath, tail(logPath, 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return l.update(func(st *State) error {
		h, err := st.host(host)
		if err == nil {
			h.Impair = is
		}
		return err
	})
}

// ImpairClear removes a host's impairment (a narrower hop stays); without
// one the link is as before.
func (l *Lab) ImpairClear(ctx context.Context, host string) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if h.Impair != nil && h.Impair.Params.MTU != 0 {
		return l.impair(ctx, st, host, Impairment{MTU: h.Impair.Params.MTU})
	}
	return l.removeRelay(ctx, st, h)
}

// SetLinkMTU narrows a host's hop to the underlay (the agents are not
// told): every wire packet longer than mtu is dropped on it, in both
// directions, GSO frames judged by their segments, as a narrower link
// between the host and the rest would. The impairment in place stays;
// mtu 0 removes the narrowing.
func (l *Lab) SetLinkMTU(ctx context.Context, host string, mtu int) error {
	if mtu != 0 && (mtu < 68 || mtu > plan.MaxUnderlayMTU) {
		return fmt.Errorf("link-mtu %d: must be 68..%d (0 removes it)", mtu, plan.MaxUnderlayMTU)
	}
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	var im Impairment
	if h.Impair != nil {
		im = h.Impair.Params
	}
	im.MTU = mtu
	if im.empty() {
		return l.removeRelay(ctx, st, h)
	}
	return l.impair(ctx, st, host, im)
}

// removeRelay takes the relay off a host's link.
func (l *Lab) removeRelay(ctx context.Context, st *State, h *HostState) error {
	host := h.Name
	if err := l.stopRelay(h); err != nil {
		return err
	}
	if err := linkem.Remove(ctx, st.Underlay.Netns, st.Underlay.Bridge, plan.HostPort(h.Index)); err != nil {
		return fmt.Errorf("clear impairment of %s: %w", host, err)
	}
	return l.update(func(st *State) error {
		h, err := st.host(host)
		if err == nil {
			h.Impair = nil
		}
		return err
	})
}

// ImpairStats reads the counters of a host's impairment.
func (s *State) ImpairStats(host string) (linkem.Stats, error) {
	h, err := s.host(host)
	if err != nil {
		return linkem.Stats{}, err
	}
	if h.Impair == nil {
		return linkem.Stats{}, fmt.Errorf("%s's link is not impaired", host)
	}
	return linkem.ReadStats(h.Impair.Stats)
}

func (l *Lab) stopRelay(h *HostState) error {
	if h.Impair == nil {
		return nil
	}
	return stop(h.Impair.PID, l.name, syscall.SIGTERM, 3*time.Second)
}

// relayConfig turns an impairment into the relay's config: per direction,
// and what overlay and control traffic are in this lab.
func (l *Lab) relayConfig(st *State, im Impairment) (linkem.Config, error) {
	var c linkem.Config
	dir, err := linkem.ParseDirection(im.Direction)
	if err != nil {
		return c, err
	}
	match := linkem.MatchAll
	if im.Match != "" {
		if match, err = linkem.ParseMatch(im.Match); err != nil {
			return c, err
		}
	}
	for _, p := range []float64{im.Loss, im.Reorder, im.Duplicate, im.Corrupt} {
		if p < 0 || p > 100 {
			return c, fmt.Errorf("impair: %g%% is outside 0..100", p)
		}
	}
	if im.Reorder > 0 && im.Delay == 0 {
		return c, fmt.Errorf("impair: reorder sends packets ahead of delayed ones: set a delay too")
	}
	seed := im.Seed
	if seed == 0 {
		seed = max(st.Seed, 1)
	}
	c.Seed = uint64(seed)
	c.Set(dir, linkem.Impairment{Match: match, Delay: linkem.Duration(im.Delay), Jitter: linkem.Duration(im.Jitter),
		Loss: im.Loss, Reorder: im.Reorder, Duplicate: im.Duplicate, Corrupt: im.Corrupt, Rate: im.RateBps})
	// A narrower hop narrows both ways, whatever the direction of the rest.
	c.Out.MTU, c.In.MTU = im.MTU, im.MTU
	bs, err := st.backends()
	if err != nil {
		return c, err
	}
	for k, b := range bs {
		if b.Encapsulated {
			c.Overlay.UDPPorts = append(c.Overlay.UDPPorts, uint16(b.Port))
		} else {
			c.Overlay.Networks = append(c.Overlay.Networks, netip.MustParsePrefix(st.Networks[k].Network))
		}
	}
	for _, m := range st.Etcd.Members {
		c.Control.EtcdIPs = append(c.Control.EtcdIPs, netip.MustParseAddr(m.IP))
	}
	return c, nil
}
