package scenarios

import (
	"errors"
	"io/fs"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

func load(t *testing.T, name string) *Scenario {
	t.Helper()
	s, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return s
}

func TestTestdataIsValid(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("testdata: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// The count form of hosts, the udp backend, and an after chain.
func TestResolveCountForm(t *testing.T) {
	s := load(t, "agent-restart-udp.yaml")
	if s.File != "testdata/agent-restart-udp.yaml" || s.Name != "agent-restart-udp" || s.Lab != "arudp" || s.Seed != 42 {
		t.Errorf("header: file %q name %q lab %q seed %d", s.File, s.Name, s.Lab, s.Seed)
	}
	if !strings.HasPrefix(s.Description, "Kill h2's agent") {
		t.Errorf("description %q", s.Description)
	}
	want := &config.Config{
		Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24,
		SubnetMin: netip.MustParseAddr("10.10.1.0"), SubnetMax: netip.MustParseAddr("10.10.255.0"),
		Backend: config.Backend{Type: "udp", Port: 8285},
	}
	if !reflect.DeepEqual(s.Network, want) || s.Backend != "udp" {
		t.Errorf("network %+v backend %q, want %+v", s.Network, s.Backend, want)
	}
	if s.Underlay != netip.MustParsePrefix(plan.DefaultUnderlay) || s.UnderlayMTU != 0 || s.EtcdEndpoints != nil {
		t.Errorf("underlay %v mtu %d etcd %v: want defaults", s.Underlay, s.UnderlayMTU, s.EtcdEndpoints)
	}
	wantHosts := []HostSpec{
		{Name: "h1", Containers: 2, AgentArgs: []string{"--ip-masq"}},
		{Name: "h2", Containers: 2, AgentArgs: []string{"--ip-masq"}},
		{Name: "h3", Containers: 2, AgentArgs: []string{"--ip-masq"}},
	}
	if !reflect.DeepEqual(s.Hosts, wantHosts) || s.MaxHosts != 3 {
		t.Errorf("hosts %+v (max %d), want %+v", s.Hosts, s.MaxHosts, wantHosts)
	}
	wantSteps := []Step{
		{Name: "kill-h2", Pos: Pos{"testdata/agent-restart-udp.yaml", 19, 5}, At: 2 * time.Second, Action: ActionAgentKill, Host: "h2", Signal: "KILL"},
		{Name: "start-h2", Pos: Pos{"testdata/agent-restart-udp.yaml", 24, 5}, After: "kill-h2", Delay: time.Second, Action: ActionAgentStart, Host: "h2"},
	}
	if !reflect.DeepEqual(s.Steps, wantSteps) {
		t.Errorf("steps:\n got  %+v\n want %+v", s.Steps, wantSteps)
	}
	if s.Step("start-h2") != &s.Steps[1] || s.Step("nope") != nil {
		t.Errorf("Step lookup")
	}

	if len(s.Expects) != 5 {
		t.Fatalf("%d expectations, want 5", len(s.Expects))
	}
	all := Selector{"*", "*"}
	e := s.Expects[0]
	if e.Name != "mesh-at-ready" || e.Kind != KindPing || e.When != (When{Kind: WhenAt}) || e.Within != DefaultWithin ||
		*e.Ping != (PingCheck{From: all, To: all, Result: ResultAll}) || e.Pos.Line != 30 {
		t.Errorf("expect 0: %+v %+v", e, e.Ping)
	}
	e = s.Expects[1]
	if e.Kind != KindEncap || e.When != (When{Kind: WhenDuring, From: Mark{}, To: Mark{Offset: 2 * time.Second}}) || e.Within != 0 ||
		*e.Encap != (EncapCheck{Host: "h1", Backend: "udp", Port: 8285}) {
		t.Errorf("expect 1: %+v %+v", e, e.Encap)
	}
	e = s.Expects[2]
	if e.Kind != KindLease || e.When != (When{Kind: WhenAfter, Step: "start-h2"}) || *e.Lease != (LeaseCheck{Host: "h2", State: LeaseUnchanged}) {
		t.Errorf("expect 2: %+v %+v", e, e.Lease)
	}
	e = s.Expects[3]
	if e.Within != 15*time.Second || e.Ping.Result != ResultAll {
		t.Errorf("expect 3: %+v %+v", e, e.Ping)
	}
	e = s.Expects[4]
	if e.Kind != KindAgent || e.When.Kind != WhenFinal || e.Agent.Host != "h2" || e.Agent.ExitCode != nil ||
		e.Agent.Log == nil || !e.Agent.Log.MatchString("renewed the lease") {
		t.Errorf("expect 4: %+v %+v", e, e.Agent)
	}
	if s.Artifacts != (Artifacts{Pcap: PcapAlways, Dumps: false}) {
		t.Errorf("artifacts %+v", s.Artifacts)
	}
}

// The sequence form of hosts, a vxlan mapping backend, host-add/remove and
// the play order of at and after steps.
func TestResolveListForm(t *testing.T) {
	s := load(t, "vxlan-churn.yaml")
	if s.Backend != "vxlan" || !reflect.DeepEqual(s.Network.Backend, config.Backend{Type: "vxlan", Port: 4789, VNI: 4}) || s.Network.SubnetLen != 24 {
		t.Errorf("network %+v", s.Network)
	}
	if s.Underlay != netip.MustParsePrefix("192.168.90.0/24") || s.UnderlayMTU != 1500 {
		t.Errorf("underlay %v mtu %d", s.Underlay, s.UnderlayMTU)
	}
	wantHosts := []HostSpec{
		{Name: "h1", Containers: 2, Link: LinkSpec{RateBps: 100_000_000, LossPercent: 5}},
		{Name: "h2", Containers: 1, AgentArgs: []string{"--subnet-lease-renew-margin", "30"}},
	}
	if !reflect.DeepEqual(s.Hosts, wantHosts) || s.MaxHosts != 4 {
		t.Errorf("hosts %+v (max %d), want %+v", s.Hosts, s.MaxHosts, wantHosts)
	}
	var order []string
	for _, st := range s.Steps {
		order = append(order, st.Name+"="+st.Host)
	}
	// add-h3 1s, add-h4 after it (1s, depth 1), slow-h3 1.5s, lossy-h4 4s, remove-h3 5s
	if got, want := strings.Join(order, " "), "add-h3=h3 add-h4=h4 slow-h3=h3 lossy-h4=h4 remove-h3=h3"; got != want {
		t.Errorf("order %s, want %s", got, want)
	}
	add3, add4 := s.Step("add-h3"), s.Step("add-h4")
	// list form: a new host copies the last listed host
	if add3.Containers != 1 || !reflect.DeepEqual(add3.AgentArgs, []string{"--subnet-lease-renew-margin", "30"}) {
		t.Errorf("add-h3 %+v", add3)
	}
	if add4.Containers != 3 || add4.After != "add-h3" {
		t.Errorf("add-h4 %+v", add4)
	}
	if st := s.Step("slow-h3"); st.RateBps != 10_000_000 || st.Delay != 500*time.Millisecond {
		t.Errorf("slow-h3 %+v", st)
	}
	if st := s.Step("lossy-h4"); st.Percent != 20 || st.At != 4*time.Second {
		t.Errorf("lossy-h4 %+v", st)
	}
	r := s.Expects[0].Route
	if *r != (RouteCheck{Host: "h1", Peer: "h4", Present: true}) || s.Expects[0].Within != 5*time.Second {
		t.Errorf("route-to-h4 %+v", r)
	}
	if r := s.Expects[1].Route; *r != (RouteCheck{Host: "h1", Peer: "h3", Present: false}) {
		t.Errorf("route-h3-gone %+v", r)
	}
	e := s.Expects[2]
	if *e.Ping != (PingCheck{From: Selector{"h1", "c1"}, To: Selector{"h4", "*"}, Result: ResultLoss, MaxLoss: 30}) ||
		e.When != (When{Kind: WhenDuring, From: Mark{Step: "lossy-h4"}, To: Mark{Offset: 8 * time.Second}}) {
		t.Errorf("h4-reachable %+v %+v", e, e.Ping)
	}
	if c := s.Expects[3].Encap; *c != (EncapCheck{Host: "h1", Backend: "vxlan", Port: 4789, VNI: 4}) {
		t.Errorf("wire %+v", c)
	}
	if s.Artifacts != (Artifacts{Pcap: PcapFailing, Dumps: true}) {
		t.Errorf("artifacts %+v, want the defaults", s.Artifacts)
	}
}

func TestResolveEtcdFaults(t *testing.T) {
	s := load(t, "etcd-outage.yaml")
	if s.Backend != "host-gw" || s.Network.Backend.Port != 0 {
		t.Errorf("backend %+v", s.Network.Backend)
	}
	var order []string
	for _, st := range s.Steps {
		order = append(order, string(st.Action))
	}
	if got, want := strings.Join(order, " "), "etcd-stop etcd-start etcd-partition etcd-heal lease-delete config-set"; got != want {
		t.Errorf("order %s, want %s", got, want)
	}
	if got := s.Step("garbage-config").Config; got != `{"Network": "not a network"` {
		t.Errorf("config %q: must be kept verbatim", got)
	}
	e := s.Expects[2]
	if e.Within != 0 || e.Route.Dst != netip.MustParsePrefix("10.30.0.0/16") || e.Route.Present || e.When.At != 1500*time.Millisecond {
		t.Errorf("h2-route %+v %+v", e, e.Route)
	}
	if code := s.Expects[3].Agent.ExitCode; code == nil || *code != 0 {
		t.Errorf("agents-alive exit code %v", code)
	}
	if w := s.Expects[0].When; w.From.Step != "stop" || w.To.Step != "start" {
		t.Errorf("datapath-survives window %+v", w)
	}
}

// A minimal file gets every default, and an external etcd is carried.
func TestDefaults(t *testing.T) {
	s, err := Parse("min.yaml", []byte("apiVersion: overlaylab/v1\nname: min\netcd:\n  endpoints: [http://127.0.0.1:2379]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Lab != "min" || s.Network.Network.String() != plan.DefaultNetwork || s.Backend != "udp" || s.Network.Backend.Port != 8285 ||
		len(s.Hosts) != plan.DefaultHosts || s.Hosts[2].Containers != plan.DefaultContainers || len(s.Steps) != 0 || len(s.Expects) != 0 {
		t.Errorf("defaults: %+v", s)
	}
	if !reflect.DeepEqual(s.EtcdEndpoints, []string{"http://127.0.0.1:2379"}) {
		t.Errorf("endpoints %v", s.EtcdEndpoints)
	}
}

// Step order: nominal start, then chain depth, then file position (late and
// d both start at 3s nominally; late has no chain).
func TestStepOrder(t *testing.T) {
	src := doc(`
apiVersion: overlaylab/v1
name: order
timeline:
  - {name: c, after: a, action: etcd-start}
  - {name: late, at: 3s, action: etcd-stop}
  - {name: a, at: 1s, action: etcd-stop}
  - {name: b, at: 1s, action: etcd-stop}
  - {name: d, after: c, delay: 2s, action: etcd-start}
  - {name: first, at: 0s, action: etcd-stop}
  - {name: e, after: d, action: etcd-start}
`)
	s, err := Parse("o.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range s.Steps {
		got = append(got, st.Name)
	}
	if want := "first a b c late d e"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// Decode keeps positions and reports what it could read even with errors.
func TestDecodePositions(t *testing.T) {
	raw, err := Decode("d.yaml", []byte("apiVersion: overlaylab/v1\nname: d\nbogus: 1\nhosts:\n  - containers: 4\n    link: {loss: 3%}\n"))
	if err == nil || err.Error() != `d.yaml:3:1: unknown field "bogus" in scenario (allowed: apiVersion, name, lab, seed, description, network, networks, underlay, etcd, hosts, timeline, expect, artifacts, runtime)` {
		t.Errorf("err %v", err)
	}
	if raw.Name.Value != "d" || raw.Name.Pos != (Pos{"d.yaml", 2, 7}) {
		t.Errorf("name %+v", raw.Name)
	}
	h := raw.Hosts
	if !h.Listed || len(h.List) != 1 || h.List[0].Containers.Value != 4 || h.List[0].Containers.Pos != (Pos{"d.yaml", 5, 17}) ||
		h.List[0].Link.Loss != (String{"3%", Pos{"d.yaml", 6, 18}}) {
		t.Errorf("hosts %+v", h)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err %v, want a not-exist error", err)
	}
}

// A host-add starts the agent the other hosts run: the hosts mapping's, or
// in the sequence form the last listed host's (a path relative to the file).
func TestHostAddRunsTheLabsAgent(t *testing.T) {
	for _, c := range []struct{ name, hosts, want string }{
		{"mapping", "hosts: {count: 2, agent: bin/flanneld}", "/lab/bin/flanneld"},
		{"sequence", "hosts:\n  - {}\n  - {agent: {binary: /opt/flanneld}}", "/opt/flanneld"},
		{"ours", "hosts: {count: 2}", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "apiVersion: overlaylab/v1\nname: t\n" + c.hosts + "\ntimeline:\n  - {name: join, at: 1s, action: host-add}\n"
			s, err := Parse("/lab/s.yaml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			var got *Step
			for i := range s.Steps {
				if s.Steps[i].Action == ActionHostAdd {
					got = &s.Steps[i]
				}
			}
			if got == nil || got.Agent.Path != c.want {
				t.Fatalf("host-add's agent: %+v, want %q", got, c.want)
			}
		})
	}
}

// TestTCPWithin: within written inside tcp, as issue 13 spells the check, is
// the expectation's within.
func TestTCPWithin(t *testing.T) {
	doc := "apiVersion: overlaylab/v1\nname: t\nexpect:\n  - {name: e1, tcp: {from: h1/c1, to: h2/c1, port: 80, result: refused, within: 3s}, at: 1s}\n"
	s, err := Parse("s.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if e := s.Expects[0]; e.Within != 3*time.Second || e.TCP.Result != "refused" {
		t.Fatalf("within %v, result %q; want 3s and refused", e.Within, e.TCP.Result)
	}
}
