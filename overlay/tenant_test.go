package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// TestValidateNetworks: --networks, its names and the flags that go with
// it are checked before anything starts, each mistake naming the flag.
func TestValidateNetworks(t *testing.T) {
	multi := func(o *Options) {
		o.Networks, o.SubnetDir, o.SubnetFile = []string{"red", "blue"}, "/run/flannel/networks", ""
	}
	checkValidate(t, []validateCase{
		{"two networks", multi, ""},
		{"eight characters, digits", func(o *Options) { multi(o); o.Networks = []string{"abcdefg1", "b2"} }, ""},
		{"one network", func(o *Options) { multi(o); o.Networks = []string{"red"} }, ""},
		{"upper case", func(o *Options) { multi(o); o.Networks = []string{"Red"} }, `network name "Red": want 1 to 8 of a-z and 0-9, starting with a letter`},
		{"digit first", func(o *Options) { multi(o); o.Networks = []string{"1red"} }, `--networks: network name "1red"`},
		{"nine characters", func(o *Options) { multi(o); o.Networks = []string{"abcdefghi"} }, `network name "abcdefghi"`},
		{"dash", func(o *Options) { multi(o); o.Networks = []string{"re-d"} }, `network name "re-d"`},
		{"empty name", func(o *Options) { multi(o); o.Networks = []string{"red", ""} }, `network name ""`},
		{"twice", func(o *Options) { multi(o); o.Networks = []string{"red", "blue", "red"} }, `--networks: network "red" listed twice`},
		{"with subnet file", func(o *Options) { multi(o); o.SubnetFile = "/run/flannel/subnet.env" }, "--networks and --subnet-file"},
		{"without subnet dir", func(o *Options) { multi(o); o.SubnetDir = "" }, "--networks needs --subnet-dir"},
		{"subnet dir alone", func(o *Options) { o.SubnetDir = "/tmp/x" }, "--subnet-dir \"/tmp/x\": only with --networks"},
		{"ip-masq", func(o *Options) { multi(o); o.IPMasq = true }, "--ip-masq with --networks is refused"},
		{"too many", func(o *Options) {
			multi(o)
			o.Networks = nil
			for i := range MaxNetworks + 1 {
				o.Networks = append(o.Networks, fmt.Sprintf("n%d", i))
			}
		}, "at most 64"},
	})
}

