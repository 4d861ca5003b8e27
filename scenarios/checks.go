package scenarios

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// checkList names every check, in the order error messages list them.
const checkList = "ping, encap, lease, route, agent, pmtu, flow, tcp, log, resources, metric, neigh or fdb"

// one is a selector that must name exactly one container (h1/c2).
func (r *resolver) one(v String, at Pos, what string) Selector {
	s := r.selector(v, at, what)
	if (s.Host == "*" || s.Container == "*") && v.IsSet() && s.Host != "" {
		r.errorf(v.Pos, "%s %q: name one container (e.g. h1/c1)", what, v.Value)
	}
	return s
}

func (r *resolver) pmtu(p *RawPMTU, label string) *PMTUCheck {
	c := &PMTUCheck{From: r.one(p.From, p.Pos, label+": pmtu from"), To: r.one(p.To, p.Pos, label+": pmtu to")}
	switch v := p.MTU.Value; {
	case !p.MTU.IsSet():
		r.errorf(p.Pos, "%s: pmtu needs mtu (the largest IP packet, with DF, expected to pass)", label)
	case v < 68 || v > 65535:
		r.errorf(p.MTU.Pos, "%s: pmtu mtu %d: must be 68..65535", label, v)
	default:
		c.MTU = int(v)
	}
	return c
}

func (r *resolver) flow(p *RawFlow, label string) *FlowCheck {
	c := &FlowCheck{From: r.one(p.From, p.Pos, label+": flow from"), To: r.one(p.To, p.Pos, label+": flow to"), Proto: "tcp"}
	if p.Proto.IsSet() {
		switch v := strings.TrimSpace(p.Proto.Value); v {
		case "tcp", "udp":
			c.Proto = v
		default:
			r.errorf(p.Proto.Pos, "%s: flow proto %q: want tcp or udp", label, p.Proto.Value)
		}
	}
	if p.MaxStall.IsSet() {
		c.MaxStall, _ = r.duration(p.MaxStall, label+": flow maxStall")
	}
	if p.MinRate.IsSet() {
		v, msg := parseRate(p.MinRate.Value)
		if msg != "" {
			r.errorf(p.MinRate.Pos, "%s: flow minRate %s", label, msg)
		}
		c.MinRateBps = v
	}
	if !p.MaxStall.IsSet() && !p.MinRate.IsSet() && c.Proto == "udp" {
		r.errorf(p.Pos, "%s: a udp flow has no connection to lose: give maxStall or minRate", label)
	}
	return c
}

func (r *resolver) tcp(p *RawTCP, label string) *TCPCheck {
	c := &TCPCheck{From: r.one(p.From, p.Pos, label+": tcp from"), To: r.one(p.To, p.Pos, label+": tcp to"), Result: "connect"}
	switch v := p.Port.Value; {
	case !p.Port.IsSet():
		r.errorf(p.Pos, "%s: tcp needs port", label)
	case v < 1 || v > 65535:
		r.errorf(p.Port.Pos, "%s: tcp port %d: must be 1..65535", label, v)
	default:
		c.Port = int(v)
	}
	if p.Result.IsSet() {
		switch v := strings.TrimSpace(p.Result.Value); v {
		case "connect", "refused", "timeout":
			c.Result = v
		default:
			r.errorf(p.Result.Pos, "%s: tcp result %q: want connect, refused or timeout", label, p.Result.Value)
		}
	}
	return c
}

func (r *resolver) logCheck(p *RawLog, label string) *LogCheck {
	c := &LogCheck{Host: r.host(p.Host, p.Pos, label+": log"), Count: Compare{Op: ">=", Value: 1}}
	if !p.Match.IsSet() {
		r.errorf(p.Pos, "%s: log needs match (a regular expression)", label)
	} else if re, err := regexp.Compile(p.Match.Value); err != nil {
		r.errorf(p.Match.Pos, "%s: log match %q: %v", label, p.Match.Value, err)
	} else {
		c.Match = re
	}
	if p.Count.IsSet() {
		v, msg := parseCompare(p.Count.Value, nil)
		if msg != "" {
			r.errorf(p.Count.Pos, "%s: log count %s", label, msg)
		}
		c.Count = v
	}
	return c
}

func (r *resolver) resources(p *RawResources, label string) *ResourcesCheck {
	c := &ResourcesCheck{Host: r.host(p.Host, p.Pos, label+": resources")}
	if p.CPU.IsSet() {
		v, msg := parseCompare(p.CPU.Value, func(s string) (float64, string) {
			if !strings.HasSuffix(strings.TrimSpace(s), "%") {
				return 0, fmt.Sprintf("%q: want a percentage of one core, e.g. 20%%", s)
			}
			return parsePercentUnbounded(s)
		})
		if msg != "" {
			r.errorf(p.CPU.Pos, "%s: resources cpu %s", label, msg)
		}
		c.CPU = &v
	}
	if p.RSS.IsSet() {
		v, msg := parseCompare(p.RSS.Value, parseBytes)
		if msg != "" {
			r.errorf(p.RSS.Pos, "%s: resources rss %s", label, msg)
		}
		c.RSS = &v
	}
	if c.CPU == nil && c.RSS == nil {
		r.errorf(p.Pos, "%s: resources needs cpu or rss (e.g. cpu: \"<=20%%\", rss: \"<=64MiB\")", label)
	}
	return c
}

var metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

func (r *resolver) metric(p *RawMetric, label string) *MetricCheck {
	c := &MetricCheck{Host: r.host(p.Host, p.Pos, label+": metric"), Name: strings.TrimSpace(p.Name.Value), Labels: map[string]string{}}
	if !metricNameRE.MatchString(c.Name) {
		r.errorf(firstPos(p.Name.Pos, p.Pos), "%s: metric name %q: want a Prometheus metric name (e.g. overlaylab_peers)", label, p.Name.Value)
	}
	for k, v := range p.Labels.Values {
		c.Labels[k] = v.Value
	}
	if !p.Value.IsSet() {
		r.errorf(p.Pos, "%s: metric needs value (e.g. \">=1\")", label)
		return c
	}
	v, msg := parseCompare(p.Value.Value, func(s string) (float64, string) {
		var f float64
		if _, err := fmt.Sscan(s, &f); err != nil {
			return 0, fmt.Sprintf("%q: want a number", s)
		}
		return f, ""
	})
	if msg != "" {
		r.errorf(p.Value.Pos, "%s: metric value %s", label, msg)
	}
	c.Value = v
	return c
}

func (r *resolver) neigh(p *RawNeigh, label string) *NeighCheck {
	c := &NeighCheck{Host: r.host(p.Host, p.Pos, label+": neigh"), Present: true, Dev: strings.TrimSpace(p.Dev.Value)}
	if p.Present.IsSet() {
		c.Present = p.Present.Value
	}
	if peer, ok := strings.CutPrefix(strings.TrimSpace(p.IP.Value), "peer:"); ok {
		c.IPPeer = r.peer(p.IP, peer, label+": neigh ip")
	} else if ip, err := netip.ParseAddr(strings.TrimSpace(p.IP.Value)); !p.IP.IsSet() || err != nil || !ip.Is4() {
		r.errorf(firstPos(p.IP.Pos, p.Pos), "%s: neigh needs ip (an IPv4 address, or peer:HOST for that host's VTEP address)", label)
	} else {
		c.IP = ip
	}
	if p.LLAddr.IsSet() {
		mac, err := net.ParseMAC(strings.TrimSpace(p.LLAddr.Value))
		if err != nil {
			r.errorf(p.LLAddr.Pos, "%s: neigh lladdr %q: not a MAC address", label, p.LLAddr.Value)
		} else {
			c.LLAddr = mac.String()
		}
	}
	return c
}

func (r *resolver) fdb(p *RawFDB, label string) *FDBCheck {
	c := &FDBCheck{Host: r.host(p.Host, p.Pos, label+": fdb"), Present: true, Dev: strings.TrimSpace(p.Dev.Value)}
	if p.Present.IsSet() {
		c.Present = p.Present.Value
	}
	switch mac, err := net.ParseMAC(strings.TrimSpace(p.MAC.Value)); {
	case p.MAC.IsSet() && err != nil:
		r.errorf(p.MAC.Pos, "%s: fdb mac %q: not a MAC address", label, p.MAC.Value)
	case p.MAC.IsSet():
		c.MAC = mac.String()
	case !p.Dst.IsSet():
		r.errorf(p.Pos, "%s: fdb needs mac or dst (or both)", label)
	}
	if p.Dst.IsSet() {
		dst := strings.TrimSpace(p.Dst.Value)
		if peer, ok := strings.CutPrefix(dst, "peer:"); ok {
			c.DstPeer = r.peer(p.Dst, peer, label+": fdb dst")
		} else if a, err := netip.ParseAddr(dst); err != nil || !a.Is4() {
			r.errorf(p.Dst.Pos, "%s: fdb dst %q: want an IPv4 address or peer:HOST", label, p.Dst.Value)
		} else {
			c.Dst = a
		}
	}
	return c
}

// routeVia reads a route check's gateway: an address or peer:HOST.
func (r *resolver) routeVia(p *RawRoute, c *RouteCheck, label string) {
	if !p.Via.IsSet() {
		return
	}
	via := strings.TrimSpace(p.Via.Value)
	if peer, ok := strings.CutPrefix(via, "peer:"); ok {
		c.ViaPeer = r.peer(p.Via, peer, label+": route via")
		return
	}
	a, err := netip.ParseAddr(via)
	if err != nil || !a.Is4() {
		r.errorf(p.Via.Pos, "%s: route via %q: want an IPv4 address or peer:HOST", label, p.Via.Value)
		return
	}
	c.Via = a
}

// peer checks the HOST of a peer:HOST value v (what names the field) against
// the hosts the scenario ever has, and returns it.
func (r *resolver) peer(v String, peer, what string) string {
	if !r.knownHost(peer) {
		r.errorf(v.Pos, "%s %q: unknown host %q (hosts: %s)", what, v.Value, peer, r.allHosts())
	}
	return peer
}

// knownHost reports whether name is a host the scenario has at some point
// (or the hosts could not be read, so no name is to blame).
func (r *resolver) knownHost(name string) bool {
	i := hostIndex(name)
	return r.hostsBroken || i >= 1 && i <= len(r.hosts)
}
