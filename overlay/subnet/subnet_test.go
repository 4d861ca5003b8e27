package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/overlay/config"
)

func mustConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// setup returns a manager on the shared etcd with the test's own prefix and a
// /16 config stored under it.
func setup(t *testing.T, o Options) (*Manager, *clientv3.Client, *config.Config) {
	t.Helper()
	cli := newClient(t, sharedEtcd)
	o.Prefix = testPrefix(t)
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(1, 2))
	}
	m := NewManager(cli, o)
	cfg := mustConfig(t, `{"Network":"10.10.0.0/16"}`)
	if err := m.SetConfig(testContext(t, 10*time.Second), cfg); err != nil {
		t.Fatal(err)
	}
	return m, cli, cfg
}

func ip(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 77, byte(i)}) }

func udpAttrs(i int) LeaseAttrs { return LeaseAttrs{PublicIP: ip(i), BackendType: "udp"} }

// background runs f until the test ends and waits for it, so that nothing
// logs to a finished test.
func background(t *testing.T, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("background loop: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// leaseView is what a WatchLeases consumer believes the lease set is.
type leaseView struct {
	mu     sync.Mutex
	set    map[netip.Prefix]Lease
	events []Event
}

func newView(initial []Lease) *leaseView {
	v := &leaseView{set: map[netip.Prefix]Lease{}}
	for _, l := range initial {
		v.set[l.Subnet] = l
	}
	return v
}

func (v *leaseView) handle(evs []Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range evs {
		v.events = append(v.events, e)
		if e.Type == Added {
			v.set[e.Lease.Subnet] = e.Lease
		} else {
			delete(v.set, e.Lease.Subnet)
		}
	}
}

func (v *leaseView) subnets() []netip.Prefix {
	v.mu.Lock()
	defer v.mu.Unlock()
	return sortedKeys(v.set)
}

func (v *leaseView) saw(typ EventType, p netip.Prefix) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.events {
		if e.Type == typ && e.Lease.Subnet == p {
			return true
		}
	}
	return false
}

func sortedKeys(m map[netip.Prefix]Lease) []netip.Prefix {
	var out []netip.Prefix
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func subnetsOf(ls []Lease) []netip.Prefix {
	var out []netip.Prefix
	for _, l := range ls {
		out = append(out, l.Subnet)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// converges waits until the view equals the lease set in etcd.
func converges(t *testing.T, m *Manager, v *leaseView, d time.Duration) {
	t.Helper()
	var truth, seen []netip.Prefix
	deadline := time.Now().Add(d)
	for {
		ls, _, err := m.Leases(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		truth, seen = subnetsOf(ls), v.subnets()
		if slices.Equal(truth, seen) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher's view did not converge in %v:\n view %v\n etcd %v", d, seen, truth)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLeaseValueGolden(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::1")
	tests := []struct {
		attrs LeaseAttrs
		want  string
	}{
		{LeaseAttrs{PublicIP: ip(1), BackendType: "udp"},
			`{"PublicIP":"192.168.77.1","PublicIPv6":null,"BackendType":"udp","BackendData":null}`},
		{LeaseAttrs{PublicIP: ip(2), BackendType: "udp", BackendData: json.RawMessage{}},
			`{"PublicIP":"192.168.77.2","PublicIPv6":null,"BackendType":"udp","BackendData":null}`},
		{LeaseAttrs{PublicIP: ip(3), PublicIPv6: &v6, BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}`)},
			`{"PublicIP":"192.168.77.3","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.attrs)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("marshal\n got %s\nwant %s", got, tt.want)
		}
	}

	// Values as written by upstream flannel versions that use omitempty.
	var a LeaseAttrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"192.168.77.9","BackendType":"vxlan","BackendData":{"VNI":1}}`), &a); err != nil {
		t.Fatal(err)
	}
	if a.PublicIP != ip(9) || a.PublicIPv6 != nil || a.BackendType != "vxlan" || string(a.BackendData) != `{"VNI":1}` {
		t.Fatalf("unmarshal flannel value: %+v", a)
	}
	if err := json.Unmarshal([]byte(tests[0].want), &a); err != nil || a.BackendData != nil {
		t.Fatalf("null BackendData should read back as nil: %+v, %v", a, err)
	}

	// And byte for byte what lands in etcd.
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 10*time.Second)
	l, err := m.Acquire(ctx, cfg, tests[2].attrs, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, testPrefix(t)+"/subnets/"+SubnetKey(l.Subnet))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get lease key: %v %v", resp, err)
	}
	if got := string(resp.Kvs[0].Value); got != tests[2].want {
		t.Fatalf("stored value\n got %s\nwant %s", got, tests[2].want)
	}
	cresp, err := cli.Get(ctx, testPrefix(t)+"/config")
	if err != nil || len(cresp.Kvs) != 1 {
		t.Fatalf("get config key: %v", err)
	}
	if got, want := string(cresp.Kvs[0].Value), `{"Network":"10.10.0.0/16","SubnetLen":24,"SubnetMin":"10.10.1.0","SubnetMax":"10.10.255.0","Backend":{"Type":"udp","Port":8285}}`; got != want {
		t.Fatalf("stored config\n got %s\nwant %s", got, want)
	}
}

func TestSubnetKey(t *testing.T) {
	for _, s := range []string{"10.10.3.0/24", "10.10.0.4/30", "0.0.0.0/0", "fd00::/64"} {
		p := netip.MustParsePrefix(s)
		k := SubnetKey(p)
		back, err := ParseSubnetKey(k)
		if err != nil || back != p {
			t.Errorf("ParseSubnetKey(SubnetKey(%s)=%q) = %s, %v", s, k, back, err)
		}
	}
	if k := SubnetKey(netip.MustParsePrefix("10.10.3.0/24")); k != "10.10.3.0-24" {
		t.Errorf("SubnetKey = %q", k)
	}
	for _, bad := range []string{"", "10.10.3.0", "10.10.3.0_24", "10.10.3.1-24", "10.10.3.0-024", "10.10.3.0-+24",
		"10.10.3.0-33", "10.10.3-24", "10.10.3.0-", "-24", "fe80::%eth0-64", "10.10.3.0-24-1"} {
		if p, err := ParseSubnetKey(bad); err == nil {
			t.Errorf("ParseSubnetKey(%q) = %s, want error", bad, p)
		}
	}
}

func TestPickSubnet(t *testing.T) {
	m := NewManager(nil, Options{Rand: rand.New(rand.NewPCG(7, 7))})
	cfg := mustConfig(t, `{"Network":"10.10.0.0/24","SubnetLen":28}`) // 15 subnets: .16 .. .240
	p := netip.MustParsePrefix
	taken := []netip.Prefix{
		p("10.10.0.32/27"),  // an old, larger lease: blocks .32 and .48
		p("10.10.0.16/28"),  // first
		p("10.10.0.240/28"), // last
		p("10.10.0.0/28"),   // outside the range: ignored
		p("10.10.0.100/30"), // smaller, inside .96/28
		p("10.11.0.0/16"),   // elsewhere
		p("fd00::/64"),
	}
	iv := coveredIndexes(cfg, taken)
	if want := (intervals{{0, 2}, {5, 5}, {14, 14}}); !slices.Equal(iv, want) {
		t.Fatalf("coveredIndexes = %v, want %v", iv, want)
	}
	free := map[netip.Prefix]bool{}
	for range 500 {
		s, err := m.pickSubnet(cfg, taken, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range taken {
			if tk.Overlaps(s) {
				t.Fatalf("picked %s overlapping taken %s", s, tk)
			}
		}
		if !cfg.Contains(s) {
			t.Fatalf("picked %s outside the range", s)
		}
		free[s] = true
	}
	if len(free) != 15-5 {
		t.Fatalf("random picks covered %d subnets, want all 10 free ones", len(free))
	}
	// prev wins when free, is ignored when taken or not leasable.
	if s, _ := m.pickSubnet(cfg, taken, p("10.10.0.128/28")); s != p("10.10.0.128/28") {
		t.Fatalf("free prev not chosen: %s", s)
	}
	for _, prev := range []string{"10.10.0.48/28", "10.10.0.0/28", "10.10.0.128/27"} {
		if s, _ := m.pickSubnet(cfg, taken, p(prev)); s == p(prev) {
			t.Fatalf("unusable prev %s chosen", prev)
		}
	}
	all := []netip.Prefix{p("10.10.0.0/24")}
	_, err := m.pickSubnet(cfg, all, netip.Prefix{})
	if !errors.Is(err, ErrNoFreeSubnet) || !strings.Contains(err.Error(), "10.10.0.16/28..10.10.0.240/28 (all 15 leased)") {
		t.Fatalf("full range: %v", err)
	}
}

func TestConcurrentAcquire(t *testing.T) {
	t.Parallel()
	const n = 100
	_, _, cfg := setup(t, Options{})
	var clients []*clientv3.Client
	for range 4 {
		clients = append(clients, newClient(t, sharedEtcd))
	}
	ctx := testContext(t, 30*time.Second)
	leases := make([]*Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		m := NewManager(clients[i%len(clients)], Options{
			Prefix: testPrefix(t),
			Rand:   rand.New(rand.NewPCG(uint64(i), 99)),
			Logger: testLogger(t),
		})
		wg.Go(func() { leases[i], errs[i] = m.Acquire(ctx, cfg, udpAttrs(i+1), netip.Prefix{}) })
	}
	wg.Wait()

	seen := map[netip.Prefix]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("manager %d: %v", i, errs[i])
		}
		if j, dup := seen[leases[i].Subnet]; dup {
			t.Fatalf("managers %d and %d both got %s", j, i, leases[i].Subnet)
		}
		seen[leases[i].Subnet] = i
		if !cfg.Contains(leases[i].Subnet) {
			t.Fatalf("manager %d got unleasable %s", i, leases[i].Subnet)
		}
	}

	resp, err := clients[0].Get(ctx, testPrefix(t)+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("%d lease keys in etcd, want %d", len(resp.Kvs), n)
	}
	for _, kv := range resp.Kvs {
		p, err := ParseSubnetKey(strings.TrimPrefix(string(kv.Key), testPrefix(t)+"/subnets/"))
		if err != nil {
			t.Fatal(err)
		}
		i, ok := seen[p]
		if !ok {
			t.Fatalf("key %s belongs to no manager", kv.Key)
		}
		want := fmt.Sprintf(`{"PublicIP":"192.168.77.%d","PublicIPv6":null,"BackendType":"udp","BackendData":null}`, i+1)
		if string(kv.Value) != want {
			t.Fatalf("key %s = %s, want %s", kv.Key, kv.Value, want)
		}
		if clientv3.LeaseID(kv.Lease) != leases[i].EtcdLease || kv.Lease == 0 {
			t.Fatalf("key %s attached to etcd lease %x, manager holds %x", kv.Key, kv.Lease, leases[i].EtcdLease)
		}
		if kv.ModRevision != leases[i].Revision {
			t.Fatalf("key %s ModRevision %d, lease says %d", kv.Key, kv.ModRevision, leases[i].Revision)
		}
	}
}

// TestExhaustion is not parallel: it counts all etcd leases to prove that a
// failed Acquire revokes what it granted.
func TestExhaustion(t *testing.T) {
	m, cli, _ := setup(t, Options{})
	cfg := mustConfig(t, `{"Network":"10.10.0.0/28"}`) // .4/30, .8/30, .12/30
	ctx := testContext(t, 20*time.Second)
	got := map[netip.Prefix]bool{}
	for i := range cfg.SubnetCount() {
		l, err := m.Acquire(ctx, cfg, udpAttrs(i+1), netip.Prefix{})
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		got[l.Subnet] = true
	}
	if len(got) != 3 {
		t.Fatalf("got %v", got)
	}
	before, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Acquire(ctx, cfg, udpAttrs(50), netip.Prefix{})
	if !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("acquire on a full range: %v, want ErrNoFreeSubnet", err)
	}
	const want = "acquire subnet for 192.168.77.50: no free subnet in range 10.10.0.4/30..10.10.0.12/30 (all 3 leased)"
	if err.Error() != want {
		t.Fatalf("error\n got %q\nwant %q", err, want)
	}
	after, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Leases) != len(before.Leases) {
		t.Fatalf("failed Acquire leaked etcd leases: %d before, %d after", len(before.Leases), len(after.Leases))
	}
	// A host already holding a lease still gets it back on a full range.
	if _, err := m.Acquire(ctx, cfg, udpAttrs(2), netip.Prefix{}); err != nil {
		t.Fatalf("reuse on a full range: %v", err)
	}
}

func TestReuse(t *testing.T) {
	t.Parallel()
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 20*time.Second)

	// Same PublicIP: the restarted host takes its key over.
	first, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	vx := LeaseAttrs{PublicIP: ip(1), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1}`)}
	again, err := NewManager(cli, Options{Prefix: testPrefix(t), Logger: testLogger(t)}).Acquire(ctx, cfg, vx, cfg.NthSubnet(7))
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != first.Subnet {
		t.Fatalf("same PublicIP got %s, then %s", first.Subnet, again.Subnet)
	}
	if again.EtcdLease == first.EtcdLease {
		t.Fatal("takeover kept the old etcd lease; want a fresh one")
	}
	ls, _, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Attrs.BackendType != "vxlan" || ls[0].EtcdLease != again.EtcdLease {
		t.Fatalf("after takeover leases = %+v", ls)
	}
	if ttl, err := cli.TimeToLive(ctx, first.EtcdLease); err != nil || ttl.TTL != -1 {
		t.Fatalf("old etcd lease not revoked: %+v %v", ttl, err)
	}

	// prev from subnet.env is honoured when free...
	prev := cfg.NthSubnet(100)
	l2, err := m.Acquire(ctx, cfg, udpAttrs(2), prev)
	if err != nil || l2.Subnet != prev {
		t.Fatalf("acquire with free prev %s: %v, %v", prev, l2, err)
	}
	// ...and ignored when another host holds it or it is outside the range.
	l3, err := m.Acquire(ctx, cfg, udpAttrs(3), prev)
	if err != nil || l3.Subnet == prev || !cfg.Contains(l3.Subnet) {
		t.Fatalf("acquire with taken prev: %v, %v", l3, err)
	}
	l4, err := m.Acquire(ctx, cfg, udpAttrs(4), netip.MustParsePrefix("10.11.0.0/24"))
	if err != nil || !cfg.Contains(l4.Subnet) {
		t.Fatalf("acquire with foreign prev: %v, %v", l4, err)
	}
	// After a clean shutdown (Revoke), prev brings the same subnet back.
	if err := m.Revoke(ctx, l2); err != nil {
		t.Fatal(err)
	}
	l5, err := m.Acquire(ctx, cfg, udpAttrs(2), prev)
	if err != nil || l5.Subnet != prev {
		t.Fatalf("re-acquire prev after revoke: %v, %v", l5, err)
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	m, cli, cfg := setup(t, Options{TTL: 5 * time.Second})
	ctx := testContext(t, 20*time.Second)
	l, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	before, err := cli.TimeToLive(ctx, l.EtcdLease)
	if err != nil {
		t.Fatal(err)
	}
	oldExp := l.Expiration
	if err := m.Renew(ctx, l); err != nil {
		t.Fatal(err)
	}
	after, err := cli.TimeToLive(ctx, l.EtcdLease)
	if err != nil {
		t.Fatal(err)
	}
	if before.TTL > 4 || after.TTL < 4 || after.TTL <= before.TTL {
		t.Fatalf("TTL before renew %ds, after %ds: not extended", before.TTL, after.TTL)
	}
	if !l.Expiration.After(oldExp.Add(time.Second)) {
		t.Fatalf("Expiration %v not moved past %v", l.Expiration, oldExp)
	}
	if exp, err := m.Expiration(ctx, l); err != nil || exp.Sub(l.Expiration).Abs() > 2*time.Second {
		t.Fatalf("Expiration from etcd %v vs %v: %v", exp, l.Expiration, err)
	}

	// The key taken by someone else → lost.
	if _, err := cli.Put(ctx, m.LeaseKey(l.Subnet), `{"PublicIP":"192.168.77.200","PublicIPv6":null,"BackendType":"udp","BackendData":null}`); err != nil {
		t.Fatal(err)
	}
	if err := m.Renew(ctx, l); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew of an overwritten key: %v, want ErrLeaseLost", err)
	}
	// The etcd lease gone → lost.
	l2, err := m.Acquire(ctx, cfg, udpAttrs(2), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, l2.EtcdLease); err != nil {
		t.Fatal(err)
	}
	if err := m.Renew(ctx, l2); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew of a revoked lease: %v, want ErrLeaseLost", err)
	}
}

func TestExpiryFreesSubnet(t *testing.T) {
	t.Parallel()
	m, cli, cfg := setup(t, Options{TTL: 2 * time.Second})
	ctx := testContext(t, 20*time.Second)
	_, rev, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := newView(nil)
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, rev, v.handle) })

	l, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "Added event", func() bool { return v.saw(Added, l.Subnet) })
	eventually(t, 10*time.Second, "Removed event after expiry", func() bool { return v.saw(Removed, l.Subnet) })
	resp, err := cli.Get(ctx, m.LeaseKey(l.Subnet))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("expired key still there: %v %v", resp.Kvs, err)
	}
	// The subnet is free again: a new host asking for it gets it.
	l2, err := m.Acquire(ctx, cfg, udpAttrs(2), l.Subnet)
	if err != nil || l2.Subnet != l.Subnet {
		t.Fatalf("expired subnet not free: %v %v", l2, err)
	}
}

