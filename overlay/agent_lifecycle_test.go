package overlay

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// metricValue reads one sample from the agent's /metrics (-1 if absent).
func metricValue(t *testing.T, ra *runningAgent, name string) int64 {
	t.Helper()
	code, body, _, err := ra.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics = %d, %v", code, err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\d+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// hostGWAgent starts an agent on the host-gw backend over loopback. Every
// peer the tests write is one host-gw refuses before touching the kernel.
func hostGWAgent(t *testing.T, network string, mod func(*Options), rec *recorder) (*runningAgent, *logBuffer, string) {
	t.Helper()
	cli := etcdClient(t)
	prefix := testPrefix(t)
	etcdPut(t, cli, prefix+"/config", `{"Network":"`+network+`","Backend":{"Type":"host-gw"}}`)
	lb := &logBuffer{}
	opts := agentOptions(t, lb)
	opts.EtcdPrefix = prefix
	opts.PublicIP = "127.0.0.1"
	if mod != nil {
		mod(&opts)
	}
	ra := startRecordedAgent(t, opts, lb, rec)
	eventually(t, 15*time.Second, "the agent to be ready", func() bool {
		code, _, _, err := ra.get("/readyz")
		return err == nil && code == 200
	})
	return ra, lb, prefix
}

// agentGoroutines lists the stacks of goroutines running the agent's own
// loops (the datapath's Run, the lease keeper, both watches, the event
// loop, the HTTP server).
func agentGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{
			"overlay/subnet.(*Manager).KeepLease", "overlay/subnet.(*leaseWatcher).run", "overlay/subnet.(*Manager).WatchConfig",
			"overlay.(*Agent).loop", "overlay.(*recorded).Run", "overlay/backend/hostgw.(*HostGW).Run", "overlay.(*Agent).serveHTTP",
		} {
			if strings.Contains(g, fn) && !strings.Contains(g, "testing.tRunner") {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// TestRunJoinsItsGoroutines: when Run returns, every goroutine it started
// has ended, and the backend was closed only after its datapath's Run had
// returned (a datapath that takes a moment to drain must not have its
// device closed under it).
func TestRunJoinsItsGoroutines(t *testing.T) {
	rec := &recorder{runDrain: 300 * time.Millisecond}
	ra, _, _ := hostGWAgent(t, "10.46.0.0/16", nil, rec)
	if len(agentGoroutines()) == 0 {
		t.Fatal("no agent goroutine found while it runs: the check below would prove nothing")
	}
	if err := ra.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if left := agentGoroutines(); len(left) > 0 {
		t.Errorf("%d of the agent's goroutines still run after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	got := rec.snapshot()
	switch {
	case got.closes != 1:
		t.Errorf("backend closed %d times, want once", got.closes)
	case got.closedLive || got.closedAt.Before(got.runEnded):
		t.Errorf("backend closed while its Run still ran (Run ended %v, Close at %v)", got.runEnded.Format(time.StampMicro), got.closedAt.Format(time.StampMicro))
	}
	if got.reconciles < 1 {
		t.Errorf("Reconcile called %d times; the agent must reconcile once its peers are programmed", got.reconciles)
	}
}

// TestRunReportsDatapathFailure: an error from one of Run's goroutines ends
// Run with that error, after the others have stopped, and Close still
// comes after the datapath's Run.
func TestRunReportsDatapathFailure(t *testing.T) {
	rec := &recorder{runErr: errors.New("device vanished")}
	cli := etcdClient(t)
	prefix := testPrefix(t)
	etcdPut(t, cli, prefix+"/config", `{"Network":"10.47.0.0/16","Backend":{"Type":"host-gw"}}`)
	lb := &logBuffer{}
	opts := agentOptions(t, lb)
	opts.EtcdPrefix, opts.PublicIP = prefix, "127.0.0.1"
	ra := startRecordedAgent(t, opts, lb, rec)
	var err error
	eventually(t, 15*time.Second, "Run to return", func() bool {
		var done bool
		err, done = ra.exited()
		return done
	})
	if err == nil || !strings.Contains(err.Error(), "datapath: device vanished") {
		t.Errorf("Run = %v, want the datapath's error", err)
	}
	if left := agentGoroutines(); len(left) > 0 {
		t.Errorf("%d of the agent's goroutines still run after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
	if got := rec.snapshot(); got.closes != 1 || got.closedAt.Before(got.runEnded) {
		t.Errorf("backend closed %d times, at %v, datapath ended %v; want once, after", got.closes, got.closedAt, got.runEnded)
	}
}

// TestSubnetEnvFailureKeepsDatapath: once running, a subnet.env that cannot
// be written never stops the agent. A same-subnet re-acquire writes
// nothing (the content did not change); a re-acquire with another subnet
// fails to write, is counted on /metrics and retried until the file can be
// written again.
func TestSubnetEnvFailureKeepsDatapath(t *testing.T) {
	dir := t.TempDir()
	envPath := filepath.Join(dir, "flannel", "subnet.env")
	rec := &recorder{}
	ra, lb, prefix := hostGWAgent(t, "10.48.0.0/16", func(o *Options) { o.SubnetFile = envPath }, rec)
	cli := etcdClient(t)
	first, err := subnetenv.Read(envPath)
	if err != nil {
		t.Fatal(err)
	}
	leaseKey := prefix + "/subnets/" + strings.ReplaceAll(first.LeaseSubnet().String(), "/", "-")

	// The file's directory becomes a plain file: no write can succeed.
	if err := os.RemoveAll(filepath.Dir(envPath)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Dir(envPath), []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Same subnet again: nothing to write, nothing can fail.
	if _, err := cli.Delete(t.Context(), leaseKey); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the lease to be re-acquired", func() bool {
		return metricValue(t, ra, "overlaylab_lease_reacquired_total") == 1
	})
	eventually(t, 5*time.Second, "the agent to log the re-acquire", func() bool {
		return strings.Contains(lb.String(), `msg="lease re-acquired" subnet=`+first.LeaseSubnet().String())
	})
	if err, done := ra.exited(); done {
		t.Fatalf("the agent exited after a same-subnet re-acquire with subnet.env unwritable: %v", err)
	}
	if n := metricValue(t, ra, "overlaylab_subnet_env_write_failures_total"); n != 0 {
		t.Errorf("%d subnet.env writes failed after a same-subnet re-acquire; unchanged content must not be written", n)
	}

	// Another host takes our subnet: the agent re-acquires another one and
	// must tell subnet.env, which fails until the directory is back.
	etcdPut(t, cli, leaseKey, `{"PublicIP":"127.0.0.9","PublicIPv6":null,"BackendType":"udp","BackendData":null}`)
	eventually(t, 15*time.Second, "a failed write on /metrics", func() bool {
		return metricValue(t, ra, "overlaylab_subnet_env_write_failures_total") >= 1 &&
			metricValue(t, ra, "overlaylab_subnet_env_pending") == 1
	})
	if err, done := ra.exited(); done {
		t.Fatalf("the agent exited when subnet.env could not be written: %v", err)
	}
	if code, _, _, err := ra.get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz = %d, %v while subnet.env lags; the datapath still runs", code, err)
	}
	if got := rec.snapshot(); !got.running || got.closes != 0 {
		t.Errorf("datapath running %v, closed %d times; want running and never closed", got.running, got.closes)
	}
	eventually(t, 10*time.Second, "a retry", func() bool {
		return metricValue(t, ra, "overlaylab_subnet_env_write_failures_total") >= 2
	})

	if err := os.Remove(filepath.Dir(envPath)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "subnet.env to be written on a retry", func() bool {
		return metricValue(t, ra, "overlaylab_subnet_env_pending") == 0
	})
	env, err := subnetenv.Read(envPath)
	if err != nil {
		t.Fatal(err)
	}
	if env.LeaseSubnet() == first.LeaseSubnet() || !env.Network.Contains(env.Subnet.Addr()) {
		t.Errorf("subnet.env says %s, want the newly leased subnet (not %s)", env.Subnet, first.Subnet)
	}
	if err, done := ra.exited(); done {
		t.Fatalf("agent exited: %v", err)
	}
}
