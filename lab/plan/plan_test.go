package plan

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/overlaylab/overlaylab/overlay/config"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"default", "a", "robust-teardown-7", "e2e1", "lab-01", strings.Repeat("a", 32)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, c := range []struct{ name, want string }{
		{"", "required"},
		{"..", "lower-case letters"},
		{".", "lower-case letters"},
		{"a/b", "lower-case letters"},
		{"A", "lower-case letters"},
		{"1lab", "starting with a letter"},
		{"lab_1", "lower-case letters"},
		{"lab-", "between two other characters"},
		{"a--b", "between two other characters"},
		{strings.Repeat("a", 33), "at most 32"},
		{"test-h1", `part "h1"`},
		{"x-ul", `part "ul"`},
		{"x-etcd2", `part "etcd2"`},
		{"x-c3-y", `part "c3"`},
	} {
		err := CheckName(c.name)
		var fe *FieldError
		if err == nil || !errors.As(err, &fe) || fe.Field != "name" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckName(%q) = %v, want a name error with %q", c.name, err, c.want)
		}
	}
}

// SafeStateDir is the only way a command reaches a lab's directory: no name
// may lead outside root, nor to root itself.
func TestSafeStateDir(t *testing.T) {
	root := "/run/overlaylab"
	for _, bad := range []string{"..", "", ".", "../x", "a/../..", "/etc"} {
		if d, err := SafeStateDir(root, bad); err == nil {
			t.Errorf("SafeStateDir(%q) = %q, want an error", bad, d)
		}
	}
	d, err := SafeStateDir(root, "lab-1")
	if err != nil || d != filepath.Join(root, "lab-1") {
		t.Errorf("SafeStateDir(lab-1) = %q, %v", d, err)
	}
}