func TestKeepLease(t *testing.T) {
	t.Parallel()
	// A 2s TTL with the default 1h margin renews on every check (~0.66s):
	// the key must outlive several TTLs.
	m, cli, cfg := setup(t, Options{TTL: 2 * time.Second})
	ctx := testContext(t, 30*time.Second)
	l, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan Lease, 10)
	background(t, func(ctx context.Context) error {
		return m.KeepLease(ctx, cfg, l, func(nl Lease) { changes <- nl })
	})

	time.Sleep(4500 * time.Millisecond)
	resp, err := cli.Get(ctx, m.LeaseKey(l.Subnet))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != l.EtcdLease {
		t.Fatalf("lease not kept alive past its TTL: %v %v", resp, err)
	}

	expectChange := func(why string) Lease {
		t.Helper()
		select {
		case nl := <-changes:
			if nl.Subnet != l.Subnet {
				t.Fatalf("%s: re-acquired %s, want the same subnet %s", why, nl.Subnet, l.Subnet)
			}
			resp, err := cli.Get(ctx, m.LeaseKey(nl.Subnet))
			if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != nl.EtcdLease {
				t.Fatalf("%s: key not back: %v %v", why, resp, err)
			}
			return nl
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no onChange", why)
		}
		return Lease{}
	}

	// Someone deletes the key (an operator, or a buggy peer).
	if _, err := cli.Delete(ctx, m.LeaseKey(l.Subnet)); err != nil {
		t.Fatal(err)
	}
	nl := expectChange("key deleted")

	// The etcd lease disappears, as when it expired during a partition.
	if _, err := cli.Revoke(ctx, nl.EtcdLease); err != nil {
		t.Fatal(err)
	}
	expectChange("etcd lease revoked")
}

