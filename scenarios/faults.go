package scenarios

import (
	"fmt"
	"strings"
	"time"
)

// impairment reads impair's parameters: at least one impairment, each in
// its unit, direction and match from their word lists.
func (r *resolver) impairment(si *stepInfo) *Impairment {
	rs := si.raw
	im := &Impairment{Direction: "both", Match: "all"}
	any := false
	dur := func(v String, what string, to *time.Duration) {
		if !v.IsSet() {
			return
		}
		any = true
		if d, ok := r.duration(v, si.label+": "+what); ok {
			*to = d
		}
	}
	pct := func(v String, what string, to *float64) {
		if !v.IsSet() {
			return
		}
		any = true
		if p, msg := parsePercent(v.Value); msg != "" {
			r.errorf(v.Pos, "%s: %s %s", si.label, what, msg)
		} else {
			*to = p
		}
	}
	dur(rs.Delay, "delay", &im.Delay)
	dur(rs.Jitter, "jitter", &im.Jitter)
	pct(rs.Loss, "loss", &im.Loss)
	pct(rs.Reorder, "reorder", &im.Reorder)
	pct(rs.Duplicate, "duplicate", &im.Duplicate)
	pct(rs.Corrupt, "corrupt", &im.Corrupt)
	if rs.Rate.IsSet() {
		any = true
		if v, msg := parseRate(rs.Rate.Value); msg != "" {
			r.errorf(rs.Rate.Pos, "%s: rate %s", si.label, msg)
		} else {
			im.RateBps = v
		}
	}
	if !any {
		r.errorf(rs.Action.Pos, "%s: impair needs at least one of delay, jitter, loss, reorder, duplicate, corrupt, rate (impair-clear removes an impairment)", si.label)
	}
	if rs.Jitter.IsSet() && !rs.Delay.IsSet() {
		r.errorf(rs.Jitter.Pos, "%s: jitter varies a delay: set delay too", si.label)
	}
	if rs.Reorder.IsSet() && !rs.Delay.IsSet() {
		r.errorf(rs.Reorder.Pos, "%s: reorder sends some packets ahead of the delayed ones: set delay too", si.label)
	}
	word := func(v String, what string, words []string, to *string) {
		if !v.IsSet() {
			return
		}
		w := strings.TrimSpace(v.Value)
		for _, ok := range words {
			if w == ok {
				*to = w
				return
			}
		}
		r.errorf(v.Pos, "%s: %s %q: want %s", si.label, what, v.Value, strings.Join(words, ", "))
	}
	word(rs.Direction, "direction", []string{"in", "out", "both"}, &im.Direction)
	word(rs.Match, "match", []string{"all", "overlay", "control"}, &im.Match)
	im.Seed = rs.Seed.Value
	return im
}

// offload reads offload's switches: on or off each.
func (r *resolver) offload(si *stepInfo) *Offload {
	rs := si.raw
	o := &Offload{Dev: strings.TrimSpace(rs.Dev.Value)}
	if o.Dev == "" && rs.Dev.IsSet() {
		r.errorf(rs.Dev.Pos, "%s: dev: an interface name is required (eth0, flannel.1, ...)", si.label)
	}
	if len(o.Dev) > 15 || strings.ContainsAny(o.Dev, "/: ") {
		r.errorf(rs.Dev.Pos, "%s: dev %q is not an interface name", si.label, o.Dev)
	}
	onOff := func(v String, what string) *bool {
		if !v.IsSet() {
			return nil
		}
		switch strings.ToLower(strings.TrimSpace(v.Value)) {
		case "on", "true":
			t := true
			return &t
		case "off", "false":
			f := false
			return &f
		}
		r.errorf(v.Pos, "%s: %s %q: want on or off", si.label, what, v.Value)
		return nil
	}
	o.TxChecksum = onOff(rs.TxChecksum, "tx-checksum")
	o.TSO = onOff(rs.TSO, "tso")
	o.GRO = onOff(rs.GRO, "gro")
	if !rs.TxChecksum.IsSet() && !rs.TSO.IsSet() && !rs.GRO.IsSet() {
		r.errorf(rs.Action.Pos, "%s: offload needs at least one of tx-checksum, tso, gro (on or off)", si.label)
	}
	return o
}

// describeImpairment is an impairment in a line, for logs and reports.
func (im *Impairment) String() string {
	var parts []string
	if im.Delay > 0 {
		parts = append(parts, "delay "+im.Delay.String())
	}
	if im.Jitter > 0 {
		parts = append(parts, "jitter "+im.Jitter.String())
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", im.Loss}, {"reorder", im.Reorder}, {"duplicate", im.Duplicate}, {"corrupt", im.Corrupt}} {
		if p.v > 0 {
			parts = append(parts, fmt.Sprintf("%s %g%%", p.name, p.v))
		}
	}
	if im.RateBps > 0 {
		parts = append(parts, fmt.Sprintf("rate %d bit/s", im.RateBps))
	}
	parts = append(parts, "direction "+im.Direction, "match "+im.Match)
	if im.Seed != 0 {
		parts = append(parts, fmt.Sprintf("seed %d", im.Seed))
	}
	return strings.Join(parts, ", ")
}
