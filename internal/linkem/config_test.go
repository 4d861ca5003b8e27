package linkem

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigJSON(t *testing.T) {
	c := Config{
		Netns: "ol-x-ul", HostIf: "ol-x-h1", BridgeIf: "lkm0r", Seed: 7,
		Out:     Impairment{Match: MatchOverlay, Delay: Duration(20 * time.Millisecond), Jitter: Duration(5 * time.Millisecond), Loss: 30, Reorder: 2, Duplicate: 1, Corrupt: 0.1, Rate: 100_000_000, MTU: 1400},
		In:      Impairment{Delay: Duration(20 * time.Millisecond)},
		Overlay: OverlayMatch{UDPPorts: []uint16{8472}, Networks: []netip.Prefix{mustPrefix("10.10.0.0/16")}},
		Control: ControlMatch{EtcdIPs: []netip.Addr{mustAddr("192.168.77.250")}},
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"delay":"20ms"`) {
		t.Errorf("durations are not written as text: %s", data)
	}
	got, err := ParseConfig(data)
	if err != nil {
		t.Fatalf("parse what Marshal wrote: %v\n%s", err, data)
	}
	if !reflect.DeepEqual(*got, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *got, c)
	}
	// A number is nanoseconds.
	got, err = ParseConfig([]byte(`{"hostIf":"a","bridgeIf":"b","out":{"delay":1000000}}`))
	if err != nil || got.Out.Delay.Std() != time.Millisecond {
		t.Errorf("numeric delay: %v, %v", got, err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err != nil {
		t.Errorf("LoadConfig: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadConfig of a missing file: no error")
	}
}

func TestConfigErrors(t *testing.T) {
	base := `"hostIf":"a","bridgeIf":"b"`
	cases := []struct{ json, want string }{
		{`{"bridgeIf":"b"}`, "hostIf and bridgeIf are both required"},
		{`{"hostIf":"a","bridgeIf":"a"}`, `both "a"`},
		{`{` + base + `,"out":{"loss":120}}`, "out.loss: 120 is outside 0..100"},
		{`{` + base + `,"in":{"corrupt":-1}}`, "in.corrupt: -1 is outside 0..100"},
		{`{` + base + `,"out":{"reorder":5}}`, "out.reorder: 5% needs a delay"},
		{`{` + base + `,"out":{"match":"overlays"}}`, `out.match: match "overlays": want all, overlay or control`},
		{`{` + base + `,"in":{"match":"overlay"}}`, "in.match: overlay, but overlay names no udpPorts and no networks"},
		{`{` + base + `,"out":{"delay":"-1s"}}`, "out.delay: -1s is outside"},
		{`{` + base + `,"out":{"delay":"2x"}}`, `"2x" is not a duration`},
		{`{` + base + `,"out":{"rateQueue":1000}}`, "rateBurst and rateQueue need a rate"},
		{`{` + base + `,"out":{"dealy":"1s"}}`, `unknown field "dealy"`},
		{`{` + base + `,"overlay":{"networks":["fd00::/64"]}}`, "overlay.networks[0]: fd00::/64 is not an IPv4 prefix"},
		{"{\n" + base + ",\n\"out\": {\"loss\": 1,,}}", "line 3 column"},
	}
	for _, c := range cases {
		_, err := ParseConfig([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.json, err, c.want)
		}
	}
}

func TestParsers(t *testing.T) {
	for in, want := range map[string]float64{"1%": 1, "2.5": 2.5, " 100 % ": 100, "0": 0} {
		if got, err := ParsePercent(in); err != nil || got != want {
			t.Errorf("ParsePercent(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "x%", "101%", "-1", "NaN"} {
		if _, err := ParsePercent(bad); err == nil {
			t.Errorf("ParsePercent(%q): no error", bad)
		}
	}
	for in, want := range map[string]uint64{"100mbit": 100_000_000, "1.5gbit": 1_500_000_000, "500kbit": 500_000, "unlimited": 0, "0": 0} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"100", "fast", "0.1bit", "9999999tbit"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q): no error", bad)
		}
	}
	var c Config
	d, err := ParseDirection("")
	if err != nil || d != DirBoth {
		t.Fatalf("ParseDirection(\"\") = %v, %v", d, err)
	}
	if _, err := ParseDirection("up"); err == nil {
		t.Error("ParseDirection(up): no error")
	}
	c.Set(DirOut, Impairment{Loss: 1})
	c.Set(DirIn, Impairment{Loss: 2})
	if c.Out.Loss != 1 || c.In.Loss != 2 {
		t.Errorf("Set per direction: %+v", c)
	}
	c.Set(DirBoth, Impairment{Loss: 3})
	if c.Out.Loss != 3 || c.In.Loss != 3 {
		t.Errorf("Set both: %+v", c)
	}
}