func TestWatchConfig(t *testing.T) {
	t.Parallel()
	m, cli, _ := setup(t, Options{})
	type update struct {
		cfg *config.Config
		err error
	}
	updates := make(chan update, 10)
	background(t, func(ctx context.Context) error {
		return m.WatchConfig(ctx, func(c *config.Config, err error) { updates <- update{c, err} })
	})
	next := func() update {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(5 * time.Second):
			t.Fatal("no config callback")
		}
		return update{}
	}
	ctx := testContext(t, 20*time.Second)

	if u := next(); u.err != nil || u.cfg.Network.String() != "10.10.0.0/16" {
		t.Fatalf("initial: %+v", u)
	}
	newCfg := mustConfig(t, `{"Network":"10.20.0.0/16","Backend":{"Type":"vxlan"}}`)
	if err := m.SetConfig(ctx, newCfg); err != nil {
		t.Fatal(err)
	}
	if u := next(); u.err != nil || u.cfg.Network.String() != "10.20.0.0/16" || u.cfg.Backend.Type != "vxlan" {
		t.Fatalf("after change: %+v", u)
	}
	if _, err := cli.Put(ctx, m.ConfigKey(), `{"Network":"10.20.0.0/29"}`); err != nil {
		t.Fatal(err)
	}
	if u := next(); u.err == nil || errors.Is(u.err, ErrNoConfig) || !strings.Contains(u.err.Error(), "must be /28 or larger") {
		t.Fatalf("after malformed put: %+v", u)
	}
	if _, err := cli.Delete(ctx, m.ConfigKey()); err != nil {
		t.Fatal(err)
	}
	if u := next(); !errors.Is(u.err, ErrNoConfig) {
		t.Fatalf("after delete: %+v", u)
	}
}

