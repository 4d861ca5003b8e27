package overlay

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/loopetcd"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// etcdOutage is long enough for gRPC's default reconnect backoff to grow
// past the lease TTL's margin (1 s, 1.6 s, 2.6 s, ... 10 s between dials).
const etcdOutage = 45 * time.Second

// TestLeaseSurvivesEtcdOutage: with a 10 s lease TTL, an agent must renew
// its lease promptly once etcd returns from an outage. etcd restarts every
// lease's TTL when it comes back, so the lease survives exactly when the
// agent renews before that fresh TTL runs out; a late agent finds its key
// deleted and re-acquires it (every peer sees it leave and come back).
// The real embedded etcd is stopped and restarted on the same ports.
func TestLeaseSurvivesEtcdOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("stops etcd for 20 s")
	}
	te, cli := ownEtcd(t)
	prefix := testPrefix(t)
	etcdPut(t, cli, prefix+"/config", `{"Network":"10.44.0.0/16","Backend":{"Type":"host-gw"}}`)

	const ttl = 10 * time.Second
	lb := &logBuffer{}
	opts := agentOptions(t, lb)
	opts.EtcdEndpoints = []string{te.Endpoint}
	opts.EtcdPrefix = prefix
	opts.PublicIP = "127.0.0.1"
	opts.LeaseTTL = ttl
	opts.LeaseRenewMargin = 5 * time.Second
	ra := startAgent(t, opts, lb)
	eventually(t, 15*time.Second, "the agent to be ready", func() bool { return ra.agent.nets[0].ready.Load() })
	mgr := ra.agent.nets[0].mgr.Load()
	key, before := leaseKV(t, cli, prefix)

	te.Stop()
	time.Sleep(etcdOutage)
	if err := te.Restart(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	renewed := mgr.Stats().Renewals
	eventually(t, 3*ttl, "a renewal after etcd's return", func() bool { return mgr.Stats().Renewals > renewed })
	took := time.Since(back)
	t.Logf("lease renewed %v after etcd returned from a %v outage (TTL %v)", took.Round(10*time.Millisecond), etcdOutage, ttl)

	if err, done := ra.exited(); done {
		t.Fatalf("agent exited: %v", err)
	}
	if n := mgr.Stats().Reacquired; n != 0 {
		t.Errorf("the lease was lost and re-acquired %d times; it should have survived the outage", n)
	}
	k2, after := leaseKV(t, cli, prefix)
	if k2 != key || after.CreateRevision != before.CreateRevision || after.Lease != before.Lease {
		t.Errorf("lease key %s (created at revision %d, etcd lease %x) is now %s (created at %d, lease %x): it was re-created",
			key, before.CreateRevision, before.Lease, k2, after.CreateRevision, after.Lease)
	}
	if took >= ttl {
		t.Errorf("renewed %v after etcd's return, not before the %v TTL ran out", took, ttl)
	}
}

// ownEtcd starts an etcd of the test's own (the test stops and restarts
// it, which the shared one must never see) and a client of it.
func ownEtcd(t *testing.T) (*loopetcd.Server, *clientv3.Client) {
	t.Helper()
	te, err := loopetcd.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(te.Stop)
	cli, err := te.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return te, cli
}

// leaseKV returns the one lease key under prefix and its etcd metadata.
func leaseKV(t *testing.T, cli *clientv3.Client, prefix string) (string, struct{ CreateRevision, Lease int64 }) {
	t.Helper()
	var kv struct{ CreateRevision, Lease int64 }
	var resp *clientv3.GetResponse
	eventually(t, 15*time.Second, "etcd to answer", func() bool {
		var err error
		resp, err = cli.Get(t.Context(), prefix+"/subnets/", clientv3.WithPrefix())
		return err == nil
	})
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d lease keys under %s, want 1", len(resp.Kvs), prefix)
	}
	kv.CreateRevision, kv.Lease = resp.Kvs[0].CreateRevision, resp.Kvs[0].Lease
	return string(resp.Kvs[0].Key), kv
}

// TestListLeasesWaitsForEtcd: an agent that holds its lease and has
// configured its datapath does not give up when listing the peers fails (an
// etcd busy with hundreds of agents starting at once times out requests):
// it retries until etcd answers. Before, the agent exited.
func TestListLeasesWaitsForEtcd(t *testing.T) {
	te, cli := ownEtcd(t)
	mgr := subnet.NewManager(cli, subnet.Options{Prefix: "/list", RequestTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/list/subnets/10.10.7.0-24", `{"PublicIP":"192.168.77.7","BackendType":"udp"}`); err != nil {
		t.Fatal(err)
	}
	te.Stop()
	time.AfterFunc(1500*time.Millisecond, func() {
		if err := te.Restart(); err != nil {
			t.Error(err)
		}
	})
	n := &network{log: slog.New(slog.DiscardHandler)}
	leases, _, err := n.listLeases(ctx, mgr)
	if err != nil {
		t.Fatalf("gave up: %v", err)
	}
	if len(leases) != 1 || leases[0].Subnet.String() != "10.10.7.0/24" {
		t.Fatalf("leases after etcd came back: %v", leases)
	}
	// And it gives up only when told to.
	te.Stop()
	short, cancelShort := context.WithTimeout(t.Context(), time.Second)
	defer cancelShort()
	if _, _, err := n.listLeases(short, mgr); err == nil || !strings.Contains(err.Error(), "list leases") {
		t.Fatalf("with etcd gone and the context ended: %v", err)
	}
}
