package scenarios

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// nameRE is the shape of step and expectation names. They start with a
// letter so that a name can never be read as a duration, which lets a
// during window take either in the same field.
var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,62}$`)

// scenarioNameRE is the shape of a scenario's name (it may name artifact
// directories, so no slashes or spaces).
var scenarioNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// parseDuration reads Go duration syntax and refuses negative values.
func parseDuration(s string) (time.Duration, string) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Sprintf("%q is not a duration (want e.g. 500ms, 2s, 1m)", s)
	}
	if d < 0 {
		return 0, fmt.Sprintf("%s is negative", s)
	}
	return d, ""
}

// parsePercent reads "20%", "20" or "2.5%" as a percentage in 0..100.
func parsePercent(s string) (float64, string) {
	t := strings.TrimSpace(s)
	t = strings.TrimSpace(strings.TrimSuffix(t, "%"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Sprintf("%q is not a percentage (want e.g. 20%% or 2.5)", s)
	}
	if v < 0 || v > 100 {
		return 0, fmt.Sprintf("%s is outside 0..100%%", s)
	}
	return v, ""
}

var rateRE = regexp.MustCompile(`^(?i)([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit|tbit)$`)

var rateUnits = map[string]float64{"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}

// maxRate keeps rates well inside uint64 and float64's exact integers.
const maxRate = 1 << 52

// parseRate reads a tc-style rate ("500kbit", "10mbit", "1.5gbit"; SI
// multiples, bits per second). "unlimited" is 0, meaning no limit.
func parseRate(s string) (uint64, string) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "unlimited") {
		return 0, ""
	}
	m := rateRE.FindStringSubmatch(t)
	if m == nil {
		return 0, fmt.Sprintf("%q is not a rate (want e.g. 500kbit, 10mbit, 1gbit, or unlimited)", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Sprintf("%q is not a rate (want e.g. 500kbit, 10mbit, 1gbit, or unlimited)", s)
	}
	bps := math.Round(n * rateUnits[strings.ToLower(m[2])])
	switch {
	case bps < 1:
		return 0, fmt.Sprintf("%s is below 1bit (use unlimited to remove a limit)", s)
	case bps > maxRate:
		return 0, fmt.Sprintf("%s is too fast to be a link rate", s)
	}
	return uint64(bps), ""
}

var (
	hostNameRE      = regexp.MustCompile(`^h([1-9][0-9]{0,5})$`)
	containerNameRE = regexp.MustCompile(`^(?:([a-z][a-z0-9]{0,7})-)?c([1-9][0-9]{0,5})$`)
	tenantAllRE     = regexp.MustCompile(`^([a-z][a-z0-9]{0,7})-\*$`)
)

// hostIndex returns N for "hN", or 0.
func hostIndex(name string) int {
	m := hostNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// containerIndex returns N for "cN" or "NET-cN", or 0.
func containerIndex(name string) int {
	m := containerNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[2])
	return n
}

// containerNetwork returns NET for "NET-cN" or "NET-*", or "".
func containerNetwork(name string) string {
	if m := containerNameRE.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	if m := tenantAllRE.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

// parseSelector reads "HOST/CONTAINER", "HOST" (all its containers) or "*".
func parseSelector(s string) (Selector, bool) {
	host, ctr, found := strings.Cut(strings.TrimSpace(s), "/")
	if !found {
		ctr = "*"
	}
	if host != "*" && hostIndex(host) == 0 {
		return Selector{}, false
	}
	if ctr != "*" && containerIndex(ctr) == 0 && !tenantAllRE.MatchString(ctr) {
		return Selector{}, false
	}
	return Selector{Host: host, Container: ctr}, true
}

var lossResultRE = regexp.MustCompile(`^loss\s*<=\s*(\S+)$`)

// parsePingResult reads all, none or loss<=N%.
func parsePingResult(s string) (PingResult, float64, bool) {
	t := strings.TrimSpace(s)
	switch t {
	case string(ResultAll):
		return ResultAll, 0, true
	case string(ResultNone):
		return ResultNone, 100, true
	}
	m := lossResultRE.FindStringSubmatch(t)
	if m == nil {
		return "", 0, false
	}
	v, msg := parsePercent(m[1])
	if msg != "" {
		return "", 0, false
	}
	return ResultLoss, v, true
}

// formatHosts lists host indexes compactly: "h1..h3, h5".
func formatHosts(idx []int) string {
	if len(idx) == 0 {
		return "none"
	}
	var parts []string
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, fmt.Sprintf("h%d..h%d", idx[i], idx[j]))
		} else {
			for k := i; k <= j; k++ {
				parts = append(parts, fmt.Sprintf("h%d", idx[k]))
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// satAdd adds durations without wrapping around.
func satAdd(a, b time.Duration) time.Duration {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxInt64
}

// Compare is a bound a measured value must meet: Op is one of ==, <=, <,
// >=, > and Value the bound (in the unit of what it bounds).
type Compare struct {
	Op    string
	Value float64
}

// Holds reports whether v meets the bound.
func (c Compare) Holds(v float64) bool {
	switch c.Op {
	case "<=":
		return v <= c.Value
	case "<":
		return v < c.Value
	case ">=":
		return v >= c.Value
	case ">":
		return v > c.Value
	}
	return v == c.Value
}

func (c Compare) String() string { return c.Op + strconv.FormatFloat(c.Value, 'g', -1, 64) }

// parseCompare reads "<=3", "== 0", ">= 1.5", "<20%", "3" (meaning ==3);
// value parses the number after the operator (with its unit), or plain
// numbers when nil.
func parseCompare(s string, value func(string) (float64, string)) (Compare, string) {
	t := strings.TrimSpace(s)
	c := Compare{Op: "=="}
	for _, op := range []string{"<=", ">=", "==", "<", ">"} {
		if rest, ok := strings.CutPrefix(t, op); ok {
			c.Op, t = op, strings.TrimSpace(rest)
			break
		}
	}
	if value == nil {
		value = func(s string) (float64, string) {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v < 0 {
				return 0, fmt.Sprintf("%q: want a non-negative number", s)
			}
			return v, ""
		}
	}
	v, msg := value(t)
	if msg != "" {
		return Compare{}, fmt.Sprintf("%q: want OP VALUE with OP one of ==, <=, <, >=, > (e.g. \"<=3\"); %s", s, msg)
	}
	c.Value = v
	return c, ""
}

// parsePercentUnbounded reads "150%" or "20": a percentage that may exceed
// 100 (CPU time of several cores).
func parsePercentUnbounded(s string) (float64, string) {
	t := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Sprintf("%q is not a percentage", s)
	}
	return v, ""
}

var bytesRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|kB|MB|GB)?$`)

var byteUnits = map[string]float64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "kB": 1e3, "MB": 1e6, "GB": 1e9}

// parseBytes reads "64MiB", "512KiB", "1.5GiB" or a plain byte count.
func parseBytes(s string) (float64, string) {
	m := bytesRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Sprintf("%q is not a size (want e.g. 64MiB, 512KiB)", s)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v * byteUnits[m[2]], ""
}