func TestGetConfig(t *testing.T) {
	t.Parallel()
	m, cli, _ := setup(t, Options{})
	ctx := testContext(t, 10*time.Second)
	if c, err := m.GetConfig(ctx); err != nil || c.SubnetLen != 24 {
		t.Fatalf("GetConfig: %+v %v", c, err)
	}
	if _, err := cli.Put(ctx, m.ConfigKey(), `{"Network":"10.10.0.0/16","SubnetLen":31}`); err != nil {
		t.Fatal(err)
	}
	_, err := m.GetConfig(ctx)
	var fe *config.FieldError
	if errors.Is(err, ErrNoConfig) || !errors.As(err, &fe) || fe.Field != "SubnetLen" {
		t.Fatalf("malformed config: %v", err)
	}
	if _, err := cli.Delete(ctx, m.ConfigKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetConfig(ctx); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("missing config: %v", err)
	}
}

func TestLeasesSkipsMalformed(t *testing.T) {
	t.Parallel()
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 10*time.Second)
	good, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	sub := m.SubnetsPrefix()
	for k, v := range map[string]string{
		"garbage":      `{}`,
		"10.10.9.1-24": `{}`,
		"10.10.8.0-24": `not json`,
	} {
		if _, err := cli.Put(ctx, sub+k, v); err != nil {
			t.Fatal(err)
		}
	}
	ls, _, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Subnet != good.Subnet {
		t.Fatalf("Leases = %+v", ls)
	}
	// A well-named key with a bad value still occupies its subnet.
	l, err := m.Acquire(ctx, cfg, udpAttrs(2), netip.MustParsePrefix("10.10.8.0/24"))
	if err != nil || l.Subnet == netip.MustParsePrefix("10.10.8.0/24") {
		t.Fatalf("acquired an occupied subnet: %v %v", l, err)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 10*time.Second)
	l, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, l); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, m.LeaseKey(l.Subnet))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("key survives Revoke: %v %v", resp, err)
	}
	if err := m.Revoke(ctx, l); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
}

