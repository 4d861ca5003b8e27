package linkem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Config is everything one relay needs. The lab writes it as JSON and hands
// the file to `overlaylab linkem --config FILE`.
type Config struct {
	// Netns is the network namespace holding both interfaces, by name
	// (as `ip netns` lists it); empty means the relay's own.
	Netns string `json:"netns,omitempty"`
	// HostIf faces the host: the bridge port taken off the bridge.
	HostIf string `json:"hostIf"`
	// BridgeIf faces the bridge: the free end of the pair Insert made.
	BridgeIf string `json:"bridgeIf"`
	// Seed drives every random decision; each direction and each kind of
	// decision draws from its own stream derived from it.
	Seed uint64 `json:"seed"`
	// Out is applied to frames from the host to the underlay, In to frames
	// from the underlay to the host.
	Out Impairment `json:"out"`
	In  Impairment `json:"in"`
	// Overlay and Control define the classes `match: overlay` and
	// `match: control` select.
	Overlay OverlayMatch `json:"overlay,omitzero"`
	Control ControlMatch `json:"control,omitzero"`
	// StatsFile receives the counters as JSON every StatsInterval (default
	// 1s; negative: only on SIGUSR1 and at exit).
	StatsFile     string   `json:"statsFile,omitempty"`
	StatsInterval Duration `json:"statsInterval,omitempty"`
}

// Impairment is what happens to one direction's matched packets. The zero
// value passes everything untouched.
type Impairment struct {
	// Match selects the packets impaired; the others pass untouched and
	// undelayed. Empty means all (every IP packet but link-layer
	// housekeeping: ARP, IGMP, neighbour discovery and MLD always pass).
	Match Match `json:"match,omitempty"`
	// Delay is added to every matched packet; Jitter adds a uniform
	// amount in [-Jitter, +Jitter] on top (never below zero, and never so
	// that a packet overtakes the one before it).
	Delay  Duration `json:"delay,omitempty"`
	Jitter Duration `json:"jitter,omitempty"`
	// Percentages, 0..100. Reorder is netem's: a reordered packet skips
	// the delay and leaves at once, overtaking those still delayed (so it
	// needs a Delay).
	Loss      float64 `json:"loss,omitempty"`
	Reorder   float64 `json:"reorder,omitempty"`
	Duplicate float64 `json:"duplicate,omitempty"`
	Corrupt   float64 `json:"corrupt,omitempty"`
	// Rate limits matched packets to this many bit/s (0: no limit), as a
	// token bucket of RateBurst bytes (default: 10 ms at the rate, at least
	// 16 KiB) in front of a queue of RateQueue bytes (default: 50 ms at the
	// rate, at least 64 KiB); a packet arriving to a full queue is dropped.
	Rate      uint64 `json:"rate,omitempty"`
	RateBurst int    `json:"rateBurst,omitempty"`
	RateQueue int    `json:"rateQueue,omitempty"`
	// Limit bounds the packets held (delayed or queued) at once, default
	// DefaultLimit; beyond it packets are dropped and counted.
	Limit int `json:"limit,omitempty"`
	// MTU, when set, is a narrower hop: every IP wire packet (IPv4 total
	// length, IPv6 header and payload) longer than MTU bytes is dropped,
	// matched or not (GSO frames are cut first, so each segment is judged
	// as it would cross the wire). 0: no limit.
	MTU int `json:"mtu,omitempty"`
}

// OverlayMatch defines the backend's encapsulated traffic.
type OverlayMatch struct {
	// UDPPorts: UDP packets from or to one of these ports (the udp
	// backend's 8285, the vxlan backend's 8472).
	UDPPorts []uint16 `json:"udpPorts,omitempty"`
	// Networks: IPv4 packets whose source or destination is inside one of
	// these (host-gw, whose container packets cross the underlay as is).
	Networks []netip.Prefix `json:"networks,omitempty"`
}

