package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/internal/procfs"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// PathMTU searches the largest IP packet with Don't Fragment set that
// crosses from one endpoint to another and back (an echo and its reply of
// that size), by bisection between 68 and the source's interface MTU. It
// returns that size and the sizes probed, each with whether it passed.
func PathMTU(ctx context.Context, from, to Endpoint) (int, []PMTUProbe, error) {
	hi, err := topo.LinkMTU(from.Netns, plan.HostIf)
	if err != nil {
		return 0, nil, err
	}
	conn, err := openICMP(from.Netns)
	if err != nil {
		return 0, nil, err
	}
	defer conn.close()
	if err := conn.setDF(true); err != nil {
		return 0, nil, fmt.Errorf("DF on the icmp socket in %s: %w", from.Netns, err)
	}
	var probes []PMTUProbe
	seq := 0
	passes := func(size int) (bool, error) {
		for try := 0; try < 3; try++ {
			seq++
			if err := conn.send(to.IP, seq, size); err != nil {
				continue // EMSGSIZE above the interface MTU
			}
			deadline := time.Now().Add(400 * time.Millisecond)
			for {
				r, ok, err := conn.read(deadline)
				if err != nil {
					return false, err
				}
				if !ok {
					break
				}
				if r.kind == echoReply && r.src == to.IP && r.seq == seq&0xffff {
					return true, nil
				}
			}
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
		}
		return false, nil
	}
	lo := 68 // always passes, by RFC 791
	if ok, err := passes(hi); err != nil {
		return 0, nil, err
	} else if ok {
		return hi, append(probes, PMTUProbe{Size: hi, Passed: true}), nil
	}
	probes = append(probes, PMTUProbe{Size: hi})
	for lo+1 < hi {
		mid := (lo + hi) / 2
		ok, err := passes(mid)
		if err != nil {
			return 0, probes, err
		}
		probes = append(probes, PMTUProbe{Size: mid, Passed: ok})
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, probes, nil
}

// PMTUProbe is one size a path-MTU search tried.
type PMTUProbe struct {
	Size   int
	Passed bool
}

// Route is one IPv4 route of a namespace, in any table.
type Route struct {
	Dst      netip.Prefix // the zero prefix for default
	Gw       netip.Addr
	Dev      string
	Table    int
	Protocol int
}

func (r Route) String() string {
	s := r.Dst.String()
	if !r.Dst.IsValid() {
		s = "default"
	}
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += " dev " + r.Dev
	if r.Table != unix.RT_TABLE_MAIN {
		s += " table " + strconv.Itoa(r.Table)
	}
	return s
}

// RouteTable lists a namespace's IPv4 routes in every table but local.
func RouteTable(ns string) ([]Route, error) {
	var out []Route
	err := topo.WithHandle(ns, func(h *netlink.Handle) error {
		names := linkNames(h)
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("%s: list routes: %w", ns, err)
		}
		for _, r := range rs {
			if r.Table == unix.RT_TABLE_LOCAL {
				continue
			}
			x := Route{Dev: names[r.LinkIndex], Table: r.Table, Protocol: int(r.Protocol)}
			if r.Dst != nil {
				if p, ok := netipPrefix(r.Dst); ok {
					x.Dst = p
				}
			}
			if a, ok := netip.AddrFromSlice(r.Gw); ok {
				x.Gw = a.Unmap()
			}
			out = append(out, x)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, err
}

// Neighbor is one IPv4 neighbour entry.
type Neighbor struct {
	IP    netip.Addr
	MAC   string
	Dev   string
	State string
}

// Neighbors lists a namespace's IPv4 neighbour entries.
func Neighbors(ns string) ([]Neighbor, error) {
	var out []Neighbor
	err := topo.WithHandle(ns, func(h *netlink.Handle) error {
		names := linkNames(h)
		ns4, err := h.NeighList(0, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("%s: list neighbours: %w", ns, err)
		}
		for _, n := range ns4 {
			a, _ := netip.AddrFromSlice(n.IP)
			out = append(out, Neighbor{IP: a.Unmap(), MAC: n.HardwareAddr.String(), Dev: names[n.LinkIndex], State: neighState(n.State)})
		}
		return nil
	})
	return out, err
}

// FDBEntry is one bridge forwarding entry: a MAC, and for a vxlan device the
// remote it is tunnelled to.
type FDBEntry struct {
	MAC string
	Dst netip.Addr
	Dev string
}

// FDB lists a namespace's forwarding entries (bridge ports and vxlan
// devices).
func FDB(ns string) ([]FDBEntry, error) {
	var out []FDBEntry
	err := topo.WithHandle(ns, func(h *netlink.Handle) error {
		names := linkNames(h)
		es, err := h.NeighList(0, unix.AF_BRIDGE)
		if err != nil {
			return fmt.Errorf("%s: list the fdb: %w", ns, err)
		}
		for _, e := range es {
			x := FDBEntry{MAC: e.HardwareAddr.String(), Dev: names[e.LinkIndex]}
			if a, ok := netip.AddrFromSlice(e.IP); ok {
				x.Dst = a.Unmap()
			}
			out = append(out, x)
		}
		return nil
	})
	return out, err
}

func linkNames(h *netlink.Handle) map[int]string {
	names := map[int]string{}
	if links, err := h.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	return names
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func neighState(s int) string {
	for _, x := range []struct {
		bit  int
		name string
	}{{netlink.NUD_PERMANENT, "PERMANENT"}, {netlink.NUD_REACHABLE, "REACHABLE"}, {netlink.NUD_STALE, "STALE"},
		{netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"}, {netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_NOARP, "NOARP"}} {
		if s&x.bit != 0 {
			return x.name
		}
	}
	return strconv.Itoa(s)
}

// Usage is a process's CPU and memory over a window.
type Usage struct {
	CPUPercent float64 // of one core, averaged over the window
	MaxRSS     uint64  // bytes, the largest sample
	Samples    int
}

// SampleProcess samples a process every interval until ctx ends.
func SampleProcess(ctx context.Context, pid int, interval time.Duration) (Usage, error) {
	start := time.Now()
	t0, err := procfs.CPUTicks(pid)
	if err != nil {
		return Usage{}, fmt.Errorf("sample pid %d: %w", pid, err)
	}
	var u Usage
	last := t0
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if rss, _, err := procfs.RSSKiB(pid); err == nil {
			u.MaxRSS = max(u.MaxRSS, rss*1024)
			u.Samples++
		}
		if t, err := procfs.CPUTicks(pid); err == nil {
			last = t
		}
		select {
		case <-ctx.Done():
			if d := time.Since(start); d > 0 {
				u.CPUPercent = 100 * float64(last-t0) / procfs.UserHZ / d.Seconds()
			}
			return u, nil
		case <-tick.C:
		}
	}
}

// Metrics reads a host agent's /metrics (Prometheus text format) from
// inside its namespace.
func Metrics(ctx context.Context, netns string) (map[string][]MetricSample, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: nsutil.DialContext(netns), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(plan.HealthzPort)+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: /metrics: %w", netns, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("%s: /metrics: %s %s (does this agent serve metrics?)", netns, resp.Status, strings.TrimSpace(string(b)))
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: /metrics: %w", netns, err)
	}
	out := map[string][]MetricSample{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s := MetricSample{Labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.Labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				s.Value = m.GetGauge().GetValue()
			case m.Counter != nil:
				s.Value = m.GetCounter().GetValue()
			case m.Untyped != nil:
				s.Value = m.GetUntyped().GetValue()
			default:
				continue
			}
			out[name] = append(out[name], s)
		}
	}
	return out, nil
}

// MetricSample is one sample of a metric.
type MetricSample struct {
	Labels map[string]string
	Value  float64
}