// TestWatchLeasesCompaction is not parallel: compacting the shared etcd at
// its head revision would be a fault injected into every other test.
func TestWatchLeasesCompaction(t *testing.T) {
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 30*time.Second)
	var held []*Lease
	for i := range 4 {
		l, err := m.Acquire(ctx, cfg, udpAttrs(i+1), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	initial, rev, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := newView(initial)

	// Right before the first watch opens, change the lease set behind the
	// watcher's back and compact past it: the watch must fail with
	// ErrCompacted and the watcher must recover by re-listing.
	compacted := make(chan int64, 1)
	var once sync.Once
	m.testHookBeforeWatch = func(int64) {
		once.Do(func() {
			must := func(err error) {
				if err != nil {
					t.Error(err)
				}
			}
			must(m.Revoke(ctx, held[0]))
			must(m.Revoke(ctx, held[1]))
			_, err := m.Acquire(ctx, cfg, udpAttrs(10), netip.Prefix{})
			must(err)
			// A changed value for a subnet the watcher knows: must be re-reported.
			_, err = m.Acquire(ctx, cfg, LeaseAttrs{PublicIP: ip(3), BackendType: "vxlan"}, netip.Prefix{})
			must(err)
			resp, err := cli.Get(ctx, "/")
			must(err)
			_, err = cli.Compact(ctx, resp.Header.Revision)
			must(err)
			compacted <- resp.Header.Revision
		})
	}
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, rev, v.handle) })
	var crev int64
	select {
	case crev = <-compacted:
	case <-time.After(10 * time.Second):
		t.Fatal("watch never started")
	}
	if crev <= rev {
		t.Fatalf("compaction at %d does not pass the watcher's revision %d", crev, rev)
	}
	converges(t, m, v, 10*time.Second)
	if !v.saw(Removed, held[0].Subnet) || !v.saw(Removed, held[1].Subnet) {
		t.Fatal("revoked leases not reported as Removed after compaction")
	}
	v.mu.Lock()
	l3 := v.set[held[2].Subnet]
	v.mu.Unlock()
	if l3.Attrs.BackendType != "vxlan" {
		t.Fatalf("changed lease not re-reported: %+v", l3)
	}

	// The stream keeps working after recovery.
	l, err := m.Acquire(ctx, cfg, udpAttrs(20), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "Added after recovery", func() bool { return v.saw(Added, l.Subnet) })
	if err := m.Revoke(ctx, held[3]); err != nil {
		t.Fatal(err)
	}
	converges(t, m, v, 5*time.Second)

	// A start revision that is already compacted: the watcher cannot know
	// what the caller saw and reports the whole current set.
	v2 := newView(nil)
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, rev, v2.handle) })
	converges(t, m, v2, 10*time.Second)
}