// ControlMatch defines etcd's traffic.
type ControlMatch struct {
	// EtcdIPs: TCP to or from an etcd port on one of these addresses; any
	// address when empty.
	EtcdIPs []netip.Addr `json:"etcdIPs,omitempty"`
	// Ports: default etcd's client and peer ports, 2379 and 2380.
	Ports []uint16 `json:"ports,omitempty"`
}

// defaultEtcdPorts are etcd's client and peer ports.
func defaultEtcdPorts() []uint16 { return []uint16{2379, 2380} }

// DefaultLimit is the default bound on packets held per direction. It is
// there to bound memory, not to model a queue (the rate queue does that): a
// link of 5 Gbit/s delayed by 100 ms holds some 45000 full-size packets.
const DefaultLimit = 100000

// maxHeldBytes bounds the buffer memory one direction holds, whatever Limit
// says.
const maxHeldBytes = 192 << 20

// Match names a class of packets.
type Match string

const (
	MatchAll     Match = "all"
	MatchOverlay Match = "overlay"
	MatchControl Match = "control"
)

// ParseMatch reads all, overlay or control.
func ParseMatch(s string) (Match, error) {
	switch m := Match(strings.ToLower(strings.TrimSpace(s))); m {
	case MatchAll, MatchOverlay, MatchControl:
		return m, nil
	}
	return "", fmt.Errorf("match %q: want all, overlay or control", s)
}

// Direction is relative to the host: out is host → underlay.
type Direction string

const (
	DirOut  Direction = "out"
	DirIn   Direction = "in"
	DirBoth Direction = "both"
)

// ParseDirection reads in, out or both; empty is both.
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(strings.ToLower(strings.TrimSpace(s))); d {
	case DirOut, DirIn, DirBoth:
		return d, nil
	case "":
		return DirBoth, nil
	}
	return "", fmt.Errorf("direction %q: want in, out or both", s)
}

// Set applies imp to the directions d names.
func (c *Config) Set(d Direction, imp Impairment) {
	if d == DirOut || d == DirBoth || d == "" {
		c.Out = imp
	}
	if d == DirIn || d == DirBoth || d == "" {
		c.In = imp
	}
}

// Duration is a time.Duration written in JSON as Go duration text ("20ms");
// a JSON number is read as nanoseconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (want e.g. 20ms)", s)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("%s is not a duration (want a string like \"20ms\" or nanoseconds)", b)
	}
	*d = Duration(n)
	return nil
}

// Std is d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ParsePercent reads "20%", "20" or "2.5%" as a percentage in 0..100.
func ParsePercent(s string) (float64, error) {
	t := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%q is not a percentage (want e.g. 20%% or 2.5)", s)
	}
	if v < 0 || v > 100 {
		return 0, fmt.Errorf("%s is outside 0..100%%", s)
	}
	return v, nil
}

var rateRE = regexp.MustCompile(`^(?i)([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit|tbit)$`)

var rateUnits = map[string]float64{"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}

// maxRate keeps rates well inside float64's exact integers.
const maxRate = 1 << 52

// ParseRate reads a tc-style rate ("500kbit", "100mbit", "1.5gbit": SI
// multiples of bit/s); "unlimited" and "0" are 0, no limit.
func ParseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "unlimited") || t == "0" {
		return 0, nil
	}
	m := rateRE.FindStringSubmatch(t)
	if m == nil {
		return 0, fmt.Errorf("%q is not a rate (want e.g. 500kbit, 100mbit, 1gbit, or unlimited)", s)
	}
	n, _ := strconv.ParseFloat(m[1], 64)
	bps := math.Round(n * rateUnits[strings.ToLower(m[2])])
	switch {
	case bps < 1:
		return 0, fmt.Errorf("%s is below 1bit (use unlimited for no limit)", s)
	case bps > maxRate:
		return 0, fmt.Errorf("%s is too fast to be a link rate", s)
	}
	return uint64(bps), nil
}

