package subnet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

const fuzzSubnetsPrefix = DefaultPrefix + "/subnets/"

// FuzzLeaseJSON feeds arbitrary lease values through kvToLease, the decoder
// the registry uses for every key it lists or watches. Whatever it accepts
// must re-encode to flannel's format and decode back to the same attributes.
func FuzzLeaseJSON(f *testing.F) {
	for _, s := range []string{
		`{"PublicIP":"192.168.77.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}`,
		`{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"7e:11:22:33:44:55"}}`,
		`{"PublicIP":"192.168.77.3","BackendType":"host-gw"}`,
		`{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{ "VNI" : 1 , "x":[1, 2.5e3, "<&>"] }}`,
		`{"publicip":"10.0.0.1","backendtype":"udp","PUBLICIP":"10.0.0.2"}`,
		`{"PublicIP":"fe80::1%eth0","BackendData":"just a string"}`,
		`{}`,
		`{"PublicIP":""}`,
		// Bad ones.
		``,
		`null`,
		`{"PublicIP":"192.168.77.300"}`,
		`{"PublicIP":192}`,
		`{"PublicIPv6":"1.2.3.4.5"}`,
		`{"BackendData":}`,
		`{"BackendType":"udp"`,
		`["PublicIP"]`,
		"{\"BackendType\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		kv := &mvccpb.KeyValue{Key: []byte(fuzzSubnetsPrefix + "10.10.3.0-24"), Value: value, Lease: 7, ModRevision: 9}
		l, err := kvToLease(fuzzSubnetsPrefix, kv)
		if err != nil {
			if !strings.Contains(err.Error(), "10.10.3.0-24") {
				t.Fatalf("error %q does not name the key", err)
			}
			return
		}
		if l.Subnet != netip.MustParsePrefix("10.10.3.0/24") || l.EtcdLease != 7 || l.Revision != 9 {
			t.Fatalf("key metadata lost: %+v", l)
		}
		if string(l.Attrs.BackendData) == "null" {
			t.Fatalf("BackendData null decoded as %q, want nil", l.Attrs.BackendData)
		}

		enc, err := json.Marshal(l.Attrs)
		if err != nil {
			t.Fatalf("re-encode %+v: %v\nvalue: %q", l.Attrs, err, value)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(enc, &keys); err != nil || len(keys) != 4 {
			t.Fatalf("re-encoded value %s is not flannel's 4-key object (%v)", enc, err)
		}
		kv2 := &mvccpb.KeyValue{Key: kv.Key, Value: enc}
		l2, err := kvToLease(fuzzSubnetsPrefix, kv2)
		if err != nil {
			t.Fatalf("decode of re-encoded %s: %v\nvalue: %q", enc, err, value)
		}
		if !sameLeaseAttrs(l.Attrs, l2.Attrs) {
			t.Fatalf("round trip changed the attrs\nvalue: %q\nfirst:  %+v\nencoded: %s\nsecond: %+v", value, l.Attrs, enc, l2.Attrs)
		}
		// After one round the encoding is a fixed point, byte for byte.
		enc2, err := json.Marshal(l2.Attrs)
		if err != nil || string(enc2) != string(enc) {
			t.Fatalf("encoding not stable: %s then %s (%v)", enc, enc2, err)
		}
	})
}

// sameLeaseAttrs compares attrs; BackendData by JSON value, since encoding
// compacts and escapes it.
func sameLeaseAttrs(a, b LeaseAttrs) bool {
	if a.PublicIP != b.PublicIP || a.BackendType != b.BackendType {
		return false
	}
	if (a.PublicIPv6 == nil) != (b.PublicIPv6 == nil) || a.PublicIPv6 != nil && *a.PublicIPv6 != *b.PublicIPv6 {
		return false
	}
	if (len(a.BackendData) == 0) != (len(b.BackendData) == 0) {
		return false
	}
	if len(a.BackendData) == 0 {
		return true
	}
	var va, vb any
	if json.Unmarshal(a.BackendData, &va) != nil || json.Unmarshal(b.BackendData, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// FuzzParseSubnetKey: only canonical keys parse, and they round-trip.
func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{
		"10.10.3.0-24", "10.10.0.0-16", "0.0.0.0-0", "255.255.255.255-32", "fd00::-64", "::ffff:10.1.2.0-120",
		"", "-", "10.10.3.0", "10.10.3.0-", "-24", "10.10.3.1-24", "10.10.3.0-024", "10.10.3.0-+24",
		"10.10.3.0-33", "10.10.3.0--1", "010.10.3.0-24", "10.10.3.0/24", "fe80::%eth0-64", "FD00::-64",
		"10.10.3.0-24-24", "10.10.3.0-2147483648", "10.10.3.0- 24", " 10.10.3.0-24",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubnetKey(s)
		if err != nil {
			if p.IsValid() {
				t.Fatalf("ParseSubnetKey(%q) returned %s with error %v", s, p, err)
			}
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" {
			t.Fatalf("ParseSubnetKey(%q) = %s: not a valid masked prefix", s, p)
		}
		if k := SubnetKey(p); k != s {
			t.Fatalf("ParseSubnetKey(%q) = %s, whose key is %q", s, p, k)
		}
		if p2, err := ParseSubnetKey(SubnetKey(p)); err != nil || p2 != p {
			t.Fatalf("ParseSubnetKey(SubnetKey(%s)) = %s, %v", p, p2, err)
		}
		// The key is the prefix with '-' for '/' (flannel's spelling).
		if want := strings.Replace(p.String(), "/", "-", 1); want != s {
			t.Fatalf("key %q differs from prefix %s spelled flannel's way %q", s, p, want)
		}
	})
}