func TestWatchLeasesFromZero(t *testing.T) {
	t.Parallel()
	m, _, cfg := setup(t, Options{})
	ctx := testContext(t, 10*time.Second)
	for i := range 3 {
		if _, err := m.Acquire(ctx, cfg, udpAttrs(i+1), netip.Prefix{}); err != nil {
			t.Fatal(err)
		}
	}
	v := newView(nil)
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, 0, v.handle) })
	converges(t, m, v, 5*time.Second)
	if len(v.subnets()) != 3 {
		t.Fatalf("view %v", v.subnets())
	}
}

func TestWatchLeasesSurvivesEtcdRestart(t *testing.T) {
	t.Parallel()
	te := startOwnEtcd(t)
	cli := newClient(t, te)
	m := NewManager(cli, Options{Prefix: "/restart", Logger: testLogger(t), RequestTimeout: 2 * time.Second})
	cfg := mustConfig(t, `{"Network":"10.10.0.0/16"}`)
	ctx := testContext(t, 40*time.Second)
	a, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(ctx, cfg, udpAttrs(2), netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	initial, rev, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v := newView(initial)
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, rev, v.handle) })
	changes := make(chan Lease, 4)
	background(t, func(ctx context.Context) error {
		return m.KeepLease(ctx, cfg, a, func(l Lease) { changes <- l })
	})

	te.Stop()
	time.Sleep(500 * time.Millisecond)
	if err := te.Restart(); err != nil {
		t.Fatal(err)
	}
	// The client redials with gRPC's backoff (1s, 1.6s, 2.6s...); wait for
	// it like an agent would, instead of failing the first request.
	eventually(t, 15*time.Second, "client reconnected", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := cli.Get(rctx, "/restart/config")
		return err == nil
	})
	// Changes after the restart, with a compaction on top so that a watcher
	// resuming from its old revision cannot simply replay them.
	c, err := m.Acquire(ctx, cfg, udpAttrs(3), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, m.LeaseKey(a.Subnet)); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	// KeepLease puts a back; the watcher must end up agreeing with etcd.
	select {
	case nl := <-changes:
		if nl.Subnet != a.Subnet {
			t.Fatalf("re-acquired %s, want %s", nl.Subnet, a.Subnet)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("KeepLease did not re-acquire after the restart")
	}
	converges(t, m, v, 15*time.Second)
	if !v.saw(Added, c.Subnet) {
		t.Fatal("lease added after the restart not reported")
	}
}