func TestNames(t *testing.T) {
	n := Names{Lab: "robust-teardown-7"}
	for got, want := range map[string]string{
		n.UnderlayNS():               "ol-robust-teardown-7-ul",
		n.EtcdNS(1):                  "ol-robust-teardown-7-etcd",
		n.EtcdNS(3):                  "ol-robust-teardown-7-etcd3",
		n.HostNS(1000):               "ol-robust-teardown-7-h1000",
		n.ContainerNS(2, "", 5):      "ol-robust-teardown-7-h2-c5",
		n.ContainerNS(2, "red", 1):   "ol-robust-teardown-7-h2-red-c1",
		HostPort(1000):               "h1000",
		ContainerPort("blue", 250):   "blue-c250",
		ContainerPort("", 250):       "c250",
		EtcdPort(5):                  "etcd5",
		n.Container("red", 3):        "red-c3",
		n.Host(12):                   "h12",
		(Names{Lab: "a"}).Prefix():   "ol-a-",
		(Names{Lab: "a-b"}).Prefix(): "ol-a-b-",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// Interface names never carry the lab name: the longest fits the kernel.
	for _, s := range []string{HostPort(65000), EtcdPort(5), ContainerPort("abcdefgh", MaxContainers), UnderlayBridge, CNIBridge} {
		if len(s) > MaxIfName {
			t.Errorf("interface name %q is over %d characters", s, MaxIfName)
		}
	}
}

// A namespace belongs to exactly one lab, even when one lab's name starts
// with another's.
func TestOwnsAndLabOf(t *testing.T) {
	a, ab := Names{Lab: "a"}, Names{Lab: "a-b"}
	for _, c := range []struct {
		ns      string
		ownerA  bool
		ownerAB bool
		lab     string
	}{
		{"ol-a-ul", true, false, "a"},
		{"ol-a-h1", true, false, "a"},
		{"ol-a-h1-c2", true, false, "a"},
		{"ol-a-h1-red-c2", true, false, "a"},
		{"ol-a-etcd", true, false, "a"},
		{"ol-a-etcd3", true, false, "a"},
		{"ol-a-b-ul", false, true, "a-b"},
		{"ol-a-b-h2-c1", false, true, "a-b"},
		{"ol-a-b-h2-red-c1", false, true, "a-b"},
		{"ol-a-x", false, false, ""},
		{"ol-a-h0", false, false, ""},
		{"ol-a-h1-", false, false, ""},
		{"olx-a-ul", false, false, ""},
	} {
		if got := a.Owns(c.ns); got != c.ownerA {
			t.Errorf("lab a owns %s = %v", c.ns, got)
		}
		if got := ab.Owns(c.ns); got != c.ownerAB {
			t.Errorf("lab a-b owns %s = %v", c.ns, got)
		}
		lab, ok := LabOf(c.ns)
		if lab != c.lab || ok != (c.lab != "") {
			t.Errorf("LabOf(%s) = %q, %v; want %q", c.ns, lab, ok, c.lab)
		}
	}
}

func TestAddressing(t *testing.T) {
	a := Addressing{Underlay: netip.MustParsePrefix("192.168.77.0/24")}
	if got := a.Host(1).String(); got != "192.168.77.1" {
		t.Errorf("host 1 at %s", got)
	}
	// Member 1 keeps the address labs always had.
	if got := a.Etcd(1).String(); got != "192.168.77.250" {
		t.Errorf("etcd member 1 at %s", got)
	}
	if got := a.Etcd(5).String(); got != "192.168.77.254" {
		t.Errorf("etcd member 5 at %s", got)
	}
	if got := a.HostCapacity(); got != 248 || a.Host(got).String() != "192.168.77.248" {
		t.Errorf("capacity %d", got)
	}
	b := Addressing{Underlay: netip.MustParsePrefix("172.20.0.0/16")}
	if got := b.Host(1000).String(); got != "172.20.3.232" {
		t.Errorf("host 1000 at %s", got)
	}
	if got := b.Etcd(1).String(); got != "172.20.255.250" {
		t.Errorf("etcd member 1 at %s", got)
	}
	// No host address ever meets an etcd address.
	for k := 1; k <= EtcdSlots; k++ {
		if i := b.HostIndex(b.Etcd(k)); i != 0 {
			t.Errorf("etcd member %d's address is host %d's", k, i)
		}
	}
	if i := b.HostIndex(b.Host(777)); i != 777 {
		t.Errorf("HostIndex(host 777) = %d", i)
	}
	if i := b.HostIndex(netip.MustParseAddr("10.0.0.1")); i != 0 {
		t.Errorf("HostIndex outside the underlay = %d", i)
	}
}

func TestMACs(t *testing.T) {
	seen := map[string]string{}
	add := func(what string, kind byte, a, b int) {
		m := MAC(kind, a, b).String()
		if m[1] != '2' {
			t.Errorf("%s: %s is not locally administered", what, m)
		}
		if other, dup := seen[m]; dup {
			t.Errorf("%s and %s share MAC %s", what, other, m)
		}
		seen[m] = what
	}
	for i := 1; i <= 1000; i += 111 {
		add("host", MACHost, i, 0)
		add("port", MACPort, i, 0)
		for j := 1; j <= 250; j += 83 {
			add("container", MACContainer, i, j)
			add("container in network 1", MACContainer|1<<4, i, j)
		}
	}
	if MAC(MACHost, 7, 0).String() != MAC(MACHost, 7, 0).String() {
		t.Error("MAC is not a function of its arguments")
	}
}

func spec() Spec {
	nw, err := NewNetwork("", DefaultNetwork, 0, config.BackendUDP)
	if err != nil {
		panic(err)
	}
	return Spec{Name: "t", Hosts: 3, Containers: 2, Networks: []Network{nw}, Underlay: netip.MustParsePrefix(DefaultUnderlay)}
}

func TestSpecCheckDefaults(t *testing.T) {
	p, err := spec().Check()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := p.Networks[0].Config.Marshal()
	if got := string(js); got != `{"Network":"10.10.0.0/16","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.255.0","Backend":{"Type":"udp","Port":8285}}` {
		t.Errorf("config JSON %s", got)
	}
	if len(p.Backends) != 1 || !p.Backends[0].NeedsTUN || p.Backends[0].Port != 8285 {
		t.Errorf("backends %+v", p.Backends)
	}
}

func TestSpecCheckRejects(t *testing.T) {
	net := func(cidr string, subnetLen int, backend string) func(*Spec) {
		return func(s *Spec) {
			n, err := NewNetwork("", cidr, subnetLen, backend)
			if err != nil {
				panic(err)
			}
			s.Networks = []Network{n}
		}
	}
	cases := []struct {
		name  string
		mod   func(*Spec)
		field string
		want  string
	}{
		{"no hosts", func(s *Spec) { s.Hosts = 0 }, "hosts", "--hosts 0: need at least 1 host"},
		{"negative containers", func(s *Spec) { s.Containers = -1 }, "containers", "--containers -1: cannot be negative"},
		{"too many containers", func(s *Spec) { s.Containers = 251 }, "containers", "at most 250"},
		{"network too small for hosts", func(s *Spec) { net("10.10.0.0/28", 0, "udp")(s); s.Hosts = 5 }, "network", "holds 3 leasable subnets, fewer than --hosts 5"},
		{"containers do not fit the subnet", func(s *Spec) { net(DefaultNetwork, 29, "udp")(s); s.Containers = 6 }, "containers", "a /29 subnet holds only 5 containers"},
		{"bad name", func(s *Spec) { s.Name = "Lab_1" }, "name", "lower-case letters"},
		{"name with ..", func(s *Spec) { s.Name = ".." }, "name", "lower-case letters"},
		{"small underlay", func(s *Spec) { s.Underlay = netip.MustParsePrefix("192.168.77.0/29"); s.Hosts = 2 }, "underlay", "holds 0 hosts"},
		{"underlay below hosts", func(s *Spec) { s.Hosts = 249 }, "underlay", "holds 248 hosts"},
		{"overlap", func(s *Spec) { net("192.168.0.0/16", 0, "udp")(s) }, "network", "overlaps --underlay"},
		{"bad mtu", func(s *Spec) { s.UnderlayMTU = 100 }, "underlay-mtu", "--underlay-mtu 100"},
		{"even etcd members", func(s *Spec) { s.Etcd.Members = 2 }, "etcd-members", "1, 3 or 5"},
		{"members with an external etcd", func(s *Spec) { s.Etcd = Etcd{Members: 3, Endpoints: []string{"http://127.0.0.1:2379"}} }, "etcd-members", "embedded"},
		{"tls endpoint", func(s *Spec) { s.Etcd = Etcd{Endpoints: []string{"https://127.0.0.1:2379"}} }, "etcd-endpoints", "not proxied"},
		{"runtime", func(s *Spec) { s.Runtime = "docker" }, "runtime", "bridge or cni"},
		{"no network", func(s *Spec) { s.Networks = nil }, "network", "needs a network"},
	}
	for _, c := range cases {
		s := spec()
		c.mod(&s)
		_, err := s.Check()
		var fe *FieldError
		if err == nil || !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a --%s error with %q", c.name, err, c.field, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", c.name, err)
		}
	}
}

