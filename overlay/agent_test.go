package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/internal/loopetcd"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

const defaultConfigKey = subnet.DefaultPrefix + "/config"

// mustContainAll fails the test for every want missing from got.
func mustContainAll(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q; got:\n%s", what, w, got)
		}
	}
}

// waitingLogged reports whether the agent logged that it waits for a config
// at key and, if errSubstr is set, named that error.
func waitingLogged(log, key, errSubstr string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "waiting for a valid network config") &&
			strings.Contains(line, "key="+key) && strings.Contains(line, errSubstr) {
			return true
		}
	}
	return false
}

// portClosed reports whether nothing accepts connections on the port.
func portClosed(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestAgentWithoutConfig follows an agent started before anyone wrote the
// network config: it serves health and metrics, is not ready, says what it
// waits for, survives a malformed config and stops cleanly.
func TestAgentWithoutConfig(t *testing.T) {
	cli := etcdClient(t)
	// The default prefix is shared by nothing else in this package, but an
	// earlier -count run may have left its malformed config behind.
	etcdDeletePrefix(t, cli, subnet.DefaultPrefix+"/")
	t.Cleanup(func() { etcdDeletePrefix(t, cli, subnet.DefaultPrefix+"/") })

	lb := &logBuffer{}
	opts := agentOptions(t, lb) // EtcdPrefix empty: the default applies
	ra := startAgent(t, opts, lb)

	eventually(t, 10*time.Second, "/healthz to answer", func() bool {
		code, _, _, err := ra.get("/healthz")
		return err == nil && code == 200
	})
	eventually(t, 10*time.Second, "the agent to log that it waits for "+defaultConfigKey, func() bool {
		return waitingLogged(lb.String(), defaultConfigKey, "not found")
	})

	code, body, _, err := ra.get("/readyz")
	if err != nil || code != 503 {
		t.Errorf("/readyz without a config = %d %q, %v; want 503", code, body, err)
	}
	code, body, hdr, err := ra.get("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics = %d, %v; want 200", code, err)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type = %q, want text/plain", ct)
	}
	mustContainAll(t, "/metrics", body,
		"\noverlaylab_ready 0\n",
		"\noverlaylab_peers 0\n",
		"# TYPE overlaylab_ready gauge\n",
		"# TYPE overlaylab_dropped_packets_total counter\n",
		`overlaylab_dropped_packets_total{reason="no_route"} 0`,
		`overlaylab_dropped_packets_total{reason="spoofed"} 0`,
		"\noverlaylab_lease_renewals_total 0\n",
	)
	checkPromText(t, body)
	if err, done := ra.exited(); done {
		t.Fatalf("agent exited while waiting for a config: %v", err)
	}

	// A malformed value is reported as a parse problem, and the agent keeps
	// waiting rather than exiting.
	etcdPut(t, cli, defaultConfigKey, `{"Network":`)
	eventually(t, 15*time.Second, "the agent to report the malformed config", func() bool {
		return waitingLogged(lb.String(), defaultConfigKey, "malformed JSON")
	})
	if code, _, _, err := ra.get("/readyz"); err != nil || code != 503 {
		t.Errorf("/readyz with a malformed config = %d, %v; want 503", code, err)
	}
	if code, _, _, err := ra.get("/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz with a malformed config = %d, %v; want 200", code, err)
	}
	if err, done := ra.exited(); done {
		t.Fatalf("agent exited on a malformed config: %v", err)
	}

	start := time.Now()
	err = ra.stop(t)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want nil or context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	// The server is closed by a goroutine that watches the context, so allow
	// it a moment after Run has returned.
	eventually(t, 2*time.Second, "the HTTP port to close", func() bool { return portClosed(ra.port) })
}

// checkPromText checks every non-comment line is `name[{labels}] integer`
// and every metric has HELP and TYPE, which is all a scraper needs.
func checkPromText(t *testing.T, body string) {
	t.Helper()
	typed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || (f[1] != "gauge" && f[1] != "counter") {
				t.Errorf("bad TYPE line %q", line)
				continue
			}
			if typed[f[0]] {
				t.Errorf("metric %s typed twice", f[0])
			}
			typed[f[0]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Errorf("bad sample line %q", line)
			continue
		}
		name, _, _ := strings.Cut(f[0], "{")
		if !typed[name] {
			t.Errorf("sample %q before its # TYPE", line)
		}
		var v uint64
		if _, err := fmt.Sscan(f[1], &v); err != nil {
			t.Errorf("sample %q: value not an integer", line)
		}
	}
}