// TestNewNetworks: New leaves --subnet-file empty with --networks (flanneld's
// default would clash) and gives each network its etcd prefix, env file,
// table and zone.
func TestNewNetworks(t *testing.T) {
	a, err := New(Options{EtcdEndpoints: []string{"x"}, EtcdPrefix: "/coreos.com/network/", Networks: []string{"red", "blue"}, SubnetDir: "/run/nets"})
	if err != nil {
		t.Fatal(err)
	}
	if a.opts.SubnetFile != "" {
		t.Errorf("SubnetFile = %q with --networks, want none", a.opts.SubnetFile)
	}
	type view struct {
		name, prefix, env string
		table             int
		zone              uint16
	}
	var got []view
	for _, n := range a.nets {
		got = append(got, view{n.name, n.prefix, n.envPath, n.tenant.table, n.tenant.zone})
	}
	want := []view{
		{"red", "/coreos.com/network/red", "/run/nets/red.env", 1001, 1001},
		{"blue", "/coreos.com/network/blue", "/run/nets/blue.env", 1002, 1002},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("networks = %+v, want %+v", got, want)
	}
	single, err := New(Options{EtcdEndpoints: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(single.nets) != 1 || single.nets[0].name != "" || single.nets[0].tenant != nil ||
		single.nets[0].prefix != "/coreos.com/network" || single.nets[0].envPath != DefaultSubnetFile {
		t.Errorf("single network = %+v, want flanneld's prefix and subnet file, no tenant", single.nets[0])
	}
}

// TestAssignTenants: tables and zones follow the order of --networks from
// 1001; the same list gives the same numbers, and appending a network keeps
// the others'.
func TestAssignTenants(t *testing.T) {
	got := assignTenants([]string{"red", "blue", "green"})
	want := []tenant{{"red", 1001, 1001}, {"blue", 1002, 1002}, {"green", 1003, 1003}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("assignTenants = %+v, want %+v", got, want)
	}
	if again := assignTenants([]string{"red", "blue", "green"}); !reflect.DeepEqual(again, got) {
		t.Errorf("same list, other numbers: %+v", again)
	}
	if more := assignTenants([]string{"red", "blue", "green", "pink"}); !reflect.DeepEqual(more[:3], got) || more[3].table != 1004 {
		t.Errorf("appending pink changed the others: %+v", more)
	}
	for _, x := range got {
		if x.table >= 253 && x.table <= 255 {
			t.Errorf("%s got a reserved table %d", x.name, x.table)
		}
	}
}

func mustConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func named(t *testing.T, name, js string) namedConfig {
	return namedConfig{name: name, key: "/coreos.com/network/" + name + "/config", cfg: mustConfig(t, js)}
}

// TestCheckNetworks: what one agent cannot serve together is refused,
// naming both networks (and, for a field, both keys).
func TestCheckNetworks(t *testing.T) {
	vx := func(name, cidr, vni string) namedConfig {
		return named(t, name, `{"Network":"`+cidr+`","Backend":{"Type":"vxlan","VNI":`+vni+`}}`)
	}
	udp := func(name, cidr, port string) namedConfig {
		return named(t, name, `{"Network":"`+cidr+`","Backend":{"Type":"udp","Port":`+port+`}}`)
	}
	hgw := func(name, cidr string) namedConfig {
		return named(t, name, `{"Network":"`+cidr+`","Backend":{"Type":"host-gw"}}`)
	}
	for _, tc := range []struct {
		name string
		ncs  []namedConfig
		want []string // nil = accepted
	}{
		{"vxlan same CIDR own VNIs", []namedConfig{vx("red", "10.10.0.0/16", "1"), vx("blue", "10.10.0.0/16", "2")}, nil},
		{"vxlan one VNI", []namedConfig{vx("red", "10.10.0.0/16", "1"), vx("blue", "10.20.0.0/16", "1")},
			[]string{"networks red and blue both use VNI 1 (Backend.VNI in /coreos.com/network/red/config and /coreos.com/network/blue/config): each network needs its own VNI"}},
		{"udp same CIDR own ports", []namedConfig{udp("red", "10.10.0.0/16", "8285"), udp("blue", "10.10.0.0/16", "8286")}, nil},
		{"udp one port", []namedConfig{udp("red", "10.10.0.0/16", "8285"), udp("blue", "10.10.0.0/16", "8285")},
			[]string{"networks red and blue both use udp port 8285 (Backend.Port in /coreos.com/network/red/config and /coreos.com/network/blue/config): each network needs its own port"}},
		{"host-gw disjoint", []namedConfig{hgw("red", "10.10.0.0/16"), hgw("blue", "10.20.0.0/16")}, nil},
		{"host-gw same CIDR", []namedConfig{hgw("red", "10.10.0.0/16"), hgw("blue", "10.10.0.0/16")},
			[]string{"host-gw networks red (10.10.0.0/16) and blue (10.10.0.0/16) overlap"}},
		{"host-gw nested", []namedConfig{hgw("red", "10.10.0.0/16"), hgw("blue", "10.10.128.0/17")},
			[]string{"host-gw networks red (10.10.0.0/16) and blue (10.10.128.0/17) overlap"}},
		{"mixed backends", []namedConfig{vx("red", "10.10.0.0/16", "1"), udp("blue", "10.20.0.0/16", "8285")},
			[]string{"networks red (vxlan, /coreos.com/network/red/config) and blue (udp, /coreos.com/network/blue/config) use different backends"}},
		{"every clash", []namedConfig{vx("red", "10.10.0.0/16", "1"), vx("blue", "10.10.0.0/16", "1"), vx("green", "10.10.0.0/16", "1")},
			[]string{"red and blue both use VNI 1", "red and green both use VNI 1", "blue and green both use VNI 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkNetworks(tc.ncs)
			if tc.want == nil {
				if err != nil {
					t.Errorf("checkNetworks = %v, want accepted", err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("checkNetworks = %v, want %q", err, w)
				}
			}
		})
	}
}

func testTenancies(t *testing.T) (red, blue, hgw tenancy) {
	red = newTenancy(tenant{"red", 1001, 1001}, mustConfig(t, `{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`), "eth0")
	blue = newTenancy(tenant{"blue", 1002, 1002}, mustConfig(t, `{"Network":"10.10.0.0/16","Backend":{"Type":"udp","Port":8286}}`), "eth0")
	hgw = newTenancy(tenant{"green", 1003, 1003}, mustConfig(t, `{"Network":"10.30.0.0/16","Backend":{"Type":"host-gw"}}`), "eth0")
	return red, blue, hgw
}

// TestTenancyRules: the policy rule matches the network's device (host-gw:
// the external interface and the Network), looks up its table, and is
// marked as the agent's; the unreachable default is in the table.
func TestTenancyRules(t *testing.T) {
	red, blue, hgw := testTenancies(t)
	for _, tc := range []struct {
		x       tenancy
		iif     string
		table   int
		dst     string
		devWant string
	}{{red, "flannel.1", 1001, "", "flannel.1"}, {blue, "fl-blue", 1002, "", "fl-blue"}, {hgw, "eth0", 1003, "10.30.0.0/16", ""}} {
		if tc.x.dev != tc.devWant {
			t.Errorf("%s: device %q, want %q", tc.x.name, tc.x.dev, tc.devWant)
		}
		r := tc.x.rule()
		if r.IifName != tc.iif || r.Table != tc.table || r.Priority != TenantRulePriority || r.Protocol != uint8(backend.RouteProtocol) ||
			r.Family != unix.AF_INET || prefixString(r.Dst) != tc.dst || r.Src != nil || r.Invert || r.Mark != 0 || r.Goto != -1 {
			t.Errorf("%s: rule = %+v, want iif %s to %q lookup %d priority %d proto 77", tc.x.name, r, tc.iif, tc.dst, tc.table, TenantRulePriority)
		}
		u := tc.x.unreachable()
		if u.Type != unix.RTN_UNREACHABLE || u.Table != tc.table || u.Protocol != backend.RouteProtocol || u.Dst.String() != "0.0.0.0/0" || u.LinkIndex != 0 {
			t.Errorf("%s: unreachable = %+v, want unreachable default table %d proto 77", tc.x.name, u, tc.table)
		}
	}
	if !sameRule(*red.rule(), *red.rule()) || sameRule(*red.rule(), *blue.rule()) || sameRule(*hgw.rule(), *newTenancy(tenant{"x", 1003, 1003}, mustConfig(t, `{"Network":"10.31.0.0/16","Backend":{"Type":"host-gw"}}`), "eth0").rule()) {
		t.Error("sameRule does not tell the rules apart")
	}
}

// TestZoneObjects checks the conntrack zone table expression by expression:
// `iifname "flannel.1" ct zone set 1001` (host-gw: `iifname "eth0" meta
// nfproto ipv4 ip daddr 10.30.0.0/16 ct zone set 1003`) in a prerouting
// chain at raw priority, before conntrack.
func TestZoneObjects(t *testing.T) {
	red, blue, hgw := testTenancies(t)
	d := zoneObjects([]tenancy{red, blue, hgw})
	if d.table.Name != "overlaylab-tenants" || d.table.Family != nftables.TableFamilyINet {
		t.Errorf("table %s family %d, want inet overlaylab-tenants", d.table.Name, d.table.Family)
	}
	if d.chain.Hooknum == nil || *d.chain.Hooknum != *nftables.ChainHookPrerouting || d.chain.Type != nftables.ChainTypeFilter ||
		d.chain.Priority == nil || *d.chain.Priority != -300 || d.chain.Table != d.table {
		t.Errorf("chain = %+v, want a filter chain on prerouting at raw priority (-300)", d.chain)
	}
	if len(d.rules) != 3 {
		t.Fatalf("%d rules, want 3", len(d.rules))
	}
	ifn := func(s string) []byte { b := make([]byte, 16); copy(b, s); return b }
	zone := func(z uint16) []expr.Any {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(z)},
			&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true},
		}
	}
	iif := func(s string) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifn(s)}}
	}
	want := [][]expr.Any{
		append(iif("flannel.1"), zone(1001)...),
		append(iif("fl-blue"), zone(1002)...),
		concat(iif("eth0"), []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 30, 0, 0}},
		}, zone(1003)),
	}
	for i, r := range d.rules {
		if r.Table != d.table || r.Chain != d.chain {
			t.Errorf("rule %d not in the table's chain", i)
		}
		if !reflect.DeepEqual(r.Exprs, want[i]) {
			t.Errorf("rule %d =\n%#v\nwant\n%#v", i, r.Exprs, want[i])
		}
	}
	if len(zoneObjects(nil).rules) != 0 {
		t.Error("rules without networks")
	}
}

// TestIPNet: the rule and route destinations are 4-byte IPv4 prefixes.
func TestIPNet(t *testing.T) {
	n := ipNet(netip.MustParsePrefix("10.30.1.7/16"))
	if len(n.IP) != 4 || n.String() != "10.30.0.0/16" || !n.IP.Equal(net.ParseIP("10.30.0.0")) {
		t.Errorf("ipNet = %v (%d bytes)", n, len(n.IP))
	}
}
