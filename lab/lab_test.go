package lab

import (
	"strings"
	"testing"
)

func spec() Spec {
	return Spec{Name: "t", Hosts: 3, Containers: 2, Backend: "udp", Network: DefaultNetwork, Underlay: DefaultUnderlay, StateRoot: "/tmp/x"}
}

func TestSpecCheckDefaults(t *testing.T) {
	p, err := spec().Check()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.cfgJSON); got != `{"Network":"10.10.0.0/16","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.255.0","Backend":{"Type":"udp","Port":8285}}` {
		t.Errorf("config JSON %s", got)
	}
	if p.etcdIP.String() != "192.168.77.250" {
		t.Errorf("etcd IP %s", p.etcdIP)
	}
}

func TestSpecCheckRejects(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"no hosts", func(s *Spec) { s.Hosts = 0 }, "--hosts 0: need at least 1 host"},
		{"negative containers", func(s *Spec) { s.Containers = -1 }, "--containers -1: cannot be negative"},
		{"too many containers", func(s *Spec) { s.Containers = 251 }, "at most 250"},
		{"network /30", func(s *Spec) { s.Network = "10.10.0.0/30" }, `Network "10.10.0.0/30"`},
		{"network too small for hosts", func(s *Spec) { s.Network = "10.10.0.0/28"; s.Hosts = 5 }, "holds 3 leasable subnets, fewer than --hosts 5"},
		{"containers do not fit the subnet", func(s *Spec) { s.SubnetLen = 29; s.Containers = 6 }, "a /29 subnet holds only 5 containers"},
		{"unknown backend", func(s *Spec) { s.Backend = "geneve" }, `Backend.Type "geneve"`},
		{"long name", func(s *Spec) { s.Name = "abcdefgh" }, `interface name "ol-abcdefgh-etcd" is 16 characters; the kernel allows 15`},
		{"bad name", func(s *Spec) { s.Name = "Lab_1" }, "lower-case letters and digits"},
		{"bad underlay", func(s *Spec) { s.Underlay = "nope" }, `--underlay "nope": not an IPv4 CIDR`},
		{"small underlay", func(s *Spec) { s.Underlay = "192.168.77.0/25" }, "need a /24 or larger"},
		{"overlap", func(s *Spec) { s.Network = "192.168.0.0/16" }, "overlaps --underlay"},
		{"bad mtu", func(s *Spec) { s.UnderlayMTU = 100 }, "--underlay-mtu 100"},
	}
	for _, c := range cases {
		s := spec()
		c.mod(&s)
		_, err := s.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", c.name, err)
		}
	}
}

func TestMatrixString(t *testing.T) {
	m := &Matrix{
		Endpoints: []Endpoint{{Name: "h1/c1"}, {Name: "h2/c1"}},
		Expected:  [][]bool{{false, true}, {true, false}},
		Actual:    [][]bool{{false, true}, {false, false}},
		Probed:    [][]bool{{false, true}, {true, false}},
	}
	if m.OK() || m.Failures() != 1 {
		t.Fatalf("OK=%v failures=%d", m.OK(), m.Failures())
	}
	s := m.String()
	if !strings.Contains(s, "FAIL") || !strings.Contains(s, "ok") {
		t.Errorf("matrix rendering:\n%s", s)
	}
}