// TestAgentCustomPrefix: --etcd-prefix moves the config key, and the agent
// looks there and only there.
func TestAgentCustomPrefix(t *testing.T) {
	for _, tc := range []struct{ name, prefix, key string }{
		{"plain", "/custom/overlay", "/custom/overlay/config"},
		{"trailing slash", "/custom/overlay2/", "/custom/overlay2/config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli := etcdClient(t)
			etcdDeletePrefix(t, cli, strings.TrimRight(tc.prefix, "/")+"/")
			lb := &logBuffer{}
			opts := agentOptions(t, lb)
			opts.EtcdPrefix = tc.prefix
			opts.HealthzPort = 0 // no HTTP server: nothing to wait for
			ra := startAgent(t, opts, lb)
			eventually(t, 10*time.Second, "the agent to wait for "+tc.key, func() bool {
				return strings.Contains(lb.String(), "waiting for a valid network config") &&
					strings.Contains(lb.String(), "get config "+tc.key+":")
			})
			if strings.Contains(lb.String(), defaultConfigKey) {
				t.Errorf("with --etcd-prefix %s the log still names %s:\n%s", tc.prefix, defaultConfigKey, lb.String())
			}
			if err, done := ra.exited(); done {
				t.Fatalf("agent exited: %v", err)
			}
			if err := ra.stop(t); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run after cancel = %v", err)
			}
		})
	}
}

