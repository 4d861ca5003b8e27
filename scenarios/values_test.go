package scenarios

import (
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"10mbit", 10_000_000, true},
		{"1gbit", 1_000_000_000, true},
		{"500kbit", 500_000, true},
		{"1.5Gbit", 1_500_000_000, true},
		{"64bit", 64, true},
		{" 2 mbit ", 2_000_000, true},
		{"unlimited", 0, true},
		{"10mbps", 0, false},
		{"10", 0, false},
		{"0mbit", 0, false},
		{"0.1bit", 0, false},
		{"-1mbit", 0, false},
		{"99999999tbit", 0, false},
		{"", 0, false},
	} {
		got, msg := parseRate(tc.in)
		if got != tc.want || (msg == "") != tc.ok {
			t.Errorf("parseRate(%q) = %d, %q; want %d, ok %v", tc.in, got, msg, tc.want, tc.ok)
		}
	}
}

func TestParsePercent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"20%", 20, true}, {"20", 20, true}, {"2.5 %", 2.5, true}, {"0", 0, true}, {"100%", 100, true},
		{"101", 0, false}, {"-1%", 0, false}, {"NaN", 0, false}, {"Inf%", 0, false}, {"%", 0, false}, {"twenty", 0, false},
	} {
		got, msg := parsePercent(tc.in)
		if got != tc.want || (msg == "") != tc.ok {
			t.Errorf("parsePercent(%q) = %v, %q; want %v, ok %v", tc.in, got, msg, tc.want, tc.ok)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"500ms", 500 * time.Millisecond, true}, {"2s", 2 * time.Second, true}, {"1m30s", 90 * time.Second, true}, {"0", 0, true},
		{"-1s", 0, false}, {"2", 0, false}, {"2x", 0, false}, {"", 0, false},
	} {
		got, msg := parseDuration(tc.in)
		if got != tc.want || (msg == "") != tc.ok {
			t.Errorf("parseDuration(%q) = %v, %q; want %v, ok %v", tc.in, got, msg, tc.want, tc.ok)
		}
	}
}

func TestSelector(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Selector
		ok   bool
	}{
		{"h1/c2", Selector{"h1", "c2"}, true},
		{"h1/*", Selector{"h1", "*"}, true},
		{"*/*", Selector{"*", "*"}, true},
		{"*/c1", Selector{"*", "c1"}, true},
		{"h12", Selector{"h12", "*"}, true},
		{"*", Selector{"*", "*"}, true},
		{"h0", Selector{}, false},
		{"h01/c1", Selector{}, false},
		{"h1/c0", Selector{}, false},
		{"h1/", Selector{}, false},
		{"/c1", Selector{}, false},
		{"h1/c1/x", Selector{}, false},
		{"etcd", Selector{}, false},
		{"", Selector{}, false},
	} {
		got, ok := parseSelector(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseSelector(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	s := Selector{"*", "c2"}
	if !s.Match("h1", "c2") || !s.Match("h9", "c2") || s.Match("h1", "c1") {
		t.Errorf("%v matches wrongly", s)
	}
	s = Selector{"h2", "*"}
	if !s.Match("h2", "c1") || s.Match("h1", "c1") || s.String() != "h2/*" {
		t.Errorf("%v matches wrongly", s)
	}
}

func TestPingResult(t *testing.T) {
	for _, tc := range []struct {
		in   string
		res  PingResult
		loss float64
		ok   bool
	}{
		{"all", ResultAll, 0, true}, {"none", ResultNone, 100, true},
		{"loss<=20%", ResultLoss, 20, true}, {"loss <= 2.5", ResultLoss, 2.5, true},
		{"loss<20%", "", 0, false}, {"loss<=", "", 0, false}, {"some", "", 0, false}, {"loss<=120%", "", 0, false},
	} {
		res, loss, ok := parsePingResult(tc.in)
		if res != tc.res || loss != tc.loss || ok != tc.ok {
			t.Errorf("parsePingResult(%q) = %q, %v, %v", tc.in, res, loss, ok)
		}
	}
}

func TestFormatHosts(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{
		{nil, "none"}, {[]int{1}, "h1"}, {[]int{1, 2}, "h1, h2"}, {[]int{1, 2, 3}, "h1..h3"},
		{[]int{1, 2, 3, 5, 7, 8, 9, 10}, "h1..h3, h5, h7..h10"},
	} {
		if got := formatHosts(tc.in); got != tc.want {
			t.Errorf("formatHosts(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPosString(t *testing.T) {
	for p, want := range map[Pos]string{
		{"a.yaml", 3, 7}: "a.yaml:3:7", {"a.yaml", 3, 0}: "a.yaml:3:1", {"a.yaml", 0, 0}: "a.yaml", {"", 2, 5}: "2:5",
	} {
		if got := p.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", p, got, want)
		}
	}
	es := Errors{{Pos{"f", 9, 1}, "b"}, {Pos{"f", 2, 3}, "a"}, {Pos{"f", 2, 3}, "a"}, {Pos{"f", 2, 1}, "c"}}.sorted()
	if got := es.Error(); got != "f:2:1: c\nf:2:3: a\nf:9:1: b" {
		t.Errorf("sorted errors:\n%s", got)
	}
}