// maxDelay keeps a delay line's schedule meaningful (and its queue finite).
const maxDelay = time.Minute

// Validate reports the first problem with imp; where names the direction.
func (imp Impairment) validate(where string) error {
	if imp.Match != "" {
		if _, err := ParseMatch(string(imp.Match)); err != nil {
			return fmt.Errorf("%s.match: %w", where, err)
		}
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"delay", imp.Delay}, {"jitter", imp.Jitter}} {
		if d.v < 0 || d.v.Std() > maxDelay {
			return fmt.Errorf("%s.%s: %s is outside 0..%s", where, d.name, d.v.Std(), maxDelay)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", imp.Loss}, {"reorder", imp.Reorder}, {"duplicate", imp.Duplicate}, {"corrupt", imp.Corrupt}} {
		if math.IsNaN(p.v) || p.v < 0 || p.v > 100 {
			return fmt.Errorf("%s.%s: %v is outside 0..100 (a percentage)", where, p.name, p.v)
		}
	}
	if imp.Reorder > 0 && imp.Delay == 0 {
		return fmt.Errorf("%s.reorder: %v%% needs a delay (a reordered packet overtakes delayed ones)", where, imp.Reorder)
	}
	if imp.Rate > maxRate {
		return fmt.Errorf("%s.rate: %d bit/s is too fast to be a link rate", where, imp.Rate)
	}
	if imp.RateBurst < 0 || imp.RateQueue < 0 || imp.Limit < 0 {
		return fmt.Errorf("%s: rateBurst, rateQueue and limit must not be negative", where)
	}
	if imp.MTU != 0 && (imp.MTU < 68 || imp.MTU > 65535) {
		return fmt.Errorf("%s.mtu: %d is outside 68..65535", where, imp.MTU)
	}
	if (imp.RateBurst > 0 || imp.RateQueue > 0) && imp.Rate == 0 {
		return fmt.Errorf("%s: rateBurst and rateQueue need a rate", where)
	}
	return nil
}

// Validate reports the first problem with c, naming the field.
func (c *Config) Validate() error {
	if c.HostIf == "" || c.BridgeIf == "" {
		return errors.New("hostIf and bridgeIf are both required")
	}
	if c.HostIf == c.BridgeIf {
		return fmt.Errorf("hostIf and bridgeIf are both %q", c.HostIf)
	}
	if err := c.Out.validate("out"); err != nil {
		return err
	}
	if err := c.In.validate("in"); err != nil {
		return err
	}
	for i, n := range c.Overlay.Networks {
		if !n.IsValid() || !n.Addr().Is4() {
			return fmt.Errorf("overlay.networks[%d]: %s is not an IPv4 prefix", i, n)
		}
	}
	for i, p := range c.Overlay.UDPPorts {
		if p == 0 {
			return fmt.Errorf("overlay.udpPorts[%d]: port 0", i)
		}
	}
	for i, a := range c.Control.EtcdIPs {
		if !a.IsValid() {
			return fmt.Errorf("control.etcdIPs[%d]: not an address", i)
		}
	}
	for _, d := range []struct {
		name string
		imp  Impairment
	}{{"out", c.Out}, {"in", c.In}} {
		if d.imp.Match == MatchOverlay && len(c.Overlay.UDPPorts) == 0 && len(c.Overlay.Networks) == 0 {
			return fmt.Errorf("%s.match: overlay, but overlay names no udpPorts and no networks", d.name)
		}
	}
	return nil
}

// LoadConfig reads a Config from a JSON file, refusing unknown fields (a
// misspelt knob must not silently do nothing), and validates it.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read linkem config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates a JSON Config.
func ParseConfig(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := lineCol(data, se.Offset)
			return nil, fmt.Errorf("line %d column %d: %w", line, col, err)
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func lineCol(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for _, b := range data[:min(int(off), len(data))] {
		if b == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