// TestAgentReadyHostGW runs the whole agent without root: the host-gw
// backend needs no device for its own subnet, and the only peer written here
// is one it refuses, so no route is ever installed (not even as root). The
// agent must lease a subnet, write subnet.env, turn ready, log config
// changes without acting on them, and reuse its subnet on restart.
func TestAgentReadyHostGW(t *testing.T) {
	cli := etcdClient(t)
	prefix := testPrefix(t)
	cfgKey := prefix + "/config"
	etcdPut(t, cli, cfgKey, `{"Network":"10.42.0.0/16","SubnetLen":24,"MTU":1400,"Backend":{"Type":"host-gw"}}`)

	lb := &logBuffer{}
	opts := agentOptions(t, lb)
	opts.EtcdPrefix = prefix
	opts.PublicIP = "127.0.0.1"
	ra := startAgent(t, opts, lb)

	eventually(t, 15*time.Second, "/readyz 200", func() bool {
		code, _, _, err := ra.get("/readyz")
		return err == nil && code == 200
	})
	_, metrics, _, err := ra.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mustContainAll(t, "/metrics", metrics, "\noverlaylab_ready 1\n", "\noverlaylab_peers 0\n")
	checkPromText(t, metrics)

	env, err := subnetenv.Read(opts.SubnetFile)
	if err != nil {
		t.Fatalf("subnet.env: %v", err)
	}
	if env.Network != netip.MustParsePrefix("10.42.0.0/16") || env.MTU != 1400 || env.IPMasq {
		t.Errorf("subnet.env = %+v, want Network 10.42.0.0/16, MTU 1400, IPMasq false", env)
	}
	lease := env.LeaseSubnet()
	if lease.Bits() != 24 || env.Subnet.Addr() != lease.Addr().Next() || !env.Network.Contains(lease.Addr()) {
		t.Fatalf("subnet.env Subnet %s is not the .1 of a /24 in the Network", env.Subnet)
	}
	if lease.Addr() == netip.MustParseAddr("10.42.0.0") {
		t.Errorf("leased the Network's first subnet %s, which flannel skips", lease)
	}

	// The lease is in etcd in flannel's format, attached to an etcd lease.
	leaseKey := prefix + "/subnets/" + strings.ReplaceAll(lease.String(), "/", "-")
	resp, err := cli.Get(t.Context(), leaseKey)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s = %v, %v; want one key", leaseKey, resp, err)
	}
	var val map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &val); err != nil {
		t.Fatalf("lease value %q: %v", resp.Kvs[0].Value, err)
	}
	if val["PublicIP"] != "127.0.0.1" || val["BackendType"] != "host-gw" {
		t.Errorf("lease value = %s, want PublicIP 127.0.0.1 and BackendType host-gw", resp.Kvs[0].Value)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Errorf("lease key %s is not attached to an etcd lease", leaseKey)
	}

	// A peer the backend cannot use is reported and skipped. It has both
	// another backend type and no PublicIP, so that host-gw refuses it before
	// touching the kernel's routes even when this test runs as root.
	etcdPut(t, cli, prefix+"/subnets/10.42.200.0-24", `{"PublicIP":"","PublicIPv6":null,"BackendType":"udp","BackendData":null}`)
	eventually(t, 10*time.Second, "the agent to refuse the peer", func() bool {
		return strings.Contains(lb.String(), "add peer failed") && strings.Contains(lb.String(), "10.42.200.0/24")
	})
	if _, m, _, _ := ra.get("/metrics"); !strings.Contains(m, "\noverlaylab_peers 0\n") {
		t.Errorf("a skipped peer was counted:\n%s", m)
	}

	// Config rewrites while running are reported, never applied.
	etcdPut(t, cli, cfgKey, `{"Network":`)
	eventually(t, 10*time.Second, "the agent to report the invalid config", func() bool {
		return strings.Contains(lb.String(), "network config in etcd is now invalid")
	})
	etcdPut(t, cli, cfgKey, `{"Network":"10.43.0.0/16","Backend":{"Type":"host-gw"}}`)
	eventually(t, 10*time.Second, "the agent to report the changed config", func() bool {
		return strings.Contains(lb.String(), "restart the agent to apply it")
	})
	if code, _, _, err := ra.get("/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz after config rewrites = %d, %v; want 200", code, err)
	}
	if err, done := ra.exited(); done {
		t.Fatalf("agent exited: %v", err)
	}
	if err := ra.stop(t); err != nil {
		t.Errorf("Run after cancel = %v, want nil once running", err)
	}
	eventually(t, 2*time.Second, "the HTTP port to close", func() bool { return portClosed(ra.port) })

	// Restart with the lease gone from etcd (as if it expired) and a new
	// public IP: only subnet.env remembers the subnet, and it must be reused.
	etcdPut(t, cli, cfgKey, `{"Network":"10.42.0.0/16","SubnetLen":24,"MTU":1400,"Backend":{"Type":"host-gw"}}`)
	if _, err := cli.Delete(t.Context(), leaseKey); err != nil {
		t.Fatal(err)
	}
	lb2 := &logBuffer{}
	opts2 := agentOptions(t, lb2)
	opts2.EtcdPrefix, opts2.SubnetFile, opts2.PublicIP = prefix, opts.SubnetFile, "127.0.0.3"
	ra2 := startAgent(t, opts2, lb2)
	eventually(t, 15*time.Second, "the restarted agent to be ready", func() bool {
		code, _, _, err := ra2.get("/readyz")
		return err == nil && code == 200
	})
	env2, err := subnetenv.Read(opts2.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if env2.LeaseSubnet() != lease {
		t.Errorf("restarted agent leased %s, want %s from subnet.env", env2.LeaseSubnet(), lease)
	}
	resp, err = cli.Get(t.Context(), leaseKey)
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"127.0.0.3"`) {
		t.Errorf("lease %s after restart = %v, %v; want it held by 127.0.0.3", leaseKey, resp, err)
	}
	if err := ra2.stop(t); err != nil {
		t.Errorf("second Run after cancel = %v", err)
	}
}

func TestNewNeedsEndpoints(t *testing.T) {
	for _, eps := range [][]string{nil, {}} {
		a, err := New(Options{EtcdEndpoints: eps})
		if err == nil || a != nil {
			t.Errorf("New(endpoints %#v) = %v, %v; want an error", eps, a, err)
			continue
		}
		if !strings.Contains(err.Error(), "--etcd-endpoints") {
			t.Errorf("New error %q does not name --etcd-endpoints", err)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	a, err := New(Options{EtcdEndpoints: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	// flanneld's values, spelled out: they are the compatibility contract.
	if a.opts.EtcdPrefix != "/coreos.com/network" || a.opts.SubnetFile != "/run/flannel/subnet.env" || a.log == nil {
		t.Errorf("defaults = prefix %q, subnet file %q, logger %v", a.opts.EtcdPrefix, a.opts.SubnetFile, a.log)
	}
	if a.opts.renewMargin() != time.Hour || a.opts.UDPMode != "fast" {
		t.Errorf("defaults = renew margin %v, udp mode %q; want 1h and fast", a.opts.renewMargin(), a.opts.UDPMode)
	}
}

// TestRunRefusesBadOptions: mistakes in the options end Run at once with an
// error that names the flag, before any waiting.
func TestRunRefusesBadOptions(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"missing CA file", func(o *Options) { o.EtcdCAFile = t.TempDir() + "/nope.pem" }, "--etcd-cafile"},
		{"cert without key", func(o *Options) { o.EtcdCertFile = "/nonexistent/cert.pem" }, "--etcd-keyfile"},
		{"unknown iface", func(o *Options) { o.Iface = "nosuchif0" }, "--iface"},
		{"iface address nobody has", func(o *Options) { o.Iface = "192.0.2.123" }, "--iface"},
		{"bad public IP", func(o *Options) { o.PublicIP = "not-an-ip" }, "--public-ip"},
		{"IPv6 public IP", func(o *Options) { o.PublicIP = "::1" }, "--public-ip"},
		{"healthz port in use", func(o *Options) { o.HealthzPort = busyPort }, "--healthz-port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb := &logBuffer{}
			opts := agentOptions(t, lb)
			tc.mod(&opts)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			// Mistakes in the values are refused by New (Options.Validate),
			// mistakes only the system can show (files, interfaces, ports)
			// by Run; either way at once.
			a, err := New(opts)
			if err == nil {
				err = a.Run(ctx)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want an error naming %s", err, tc.want)
			}
			if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
				t.Errorf("Run took %v to refuse the options", time.Since(start))
			}
		})
	}
}

// TestRunIfaceByAddress: --iface may name the interface by its address.
func TestRunIfaceByAddress(t *testing.T) {
	ext, err := findExternal("127.0.0.1", "")
	if err != nil {
		t.Fatal(err)
	}
	if ext.Iface.Flags&net.FlagLoopback == 0 || ext.LocalIP != netip.MustParseAddr("127.0.0.1") || ext.PublicIP != ext.LocalIP {
		t.Errorf("findExternal(127.0.0.1) = %s %s %s", ext.Iface.Name, ext.LocalIP, ext.PublicIP)
	}
	ext, err = findExternal("lo", "203.0.113.7")
	if err != nil {
		t.Fatal(err)
	}
	if ext.PublicIP != netip.MustParseAddr("203.0.113.7") || ext.LocalIP != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("--public-ip not published: %+v", ext)
	}
}

// TestUnreachableEtcd: an etcd that does not answer is retried and logged,
// not fatal, and cancel still ends Run.
func TestUnreachableEtcd(t *testing.T) {
	port, err := loopetcd.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuffer{}
	opts := agentOptions(t, lb)
	opts.EtcdEndpoints = []string{fmt.Sprintf("http://127.0.0.1:%d", port)}
	ra := startAgent(t, opts, lb)
	eventually(t, 10*time.Second, "/healthz", func() bool {
		code, _, _, err := ra.get("/healthz")
		return err == nil && code == 200
	})
	if code, _, _, _ := ra.get("/readyz"); code != 503 {
		t.Errorf("/readyz = %d, want 503", code)
	}
	// Each etcd request gives up after the manager's 5 s request timeout;
	// the failure is logged and retried.
	eventually(t, 12*time.Second, "the agent to log the failed config read", func() bool {
		return waitingLogged(lb.String(), defaultConfigKey, "get config")
	})
	if err, done := ra.exited(); done {
		t.Fatalf("agent exited: %v", err)
	}
	if err := ra.stop(t); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}