// TestWatchLeasesResyncReportsFullSet: when the start revision is already
// compacted, events cannot tell the caller which of the leases it knew are
// gone; the resync callback hands it the complete current set, so a caller
// that keeps only what that set holds converges (a caller that relies on
// events alone keeps the removed lease forever).
func TestWatchLeasesResyncReportsFullSet(t *testing.T) {
	m, cli, cfg := setup(t, Options{})
	ctx := testContext(t, 30*time.Second)
	var held []*Lease
	for i := range 3 {
		l, err := m.Acquire(ctx, cfg, udpAttrs(i+1), netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	initial, rev, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Behind the caller's back: one lease goes, and history is compacted.
	if err := m.Revoke(ctx, held[0]); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}

	eventsOnly := newView(initial)
	background(t, func(ctx context.Context) error { return m.WatchLeases(ctx, rev, eventsOnly.handle) })
	resynced := newView(initial)
	var calls []int
	var mu sync.Mutex
	resync := func(current []Lease) {
		mu.Lock()
		calls = append(calls, len(current))
		mu.Unlock()
		resynced.mu.Lock()
		defer resynced.mu.Unlock()
		keep := map[netip.Prefix]bool{}
		for _, l := range current {
			keep[l.Subnet] = true
		}
		for p := range resynced.set {
			if !keep[p] {
				delete(resynced.set, p)
			}
		}
	}
	background(t, func(ctx context.Context) error {
		return m.WatchLeasesWithResync(ctx, rev, resynced.handle, resync)
	})
	converges(t, m, resynced, 10*time.Second)
	mu.Lock()
	if len(calls) == 0 || calls[0] != 2 {
		t.Errorf("resync calls with lease counts %v, want a first call with the 2 current leases", calls)
	}
	mu.Unlock()
	// The events-only view got the current leases re-reported but never
	// the removal: the gap the resync closes.
	eventually(t, 10*time.Second, "the events-only watcher to re-report the current leases", func() bool {
		return eventsOnly.saw(Added, held[1].Subnet) && eventsOnly.saw(Added, held[2].Subnet)
	})
	if eventsOnly.saw(Removed, held[0].Subnet) {
		t.Fatalf("the watcher reported the removal it cannot know about; the resync test proves nothing")
	}
	if got := eventsOnly.subnets(); !slices.Contains(got, held[0].Subnet) {
		t.Fatalf("events-only view %v lost %s without a Removed event", got, held[0].Subnet)
	}
}

// TestWatchLeasesKeepsPeersAcrossStoreReset: etcd's data is wiped (a new
// store at the same address, its revision back at 1). The watcher notices
// and re-lists an empty store; a peer whose owner re-creates its lease
// within the grace is never reported removed (a datapath keeps it), one
// nobody re-creates is removed once the grace is over, and the resync
// callback (whose set a caller reconciles with) gets no set during the grace
// and the true one after it.
func TestWatchLeasesKeepsPeersAcrossStoreReset(t *testing.T) {
	t.Parallel()
	te := startOwnEtcd(t)
	cli := newClient(t, te)
	m := NewManager(cli, Options{Prefix: "/wipe", Logger: testLogger(t), RequestTimeout: 2 * time.Second})
	m.resetCheck = 500 * time.Millisecond // grace: 1.5 s
	cfg := mustConfig(t, `{"Network":"10.10.0.0/16"}`)
	ctx := testContext(t, 60*time.Second)
	a, err := m.Acquire(ctx, cfg, udpAttrs(1), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Acquire(ctx, cfg, udpAttrs(2), netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	initial, rev, err := m.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The hook runs before each watch stream; one from a revision below
	// rev follows the re-list of the new store.
	relisted := make(chan struct{})
	var once sync.Once
	m.testHookBeforeWatch = func(r int64) {
		if r < rev {
			once.Do(func() { close(relisted) })
		}
	}
	v := newView(initial)
	var mu sync.Mutex
	var resyncs [][]netip.Prefix
	background(t, func(ctx context.Context) error {
		return m.WatchLeasesFrom(ctx, initial, rev, v.handle, func(ls []Lease) {
			mu.Lock()
			defer mu.Unlock()
			resyncs = append(resyncs, subnetsOf(ls))
		})
	})

	te.Stop()
	if err := os.RemoveAll(te.Dir); err != nil {
		t.Fatal(err)
	}
	if err := te.Restart(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-relisted:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not re-list the new store")
	}
	if v.saw(Removed, a.Subnet) || v.saw(Removed, b.Subnet) {
		t.Fatalf("peers reported removed at the reset: %v", v.events)
	}
	// a's owner re-creates its lease (as KeepLease does); b's never does.
	if _, err := m.Acquire(ctx, cfg, udpAttrs(1), a.Subnet); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "b removed once the grace is over", func() bool { return v.saw(Removed, b.Subnet) })
	if v.saw(Removed, a.Subnet) {
		t.Fatalf("a, re-created within the grace, was reported removed: %v", v.events)
	}
	converges(t, m, v, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, set := range resyncs {
		if !slices.Equal(set, []netip.Prefix{a.Subnet}) {
			t.Errorf("resync handed %v; the only true set after the reset is [%s]", set, a.Subnet)
		}
	}
	if len(resyncs) == 0 {
		t.Error("no resync after the grace")
	}
}
