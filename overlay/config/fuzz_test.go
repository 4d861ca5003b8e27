package config

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// FuzzParse checks that whatever Parse accepts is a valid, self-consistent
// config that survives Marshal→Parse unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		// Good ones.
		`{"Network":"10.10.0.0/16"}`,
		`{"Network":"10.10.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`,
		`{"Network":"10.10.0.0/16","SubnetLen":26,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.2.192","MTU":1400,"Backend":{"Type":"vxlan","VNI":42,"Port":4789,"DirectRouting":true}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
		`{"network":"172.16.0.0/28","backend":{"type":"vxlan","gbp":{"x":[1,2,{"y":null}]}}}`,
		`{"Network":"0.0.0.0/0","SubnetLen":30}`,
		`{"Network":"192.168.0.0/24","EnableIPv6":true,"IPv6Network":"fd00::/48"}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan","VNI":16777215,"Port":65535}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"udp","Type":"vxlan","type":"host-gw"}}`,
		`{"Network":"10.0.0.0/8","Backend":{"Type":"udp","<tag>":"&","":0}}`,
		// Bad ones.
		``,
		`{"Network":`,
		`null`,
		`[]`,
		`{"Network":null}`,
		`{"Network":"10.10.0.1/16"}`,
		`{"Network":"10.10.0.0/29"}`,
		`{"Network":"fd00::/48"}`,
		`{"Network":"::ffff:10.0.0.0/104"}`,
		`{"Network":"10.10.0.0/16","SubnetLen":31}`,
		`{"Network":"10.10.0.0/16","SubnetLen":-1}`,
		`{"Network":"10.10.0.0/16","SubnetMin":"10.10.5.0","SubnetMax":"10.10.4.0"}`,
		`{"Network":"10.10.0.0/16","SubnetMin":"10.10.5.1"}`,
		`{"Network":"10.10.0.0/16","SubnetMin":"::ffff:10.10.5.0"}`,
		`{"Network":"10.10.0.0/16","MTU":67}`,
		`{"Network":"10.10.0.0/16","MTU":1e3}`,
		`{"Network":"10.10.0.0/16","Backend":{"Type":"wireguard"}}`,
		`{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}`,
		`{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":"8285"}}`,
		`{"Network":"10.10.0.0/16","Backend":[]}`,
		`{"Network":"10.10.0.0/16","Backend":{"Type":"udp"}} trailing`,
		"{\"Network\":\"10.10.0.0/16\",\n\"SubnetLen\":\n}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned both a config and error %v", err)
			}
			if err.Error() == "" {
				t.Fatal("Parse returned an empty error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v\ninput: %q", err, data)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v\ninput: %q", err, data)
		}
		if !json.Valid(out) {
			t.Fatalf("Marshal wrote invalid JSON %q", out)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()) = %v\ninput: %q\nmarshalled: %s", err, data, out)
		}
		if !sameConfig(c, c2) {
			t.Fatalf("round trip changed the config\ninput: %q\nfirst:  %+v\nsecond: %+v\nmarshalled: %s", data, c, c2, out)
		}
		// Marshal is deterministic and a fixed point after one round.
		if out2, err := c2.Marshal(); err != nil || string(out2) != string(out) {
			t.Fatalf("Marshal not stable: %s vs %s (%v)", out, out2, err)
		}

		n := c.SubnetCount()
		if n < 1 {
			t.Fatalf("valid config with SubnetCount %d: %+v", n, c)
		}
		first := c.NthSubnet(0)
		if want := netip.PrefixFrom(c.SubnetMin, c.SubnetLen); first != want {
			t.Fatalf("NthSubnet(0) = %s, want SubnetMin %s", first, want)
		}
		last := c.NthSubnet(n - 1)
		if last.Addr() != c.SubnetMax {
			t.Fatalf("NthSubnet(%d) = %s, want SubnetMax %s", n-1, last, c.SubnetMax)
		}
		if c.NthSubnet(n).IsValid() || c.NthSubnet(-1).IsValid() {
			t.Fatalf("NthSubnet outside 0..%d returned a prefix", n-1)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			p := c.NthSubnet(i)
			if !c.Contains(p) || !c.Network.Contains(p.Addr()) || p.Masked() != p {
				t.Fatalf("NthSubnet(%d) = %s is not a leasable subnet of %s", i, p, c.Network)
			}
			if j, ok := c.SubnetIndex(p); !ok || j != i {
				t.Fatalf("SubnetIndex(NthSubnet(%d)) = %d, %v", i, j, ok)
			}
		}
	})
}

// sameConfig compares every field that matters, Extra by JSON value.
func sameConfig(a, b *Config) bool {
	if a.Network != b.Network || a.SubnetLen != b.SubnetLen || a.SubnetMin != b.SubnetMin ||
		a.SubnetMax != b.SubnetMax || a.MTU != b.MTU || a.Backend.Type != b.Backend.Type ||
		a.Backend.Port != b.Backend.Port || a.Backend.VNI != b.Backend.VNI ||
		len(a.Backend.Extra) != len(b.Backend.Extra) {
		return false
	}
	for k, va := range a.Backend.Extra {
		vb, ok := b.Backend.Extra[k]
		if !ok || !sameJSON(va, vb) {
			return false
		}
	}
	return true
}

func sameJSON(x, y []byte) bool {
	var vx, vy any
	if json.Unmarshal(x, &vx) != nil || json.Unmarshal(y, &vy) != nil {
		return false
	}
	bx, _ := json.Marshal(vx)
	by, _ := json.Marshal(vy)
	return string(bx) == string(by)
}