func TestNewNetworkRejects(t *testing.T) {
	for _, c := range []struct {
		cidr, backend string
		subnetLen     int
		field, want   string
	}{
		{"nope", "udp", 0, "network", "not an IPv4 CIDR"},
		{"10.10.0.0/30", "udp", 0, "network", "10.10.0.0/30"},
		{DefaultNetwork, "geneve", 0, "backend", `"geneve"`},
		{DefaultNetwork, "udp", 31, "subnet-len", "31"},
	} {
		_, err := NewNetwork("", c.cidr, c.subnetLen, c.backend)
		var fe *FieldError
		if err == nil || !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewNetwork(%s, %s, %d) = %v, want a --%s error with %q", c.cidr, c.backend, c.subnetLen, err, c.field, c.want)
		}
	}
}

func TestTenants(t *testing.T) {
	mk := func(name, cidr, backend string, vni, port int) Network {
		n, err := NewNetwork(name, cidr, 0, backend)
		if err != nil {
			t.Fatal(err)
		}
		if vni != 0 {
			n.Config.Backend.VNI = vni
		}
		if port != 0 {
			n.Config.Backend.Port = port
		}
		return n
	}
	good := spec()
	good.Networks = []Network{mk("red", DefaultNetwork, "vxlan", 1, 0), mk("blue", DefaultNetwork, "vxlan", 2, 0)}
	if _, err := good.Check(); err != nil {
		t.Fatalf("two vxlan tenants with the same CIDR and distinct VNIs: %v", err)
	}
	for _, c := range []struct {
		name string
		nets []Network
		want string
	}{
		{"same VNI", []Network{mk("red", DefaultNetwork, "vxlan", 1, 0), mk("blue", DefaultNetwork, "vxlan", 1, 0)}, "VNI 1, as network red"},
		{"same udp port", []Network{mk("red", DefaultNetwork, "udp", 0, 8285), mk("blue", DefaultNetwork, "udp", 0, 8285)}, "udp port 8285"},
		{"host-gw overlap", []Network{mk("red", DefaultNetwork, "host-gw", 0, 0), mk("blue", "10.10.128.0/17", "host-gw", 0, 0)}, "overlaps network red"},
		{"mixed backends", []Network{mk("red", DefaultNetwork, "vxlan", 1, 0), mk("blue", "10.20.0.0/16", "udp", 0, 0)}, "share a backend"},
		{"unnamed tenant", []Network{mk("", DefaultNetwork, "vxlan", 1, 0), mk("blue", "10.20.0.0/16", "vxlan", 2, 0)}, "1 to 8 characters"},
		{"bad tenant name", []Network{mk("Red", DefaultNetwork, "vxlan", 1, 0), mk("blue", "10.20.0.0/16", "vxlan", 2, 0)}, "lower-case"},
		{"tenant named like a host", []Network{mk("h1", DefaultNetwork, "vxlan", 1, 0), mk("blue", "10.20.0.0/16", "vxlan", 2, 0)}, "namespace suffix"},
		{"named twice", []Network{mk("red", DefaultNetwork, "vxlan", 1, 0), mk("red", "10.20.0.0/16", "vxlan", 2, 0)}, "named twice"},
	} {
		s := spec()
		s.Networks = c.nets
		if _, err := s.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	disjoint := spec()
	disjoint.Networks = []Network{mk("red", DefaultNetwork, "host-gw", 0, 0), mk("blue", "10.20.0.0/16", "host-gw", 0, 0)}
	if _, err := disjoint.Check(); err != nil {
		t.Errorf("disjoint host-gw tenants: %v", err)
	}
}

func TestPerHostOverrides(t *testing.T) {
	s := spec()
	s.Agent = Agent{Path: "/opt/flanneld"}
	s.AgentArgs = []string{"--ip-masq"}
	s.PerHost = []HostSpec{{Containers: 1}, {Containers: 0, Agent: Agent{Path: "/usr/bin/other", Args: []string{"-v=2"}}, AgentArgs: []string{}}}
	if n := s.ContainersOn(1); n != 1 {
		t.Errorf("h1 containers %d", n)
	}
	if n := s.ContainersOn(3); n != 2 {
		t.Errorf("h3 containers %d (the default)", n)
	}
	if a, args := s.AgentOn(1); a.Path != "/opt/flanneld" || len(args) != 1 {
		t.Errorf("h1 agent %+v %v", a, args)
	}
	if a, args := s.AgentOn(2); a.Path != "/usr/bin/other" || len(args) != 0 {
		t.Errorf("h2 agent %+v %v", a, args)
	}
}

func TestOurAgentOnlyFlag(t *testing.T) {
	if f := OurAgentOnlyFlag([]string{"--ip-masq", "--lease-ttl=10s"}); f != "--lease-ttl" {
		t.Errorf("got %q", f)
	}
	if f := OurAgentOnlyFlag([]string{"--ip-masq", "--iface=eth0", "--subnet-lease-renew-margin=5"}); f != "" {
		t.Errorf("flanneld flags flagged: %q", f)
	}
}

func TestParsers(t *testing.T) {
	for _, s := range []string{"TERM", "sigkill", "Int"} {
		if _, err := ParseSignal(s); err != nil {
			t.Errorf("ParseSignal(%q): %v", s, err)
		}
	}
	if _, err := ParseSignal("HUP"); err == nil {
		t.Error("ParseSignal(HUP) accepted")
	}
	if r, err := ParseRuntime(""); err != nil || r != RuntimeBridge {
		t.Errorf("default runtime %q %v", r, err)
	}
	if _, err := ParseRuntime("cni"); err != nil {
		t.Error(err)
	}
	if hp, err := EndpointHostPort("http://127.0.0.1:2379/"); err != nil || hp != "127.0.0.1:2379" {
		t.Errorf("EndpointHostPort = %q %v", hp, err)
	}
	for _, bad := range []string{"127.0.0.1:2379", "http://host", "http://host:0", "http://:2379"} {
		if _, err := EndpointHostPort(bad); err == nil {
			t.Errorf("EndpointHostPort(%q) accepted", bad)
		}
	}
}

func TestBackendTable(t *testing.T) {
	for _, c := range []struct {
		backend  string
		encap    bool
		tun      bool
		mac      WireMAC
		describe string
	}{
		{config.BackendUDP, true, true, WireMACNone, "encapsulated (udp port 8285)"},
		{config.BackendVXLAN, true, false, WireMACVtep, "encapsulated (vxlan port 8472, VNI 1)"},
		{config.BackendHostGW, false, false, WireMACHostEth0, "routed bare between the hosts"},
	} {
		n, err := NewNetwork("", DefaultNetwork, 0, c.backend)
		if err != nil {
			t.Fatal(err)
		}
		b, err := BackendOf(n.Config)
		if err != nil {
			t.Fatal(err)
		}
		if b.Encapsulated != c.encap || b.NeedsTUN != c.tun || b.WireMAC != c.mac || !strings.Contains(b.Describe, c.describe) {
			t.Errorf("%s: %+v", c.backend, b)
		}
	}
}

func TestDefaultNetworkFor(t *testing.T) {
	for _, c := range []struct {
		hosts int
		want  string
	}{{1, DefaultNetwork}, {255, DefaultNetwork}, {256, "10.10.0.0/15"}, {500, "10.10.0.0/15"}, {1000, "10.8.0.0/14"}, {5000, "10.0.0.0/11"}} {
		got := DefaultNetworkFor(c.hosts)
		if got != c.want {
			t.Errorf("DefaultNetworkFor(%d) = %s, want %s", c.hosts, got, c.want)
			continue
		}
		n, err := NewNetwork("", got, 0, "udp")
		if err != nil {
			t.Fatal(err)
		}
		if cnt := n.Config.SubnetCount(); cnt < c.hosts {
			t.Errorf("%s holds %d subnets, fewer than %d hosts", got, cnt, c.hosts)
		}
	}
}

func TestEndpointHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:2379": "127.0.0.1:2379", "http://etcd.example:2379/": "etcd.example:2379",
		"https://etcd.example:2379": "", "127.0.0.1:2379": "", "http://127.0.0.1": "", "http://:2379": "", "unix:///x": "",
		"http://u:p@h:1": "", "http://h:1/path": "", "http://h:0": "", "http://h:x": "", "ftp://h:1": "",
	} {
		got, err := EndpointHostPort(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("EndpointHostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
		var fe *FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "etcd-endpoints") {
			t.Errorf("EndpointHostPort(%q): %v is not an etcd-endpoints field error", in, err)
		}
	}
	if _, err := EndpointHostPort("https://e:2379"); err == nil || !strings.Contains(err.Error(), "TLS endpoints are not proxied") {
		t.Errorf("https: %v", err)
	}
}

// TestNumberTenant: the k-th tenant network gets flannel's default VNI or
// port plus k unless its author set one; host-gw has neither.
func TestNumberTenant(t *testing.T) {
	for _, c := range []struct {
		backend          string
		k                int
		vniSet, portSet  bool
		wantVNI, wantPrt int
	}{
		{config.BackendVXLAN, 2, false, false, 3, 8472},
		{config.BackendVXLAN, 2, true, false, 1, 8472},
		{config.BackendUDP, 1, false, false, 0, 8286},
		{config.BackendUDP, 1, false, true, 0, 8285},
		{config.BackendHostGW, 3, false, false, 0, 0},
	} {
		n, err := NewNetwork("red", "10.10.0.0/16", 24, c.backend)
		if err != nil {
			t.Fatal(err)
		}
		NumberTenant(n.Config, c.k, c.vniSet, c.portSet)
		if n.Config.Backend.VNI != c.wantVNI || n.Config.Backend.Port != c.wantPrt {
			t.Errorf("%s k=%d set=%v/%v: VNI %d port %d, want %d %d", c.backend, c.k, c.vniSet, c.portSet,
				n.Config.Backend.VNI, n.Config.Backend.Port, c.wantVNI, c.wantPrt)
		}
	}
}
