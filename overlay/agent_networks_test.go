package overlay

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// tableDatapath stands in for the vxlan datapath in the agent-level tests:
// they run in the machine's own namespace, where no device may be made.
// It publishes what vxlan publishes (its VNI, a VTEP MAC) and keeps the
// peers the agent hands it, per network. The kernel side of a network is
// tested in the backends' and the tenancy's root tests and end to end.
type tableDatapath struct {
	mu    sync.Mutex
	peers map[string][]netip.Prefix // network name → peers added
	opts  map[string]backend.Options
}

func newTableDatapath() *tableDatapath {
	return &tableDatapath{peers: map[string][]netip.Prefix{}, opts: map[string]backend.Options{}}
}

func (d *tableDatapath) factory(cfg *config.Config, _ backend.External, _ *backend.Metrics, o backend.Options) (backend.Backend, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opts[o.Network] = o
	return &tableBackend{d: d, network: o.Network, vni: cfg.Backend.VNI}, nil
}

func (d *tableDatapath) peersOf(network string) []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.peers[network])
}

type tableBackend struct {
	d       *tableDatapath
	network string
	vni     int
}

func (b *tableBackend) Prepare(context.Context) (backend.Published, error) {
	data, _ := json.Marshal(map[string]any{"VNI": b.vni, "VtepMAC": "0a:58:7f:00:00:01"})
	return backend.Published{BackendType: config.BackendVXLAN, BackendData: data, MTU: 1450}, nil
}
func (b *tableBackend) Configure(context.Context, subnet.Lease) error { return nil }
func (b *tableBackend) AddPeer(_ context.Context, l subnet.Lease) error {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	b.d.peers[b.network] = append(b.d.peers[b.network], l.Subnet)
	return nil
}
func (b *tableBackend) RemovePeer(context.Context, subnet.Lease) error { return nil }
func (b *tableBackend) Reconcile(context.Context) error                { return nil }
func (b *tableBackend) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
func (b *tableBackend) Close() error { return nil }

// networksOptions are agentOptions for a multi-network agent.
func networksOptions(t *testing.T, lb *logBuffer, prefix string, names ...string) Options {
	o := agentOptions(t, lb)
	o.EtcdPrefix, o.SubnetFile, o.SubnetDir, o.Networks, o.PublicIP = prefix, "", t.TempDir(), names, "127.0.0.1"
	return o
}

