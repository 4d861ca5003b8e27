package config

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	udp := Backend{Type: "udp", Port: 8285}

	tests := []struct {
		name string
		in   string
		want *Config // nil when an error is expected
		err  string  // exact message, or required substrings separated by " | "
	}{
		// Defaults.
		{
			name: "flannel default /16",
			in:   `{"Network":"10.10.0.0/16"}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: udp},
		},
		{
			name: "/8 keeps /24 subnets",
			in:   `{"Network":"10.0.0.0/8"}`,
			want: &Config{Network: p("10.0.0.0/8"), SubnetLen: 24, SubnetMin: a("10.0.1.0"), SubnetMax: a("10.255.255.0"), Backend: udp},
		},
		{
			name: "/22 is the largest prefix with the /24 default",
			in:   `{"Network":"10.10.0.0/22"}`,
			want: &Config{Network: p("10.10.0.0/22"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.3.0"), Backend: udp},
		},
		{
			name: "/23 gets prefix+2",
			in:   `{"Network":"10.10.0.0/23"}`,
			want: &Config{Network: p("10.10.0.0/23"), SubnetLen: 25, SubnetMin: a("10.10.0.128"), SubnetMax: a("10.10.1.128"), Backend: udp},
		},
		{
			name: "/28 is the smallest network",
			in:   `{"Network":"10.10.0.0/28"}`,
			want: &Config{Network: p("10.10.0.0/28"), SubnetLen: 30, SubnetMin: a("10.10.0.4"), SubnetMax: a("10.10.0.12"), Backend: udp},
		},
		{
			name: "explicit SubnetLen, SubnetMin, SubnetMax, MTU",
			in:   `{"Network":"10.10.0.0/16","SubnetLen":26,"SubnetMin":"10.10.8.0","SubnetMax":"10.10.9.192","MTU":1400}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 26, SubnetMin: a("10.10.8.0"), SubnetMax: a("10.10.9.192"), MTU: 1400, Backend: udp},
		},
		{
			name: "single-subnet range",
			in:   `{"Network":"10.10.0.0/16","SubnetMin":"10.10.7.0","SubnetMax":"10.10.7.0"}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.7.0"), SubnetMax: a("10.10.7.0"), Backend: udp},
		},
		{
			name: "SubnetLen one longer than Network leaves one subnet",
			in:   `{"Network":"10.10.0.0/16","SubnetLen":17}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 17, SubnetMin: a("10.10.128.0"), SubnetMax: a("10.10.128.0"), Backend: udp},
		},
		{
			name: "missing backend type defaults to udp",
			in:   `{"Network":"10.10.0.0/16","Backend":{}}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: udp},
		},
		{
			name: "udp explicit port",
			in:   `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":9000}}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: Backend{Type: "udp", Port: 9000}},
		},
		{
			name: "vxlan defaults",
			in:   `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan"}}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: Backend{Type: "vxlan", Port: 8472, VNI: 1}},
		},
		{
			name: "vxlan explicit port and VNI, extra keys kept",
			in:   `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","Port":4789,"VNI":16777215,"DirectRouting":true}}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"),
				Backend: Backend{Type: "vxlan", Port: 4789, VNI: 16777215, Extra: map[string]json.RawMessage{"DirectRouting": json.RawMessage("true")}}},
		},
		{
			name: "host-gw has no port",
			in:   `{"Network":"10.10.0.0/16","Backend":{"Type":"host-gw"}}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: Backend{Type: "host-gw"}},
		},
		{
			name: "flannel's dual-stack fields are tolerated",
			in:   `{"EnableIPv4":true,"EnableIPv6":false,"IPv6Network":"fd00::/56","Network":"10.10.0.0/16","Backend":null}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 24, SubnetMin: a("10.10.1.0"), SubnetMax: a("10.10.255.0"), Backend: udp},
		},
		{
			name: "keys match case-insensitively like flannel's encoding/json",
			in:   `{"network":"10.10.0.0/16","subnetlen":25}`,
			want: &Config{Network: p("10.10.0.0/16"), SubnetLen: 25, SubnetMin: a("10.10.0.128"), SubnetMax: a("10.10.255.128"), Backend: udp},
		},

		// Network.
		{name: "Network missing", in: `{}`, err: `config: Network: required`},
		{name: "Network empty", in: `{"Network":""}`, err: `config: Network: required`},
		{name: "Network garbage", in: `{"Network":"ten"}`, err: `config: Network "ten": not a CIDR prefix (want e.g. "10.10.0.0/16")`},
		{name: "Network too small", in: `{"Network":"10.10.0.0/29"}`, err: `config: Network "10.10.0.0/29": must be /28 or larger`},
		{name: "Network host bits", in: `{"Network":"10.10.1.0/16"}`, err: `config: Network "10.10.1.0/16": host bits must be zero (did you mean "10.10.0.0/16"?)`},
		{name: "Network IPv6", in: `{"Network":"fd00::/64"}`, err: `config: Network "fd00::/64": must be an IPv4 prefix`},
		{name: "Network wrong type", in: `{"Network":10}`, err: `config: Network: got JSON number, want string (line 1, column 13)`},

		// SubnetLen.
		{name: "SubnetLen 31", in: `{"Network":"10.10.0.0/16","SubnetLen":31}`, err: `config: SubnetLen 31: must be at most 30`},
		{name: "SubnetLen equals Network", in: `{"Network":"10.10.0.0/16","SubnetLen":16}`, err: `config: SubnetLen 16: must be greater than the Network prefix length 16`},
		{name: "SubnetLen shorter than Network", in: `{"Network":"10.10.0.0/16","SubnetLen":8}`, err: `config: SubnetLen 8: must be greater than the Network prefix length 16`},
		{name: "SubnetLen negative", in: `{"Network":"10.10.0.0/16","SubnetLen":-1}`, err: `config: SubnetLen -1: must be greater than the Network prefix length 16`},
		{name: "SubnetLen string", in: `{"Network":"10.10.0.0/16","SubnetLen":"24"}`, err: `config: SubnetLen: got JSON string, want integer | line 1`},
		{name: "SubnetLen fraction", in: `{"Network":"10.10.0.0/16","SubnetLen":24.5}`, err: `config: SubnetLen: got JSON number 24.5, want integer (line 1, column 42)`},

		// SubnetMin / SubnetMax.
		{name: "SubnetMin garbage", in: `{"Network":"10.10.0.0/16","SubnetMin":"x"}`, err: `config: SubnetMin "x": not an IP address`},
		{name: "SubnetMin outside", in: `{"Network":"10.10.0.0/16","SubnetMin":"10.11.0.0"}`, err: `config: SubnetMin "10.11.0.0": must be inside Network "10.10.0.0/16"`},
		{name: "SubnetMin unaligned", in: `{"Network":"10.10.0.0/16","SubnetMin":"10.10.1.1"}`, err: `config: SubnetMin "10.10.1.1": must be aligned to SubnetLen /24`},
		{name: "SubnetMax IPv6", in: `{"Network":"10.10.0.0/16","SubnetMax":"fd00::"}`, err: `config: SubnetMax "fd00::": must be an IPv4 address`},
		{name: "SubnetMax outside", in: `{"Network":"10.10.0.0/16","SubnetMax":"10.9.255.0"}`, err: `config: SubnetMax "10.9.255.0": must be inside Network "10.10.0.0/16"`},
		{name: "SubnetMax unaligned", in: `{"Network":"10.10.0.0/16","SubnetLen":26,"SubnetMax":"10.10.9.32"}`, err: `config: SubnetMax "10.10.9.32": must be aligned to SubnetLen /26`},
		{name: "empty range", in: `{"Network":"10.10.0.0/16","SubnetMin":"10.10.5.0","SubnetMax":"10.10.4.0"}`,
			err: `config: SubnetMin "10.10.5.0": must not be above SubnetMax "10.10.4.0": the range must hold at least one subnet`},

		// MTU.
		{name: "MTU too small", in: `{"Network":"10.10.0.0/16","MTU":67}`, err: `config: MTU 67: must be 0 (derive from the interface) or 68..65535`},
		{name: "MTU too large", in: `{"Network":"10.10.0.0/16","MTU":65536}`, err: `config: MTU 65536: must be 0 (derive from the interface) or 68..65535`},
		{name: "MTU negative", in: `{"Network":"10.10.0.0/16","MTU":-1}`, err: `config: MTU -1: must be 0 (derive from the interface) or 68..65535`},

		// Backend.
		{name: "Backend unknown", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"geneve"}}`, err: `config: Backend.Type "geneve": unknown backend (supported: udp, vxlan, host-gw)`},
		{name: "Backend type is case-sensitive", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"VXLAN"}}`, err: `config: Backend.Type "VXLAN": unknown backend (supported: udp, vxlan, host-gw)`},
		{name: "Backend not an object", in: `{"Network":"10.10.0.0/16","Backend":"udp"}`, err: `config: Backend: got JSON string, want object`},
		{name: "Port too large", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":70000}}`, err: `config: Backend.Port 70000: must be 1..65535`},
		{name: "Port negative", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","Port":-1}}`, err: `config: Backend.Port -1: must be 1..65535`},
		{name: "Port wrong type", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":"8285"}}`, err: `config: Backend.Port: got JSON string, want integer`},
		{name: "VNI too large", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`, err: `config: Backend.VNI 16777216: must be 1..16777215`},
		{name: "VNI negative", in: `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":-3}}`, err: `config: Backend.VNI -3: must be 1..16777215`},

		// Malformed documents.
		{name: "truncated", in: `{"Network":`, err: `config: malformed JSON at line 1, column 11 (byte 11): unexpected end of JSON input`},
		{name: "syntax error on line 2", in: "{\"Network\":\"10.10.0.0/16\",\n  \"SubnetLen\": 24,,\n}", err: `config: malformed JSON at line 2, column 19 (byte 46) | invalid character ','`},
		{name: "empty", in: ``, err: `config: malformed JSON at line 1, column 1 (byte 0): unexpected end of JSON input`},
		{name: "not an object", in: `[1,2]`, err: `config: top level: got JSON array, want object (line 1, column 1)`},
		{name: "trailing garbage", in: `{"Network":"10.10.0.0/16"} x`, err: `config: malformed JSON at line 1 | invalid character 'x' after top-level value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Parse(%s): %v", tt.in, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Parse(%s)\n got %+v\nwant %+v", tt.in, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%s) = %+v, want error %q", tt.in, got, tt.err)
			}
			// " | " separates required substrings; otherwise the message must match exactly.
			if !strings.Contains(tt.err, " | ") {
				if err.Error() != tt.err {
					t.Fatalf("Parse(%s) error\n got %q\nwant %q", tt.in, err, tt.err)
				}
				return
			}
			for _, sub := range strings.Split(tt.err, " | ") {
				if !strings.Contains(err.Error(), sub) {
					t.Fatalf("Parse(%s) error %q does not contain %q", tt.in, err, sub)
				}
			}
		})
	}
}

func TestFieldErrorIsTyped(t *testing.T) {
	_, err := Parse([]byte(`{"Network":"10.10.0.0/16","SubnetLen":31}`))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "SubnetLen" || fe.Value != "31" {
		t.Fatalf("want *FieldError for SubnetLen 31, got %#v", err)
	}
}

func TestMarshal(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"Network":"10.10.0.0/16"}`,
			`{"Network":"10.10.0.0/16","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.255.0","Backend":{"Type":"udp","Port":8285}}`},
		{`{"Network":"10.10.0.0/16","MTU":1400,"Backend":{"Type":"vxlan","DirectRouting":true,"GBP":false}}`,
			`{"Network":"10.10.0.0/16","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.255.0","MTU":1400,"Backend":{"Type":"vxlan","Port":8472,"VNI":1,"DirectRouting":true,"GBP":false}}`},
		{`{"Network":"10.10.0.0/24","Backend":{"Type":"host-gw","Port":99,"VNI":3}}`,
			`{"Network":"10.10.0.0/24","SubnetLen":26,"SubnetMin":"10.10.0.64","SubnetMax":"10.10.0.192","Backend":{"Type":"host-gw"}}`},
	}
	for _, tt := range tests {
		c, err := Parse([]byte(tt.in))
		if err != nil {
			t.Fatalf("Parse(%s): %v", tt.in, err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if string(out) != tt.want {
			t.Errorf("Marshal(Parse(%s))\n got %s\nwant %s", tt.in, out, tt.want)
		}
		if !json.Valid(out) {
			t.Errorf("Marshal output is not valid JSON: %s", out)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v", err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("round trip\n got %+v\nwant %+v", back, c)
		}
	}
}

func TestBuiltInGo(t *testing.T) {
	// The lab builds configs in Go: SetDefaults then Validate must equal Parse.
	c := &Config{Network: netip.MustParsePrefix("10.10.0.0/16"), Backend: Backend{Type: BackendVXLAN}}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err := Parse([]byte(`{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, p) {
		t.Fatalf("got %+v want %+v", c, p)
	}
	if err := (&Config{}).Validate(); err == nil || err.Error() != "config: Network: required" {
		t.Fatalf("empty config: %v", err)
	}
}

func TestSubnetArithmetic(t *testing.T) {
	p := netip.MustParsePrefix
	c, err := Parse([]byte(`{"Network":"10.10.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.SubnetCount(); n != 255 {
		t.Fatalf("SubnetCount = %d, want 255", n)
	}
	for i, want := range map[int]string{0: "10.10.1.0/24", 1: "10.10.2.0/24", 254: "10.10.255.0/24"} {
		if got := c.NthSubnet(i); got != p(want) {
			t.Errorf("NthSubnet(%d) = %s, want %s", i, got, want)
		}
	}
	for _, i := range []int{-1, 255, 1 << 40} {
		if got := c.NthSubnet(i); got.IsValid() {
			t.Errorf("NthSubnet(%d) = %s, want zero", i, got)
		}
	}
	for i := range c.SubnetCount() {
		s := c.NthSubnet(i)
		if !c.Contains(s) {
			t.Fatalf("Contains(NthSubnet(%d)=%s) = false", i, s)
		}
		if j, ok := c.SubnetIndex(s); !ok || j != i {
			t.Fatalf("SubnetIndex(%s) = %d,%v, want %d", s, j, ok, i)
		}
	}
	for _, s := range []string{"10.10.0.0/24", "10.10.1.0/25", "10.10.1.0/23", "10.11.1.0/24", "10.10.1.128/24", "fd00::/24"} {
		pp, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		if c.Contains(pp) {
			t.Errorf("Contains(%s) = true", s)
		}
	}
	if c.Contains(netip.Prefix{}) {
		t.Error("Contains(zero) = true")
	}

	small, err := Parse([]byte(`{"Network":"10.10.0.0/28"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n := small.SubnetCount(); n != 3 {
		t.Fatalf("SubnetCount /28 = %d, want 3", n)
	}
	if got := small.NthSubnet(2); got != p("10.10.0.12/30") {
		t.Fatalf("NthSubnet(2) = %s", got)
	}

	// A whole-space network exercises the uint32 wrap-around.
	all, err := Parse([]byte(`{"Network":"0.0.0.0/0","SubnetLen":8}`))
	if err != nil {
		t.Fatal(err)
	}
	if all.SubnetMax != netip.MustParseAddr("255.0.0.0") || all.SubnetCount() != 255 {
		t.Fatalf("/0: SubnetMax %s count %d", all.SubnetMax, all.SubnetCount())
	}
	if got := all.NthSubnet(254); got != p("255.0.0.0/8") {
		t.Fatalf("/0 NthSubnet(254) = %s", got)
	}
}