// leaseKeys lists the keys under prefix.
func leaseKeys(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	resp, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestAgentTwoNetworksSameCIDR: one agent serves red and blue, both
// 10.50.0.0/16: it waits for both configs, holds a lease under each
// network's own prefix (flannel's historical layout) and none under the
// single-network one, writes DIR/red.env and DIR/blue.env with flannel's
// keys plus different routing tables and conntrack zones, hands each
// datapath only its own network's peers, isolates both networks before
// either datapath runs, and is ready only once both are.
func TestAgentTwoNetworksSameCIDR(t *testing.T) {
	cli := etcdClient(t)
	prefix := testPrefix(t)
	// A single-network config at the prefix itself: not this agent's.
	etcdPut(t, cli, prefix+"/config", `{"Network":"10.99.0.0/16","Backend":{"Type":"vxlan"}}`)
	etcdPut(t, cli, prefix+"/red/config", `{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`)

	lb := &logBuffer{}
	opts := networksOptions(t, lb, prefix, "red", "blue")
	rec := &recorder{}
	dp := newTableDatapath()
	ra := startAgentWith(t, opts, lb, rec, map[string]backend.Factory{config.BackendVXLAN: dp.factory})

	// Without blue's config nothing starts: the networks are checked together.
	eventually(t, 10*time.Second, "the agent to wait for blue's config", func() bool {
		return waitingLogged(lb.String(), prefix+"/blue/config", "not found")
	})
	code, body, _, err := ra.get("/readyz")
	if err != nil || code != 503 || !strings.Contains(body, "red, blue") {
		t.Errorf("/readyz without blue's config = %d %q, %v; want 503 naming red and blue", code, body, err)
	}
	if keys := leaseKeys(t, cli, prefix+"/red/subnets/"); len(keys) != 0 {
		t.Errorf("red leased %v before blue's config was there", keys)
	}

	etcdPut(t, cli, prefix+"/blue/config", `{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`)
	eventually(t, 15*time.Second, "/readyz 200", func() bool {
		code, _, _, err := ra.get("/readyz")
		return err == nil && code == 200
	})

	want := map[string]struct {
		table uint32
		vni   int
	}{"red": {1001, 1}, "blue": {1002, 2}}
	for name, w := range want {
		env, err := subnetenv.Read(envPath(opts.SubnetDir, name))
		if err != nil {
			t.Fatalf("%s.env: %v", name, err)
		}
		if env.Network != netip.MustParsePrefix("10.50.0.0/16") || env.MTU != 1450 || env.IPMasq ||
			env.RouteTable != w.table || uint32(env.CTZone) != w.table || !env.Network.Contains(env.Subnet.Addr()) {
			t.Errorf("%s.env = %+v, want Network 10.50.0.0/16, MTU 1450, table and zone %d", name, env, w.table)
		}
		keys := leaseKeys(t, cli, prefix+"/"+name+"/subnets/")
		if len(keys) != 1 || keys[0] != prefix+"/"+name+"/subnets/"+subnet.SubnetKey(env.LeaseSubnet()) {
			t.Errorf("%s's leases = %v, want one, for %s", name, keys, env.LeaseSubnet())
			continue
		}
		resp, _ := cli.Get(t.Context(), keys[0])
		var val struct {
			PublicIP    string
			BackendType string
			BackendData struct{ VNI int }
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, &val); err != nil || val.PublicIP != "127.0.0.1" || val.BackendType != "vxlan" || val.BackendData.VNI != w.vni {
			t.Errorf("%s's lease = %s, want vxlan with VNI %d from 127.0.0.1", name, resp.Kvs[0].Value, w.vni)
		}
		o := dp.opts[name]
		if o.Network != name || o.Table != int(w.table) || o.DeviceName != "fl-"+name {
			t.Errorf("%s's backend options = %+v", name, o)
		}
	}
	if keys := leaseKeys(t, cli, prefix+"/subnets/"); len(keys) != 0 {
		t.Errorf("leases under the single-network prefix: %v", keys)
	}

	snap := rec.snapshot()
	if len(snap.resets) != 1 || len(snap.resets[0]) != 2 {
		t.Fatalf("tenancy resets = %+v, want one with both networks", snap.resets)
	}
	for i, w := range []struct {
		name, dev string
		table     int
	}{{"red", "flannel.1", 1001}, {"blue", "flannel.2", 1002}} {
		x := snap.resets[0][i]
		if x.name != w.name || x.dev != w.dev || x.table != w.table || int(x.zone) != w.table || x.network != netip.MustParsePrefix("10.50.0.0/16") {
			t.Errorf("plan[%d] = %+v, want %s on %s, table and zone %d", i, x, w.name, w.dev, w.table)
		}
		if snap.ensured[w.name] < 1 {
			t.Errorf("%s's rule and unreachable default never ensured", w.name)
		}
	}

	// A peer of red's is red's only.
	etcdPut(t, cli, prefix+"/red/subnets/10.50.77.0-24", `{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:c0:00:02:07"}}`)
	eventually(t, 10*time.Second, "red's datapath to get the peer", func() bool {
		return slices.Contains(dp.peersOf("red"), netip.MustParsePrefix("10.50.77.0/24"))
	})
	if p := dp.peersOf("blue"); len(p) != 0 {
		t.Errorf("blue's datapath got peers %v", p)
	}
	_, metrics, _, err := ra.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	checkPromText(t, metrics)
	mustContainAll(t, "/metrics", metrics,
		"\noverlaylab_peers{network=\"red\"} 1\n", "\noverlaylab_peers{network=\"blue\"} 0\n",
		"\noverlaylab_ready{network=\"red\"} 1\n", "\noverlaylab_ready{network=\"blue\"} 1\n",
		"\noverlaylab_lease_renewals_total{network=\"blue\"} 0\n",
		`overlaylab_dropped_packets_total{network="red",reason="spoofed"} 0`,
	)
	if err := ra.stop(t); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}

	// A restart keeps each network's subnet (from its own env file).
	before := map[string]netip.Prefix{}
	for name := range want {
		env, _ := subnetenv.Read(envPath(opts.SubnetDir, name))
		before[name] = env.LeaseSubnet()
	}
	lb2 := &logBuffer{}
	opts2 := networksOptions(t, lb2, prefix, "red", "blue")
	opts2.SubnetDir = opts.SubnetDir
	ra2 := startAgentWith(t, opts2, lb2, &recorder{}, map[string]backend.Factory{config.BackendVXLAN: newTableDatapath().factory})
	eventually(t, 15*time.Second, "the restarted agent to be ready", func() bool {
		code, _, _, err := ra2.get("/readyz")
		return err == nil && code == 200
	})
	for name, p := range before {
		if env, err := subnetenv.Read(envPath(opts.SubnetDir, name)); err != nil || env.LeaseSubnet() != p {
			t.Errorf("%s after restart: %+v, %v; want %s again", name, env, err, p)
		}
	}
}

// TestAgentNetworksRefused: configs one agent cannot serve together end
// Run at once with an error naming both networks.
func TestAgentNetworksRefused(t *testing.T) {
	for _, tc := range []struct {
		name, red, blue, want string
	}{
		{"one VNI", `{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":3}}`, `{"Network":"10.60.0.0/16","Backend":{"Type":"vxlan","VNI":3}}`,
			"networks red and blue both use VNI 3"},
		{"one udp port", `{"Network":"10.50.0.0/16","Backend":{"Type":"udp"}}`, `{"Network":"10.50.0.0/16","Backend":{"Type":"udp"}}`,
			"networks red and blue both use udp port 8285"},
		{"host-gw overlap", `{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}`, `{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}`,
			"host-gw networks red (10.50.0.0/16) and blue (10.50.0.0/16) overlap"},
		{"mixed", `{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}`, `{"Network":"10.60.0.0/16","Backend":{"Type":"vxlan"}}`,
			"networks red (host-gw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := etcdClient(t)
			prefix := testPrefix(t)
			etcdPut(t, cli, prefix+"/red/config", tc.red)
			etcdPut(t, cli, prefix+"/blue/config", tc.blue)
			lb := &logBuffer{}
			rec := &recorder{}
			ra := startAgentWith(t, networksOptions(t, lb, prefix, "red", "blue"), lb, rec, nil)
			var err error
			eventually(t, 10*time.Second, "Run to return", func() bool {
				var done bool
				err, done = ra.exited()
				return done
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--networks red,blue") {
				t.Errorf("Run = %v, want an error with %q", err, tc.want)
			}
			if keys := leaseKeys(t, cli, prefix); len(keys) != 2 {
				t.Errorf("keys after the refusal = %v, want only the two configs (no lease)", keys)
			}
			if s := rec.snapshot(); len(s.resets) != 0 {
				t.Errorf("the kernel was touched before the refusal: %+v", s.resets)
			}
		})
	}
}
