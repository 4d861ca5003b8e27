package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// clearFlannelEnv unsets every FLANNELD_* and OVERLAYLAB_* variable for the
// test, so that the machine's environment cannot leak into it.
func clearFlannelEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "FLANNELD_") || strings.HasPrefix(k, "OVERLAYLAB_") {
			t.Setenv(k, "") // registers the restore
			os.Unsetenv(k)
		}
	}
}

// parseAgent builds the agent command, parses args and applies the env.
func parseAgent(t *testing.T, args ...string) (*cobra.Command, error) {
	t.Helper()
	cmd := agentCmd()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("ParseFlags(%q): %v", args, err)
	}
	return cmd, flagsFromEnv(cmd.Flags())
}

func flagString(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	v, err := cmd.Flags().GetString(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFlagsFromEnvPrefix(t *testing.T) {
	clearFlannelEnv(t)
	t.Setenv("FLANNELD_ETCD_PREFIX", "/x")

	cmd, err := parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := flagString(t, cmd, "etcd-prefix"); got != "/x" {
		t.Errorf("FLANNELD_ETCD_PREFIX=/x: --etcd-prefix = %q, want /x", got)
	}

	// The command line wins over the environment.
	cmd, err = parseAgent(t, "--etcd-prefix", "/from-flag")
	if err != nil {
		t.Fatal(err)
	}
	if got := flagString(t, cmd, "etcd-prefix"); got != "/from-flag" {
		t.Errorf("--etcd-prefix /from-flag with FLANNELD_ETCD_PREFIX=/x: got %q", got)
	}
	// Even when the flag restates the default.
	cmd, err = parseAgent(t, "--etcd-prefix="+subnet.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if got := flagString(t, cmd, "etcd-prefix"); got != subnet.DefaultPrefix {
		t.Errorf("explicit default lost to the env: got %q", got)
	}
}

func TestFlagsFromEnvDefaultsUntouched(t *testing.T) {
	clearFlannelEnv(t)
	cmd, err := parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"etcd-prefix":    "/coreos.com/network", // flanneld's: the contract, spelled out
		"etcd-endpoints": "http://127.0.0.1:2379",
		"subnet-file":    "/run/flannel/subnet.env",
		"iface":          "",
	} {
		if got := flagString(t, cmd, name); got != want {
			t.Errorf("--%s = %q without env, want the default %q", name, got, want)
		}
	}
	cmd.Flags().Visit(func(f *pflag.Flag) { t.Errorf("flag --%s marked as set without env or argument", f.Name) })
}

func TestFlagsFromEnvTypes(t *testing.T) {
	clearFlannelEnv(t)
	t.Setenv("FLANNELD_IP_MASQ", "true")
	t.Setenv("FLANNELD_HEALTHZ_PORT", "9285")
	t.Setenv("FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "30")
	t.Setenv("FLANNELD_ETCD_ENDPOINTS", "http://10.0.0.1:2379,http://10.0.0.2:2379")
	t.Setenv("FLANNELD_ETCD_CAFILE", "/etc/ca.pem")
	t.Setenv("FLANNELD_PUBLIC_IP", "192.0.2.9")
	t.Setenv("FLANNELD_V", "2")

	cmd, err := parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	if v, err := f.GetBool("ip-masq"); err != nil || !v {
		t.Errorf("FLANNELD_IP_MASQ=true: --ip-masq = %v, %v", v, err)
	}
	if v, err := f.GetInt("healthz-port"); err != nil || v != 9285 {
		t.Errorf("FLANNELD_HEALTHZ_PORT=9285: --healthz-port = %v, %v", v, err)
	}
	if v, err := f.GetInt("subnet-lease-renew-margin"); err != nil || v != 30 {
		t.Errorf("FLANNELD_SUBNET_LEASE_RENEW_MARGIN=30: got %v, %v", v, err)
	}
	if v, err := f.GetInt("v"); err != nil || v != 2 {
		t.Errorf("FLANNELD_V=2: -v = %v, %v", v, err)
	}
	for name, want := range map[string]string{
		"etcd-endpoints": "http://10.0.0.1:2379,http://10.0.0.2:2379",
		"etcd-cafile":    "/etc/ca.pem",
		"public-ip":      "192.0.2.9",
	} {
		if got := flagString(t, cmd, name); got != want {
			t.Errorf("--%s = %q, want %q from the env", name, got, want)
		}
	}

	// A bool given on the command line is not overridden by the env.
	t.Setenv("FLANNELD_IP_MASQ", "true")
	cmd, err = parseAgent(t, "--ip-masq=false")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := cmd.Flags().GetBool("ip-masq"); v {
		t.Errorf("--ip-masq=false lost to FLANNELD_IP_MASQ=true")
	}
}

func TestFlagsFromEnvBadValues(t *testing.T) {
	for _, tc := range []struct{ env, val string }{
		{"FLANNELD_HEALTHZ_PORT", "abc"},
		{"FLANNELD_IP_MASQ", "maybe"},
		{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN", "1h"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			clearFlannelEnv(t)
			t.Setenv(tc.env, tc.val)
			_, err := parseAgent(t)
			if err == nil {
				t.Fatalf("%s=%s accepted", tc.env, tc.val)
			}
			if !strings.Contains(err.Error(), tc.env) || !strings.Contains(err.Error(), tc.val) {
				t.Errorf("error %q does not name %s and its value %q", err, tc.env, tc.val)
			}
		})
	}

	// A bad env value for a flag given on the command line is never read.
	clearFlannelEnv(t)
	t.Setenv("FLANNELD_HEALTHZ_PORT", "abc")
	cmd, err := parseAgent(t, "--healthz-port", "1234")
	if err != nil {
		t.Fatalf("env ignored for a given flag, yet: %v", err)
	}
	if v, _ := cmd.Flags().GetInt("healthz-port"); v != 1234 {
		t.Errorf("--healthz-port = %d, want 1234", v)
	}
}

// TestAgentCmdRefuses covers the checks RunE makes before it would start an
// agent; each must fail without contacting anything.
func TestAgentCmdRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"renew margin 0", []string{"--subnet-lease-renew-margin", "0"}, nil, "--subnet-lease-renew-margin"},
		{"renew margin from env", nil, map[string]string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "-5"}, "--subnet-lease-renew-margin"},
		{"healthz port too big", []string{"--healthz-port", "70000"}, nil, "--healthz-port"},
		{"negative healthz port", []string{"--healthz-port=-1"}, nil, "--healthz-port"},
		{"bad env healthz port", nil, map[string]string{"FLANNELD_HEALTHZ_PORT": "abc"}, "FLANNELD_HEALTHZ_PORT"},
		{"no endpoints", []string{"--etcd-endpoints", " , "}, nil, "--etcd-endpoints"},
		{"bad lease TTL", nil, map[string]string{"OVERLAYLAB_LEASE_TTL": "500ms"}, "OVERLAYLAB_LEASE_TTL"},
		{"bad renew margin knob", nil, map[string]string{"OVERLAYLAB_RENEW_MARGIN": "soon"}, "OVERLAYLAB_RENEW_MARGIN"},
		{"positional argument", []string{"extra"}, nil, "extra"},
		{"udp workers negative", []string{"--udp-workers=-1"}, nil, "--udp-workers -1"},
		{"udp workers too many", []string{"--udp-workers", "1025"}, nil, "--udp-workers 1025"},
		{"udp workers from env", nil, map[string]string{"FLANNELD_UDP_WORKERS": "4096"}, "--udp-workers 4096"},
		{"udp mode", []string{"--udp-mode", "turbo"}, nil, "--udp-mode"},
		{"public IP", []string{"--public-ip", "host1"}, nil, "--public-ip"},
		{"pprof without healthz", []string{"--pprof"}, nil, "--pprof"},
		{"lease TTL flag", []string{"--lease-ttl", "100ms"}, nil, "--lease-ttl"},
		{"cert without key", []string{"--etcd-certfile", "/nonexistent/c.pem"}, nil, "--etcd-keyfile"},
		{"network name upper case", []string{"--networks", "Red", "--subnet-dir", "/tmp/x"}, nil, `network name "Red"`},
		{"network name too long", []string{"--networks", "red,abcdefghi", "--subnet-dir", "/tmp/x"}, nil, `network name "abcdefghi"`},
		{"network listed twice", []string{"--networks", "red,blue,red", "--subnet-dir", "/tmp/x"}, nil, `network "red" listed twice`},
		{"networks with subnet file", []string{"--networks", "red", "--subnet-dir", "/tmp/x", "--subnet-file", "/tmp/s.env"}, nil, "--networks and --subnet-file"},
		{"networks with subnet file from env", []string{"--networks", "red", "--subnet-dir", "/tmp/x"}, map[string]string{"FLANNELD_SUBNET_FILE": "/tmp/s.env"}, "--networks and --subnet-file"},
		{"networks without subnet dir", []string{"--networks", "red,blue"}, nil, "--networks needs --subnet-dir"},
		{"networks from env without subnet dir", nil, map[string]string{"FLANNELD_NETWORKS": "red"}, "--networks needs --subnet-dir"},
		{"subnet dir alone", []string{"--subnet-dir", "/tmp/x"}, nil, "only with --networks"},
		{"networks with ip-masq", []string{"--networks", "red", "--subnet-dir", "/tmp/x", "--ip-masq"}, nil, "--ip-masq with --networks is refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearFlannelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cmd := agentCmd()
			cmd.SetArgs(tc.args)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			cmd.SetOut(&strings.Builder{})
			cmd.SetErr(&strings.Builder{})
			err := cmd.ExecuteContext(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("agent %q = %v, want an error naming %s", tc.args, err, tc.want)
			}
		})
	}
}

// TestTestKnobsFromEnv: OVERLAYLAB_LEASE_TTL and OVERLAYLAB_RENEW_MARGIN set
// the hidden flags when those are not given; the command line wins.
func TestTestKnobsFromEnv(t *testing.T) {
	clearFlannelEnv(t)
	t.Setenv("OVERLAYLAB_LEASE_TTL", "10s")
	t.Setenv("OVERLAYLAB_RENEW_MARGIN", "4s")
	cmd, err := parseAgent(t, "--lease-renew-margin", "7s")
	if err != nil {
		t.Fatal(err)
	}
	if err := knobsFromEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	if v, _ := cmd.Flags().GetDuration("lease-ttl"); v != 10*time.Second {
		t.Errorf("--lease-ttl = %v, want 10s from OVERLAYLAB_LEASE_TTL", v)
	}
	if v, _ := cmd.Flags().GetDuration("lease-renew-margin"); v != 7*time.Second {
		t.Errorf("--lease-renew-margin = %v, want 7s from the command line over OVERLAYLAB_RENEW_MARGIN", v)
	}
}

// TestUDPWorkersFlag: --udp-workers (and FLANNELD_UDP_WORKERS) reach the
// options; the default is 0, the backend's choice.
func TestUDPWorkersFlag(t *testing.T) {
	clearFlannelEnv(t)
	cmd, err := parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cmd.Flags().GetInt("udp-workers"); err != nil || v != 0 {
		t.Errorf("--udp-workers default = %d, %v; want 0", v, err)
	}
	t.Setenv("FLANNELD_UDP_WORKERS", "8")
	cmd, err = parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := cmd.Flags().GetInt("udp-workers"); v != 8 {
		t.Errorf("FLANNELD_UDP_WORKERS=8: --udp-workers = %d", v)
	}
}

// TestNetworksFlagsStart: --networks with --subnet-dir (and flanneld's
// default --subnet-file left alone) passes the checks and starts the
// agent, which then waits for etcd until its context ends; no network is
// touched before their configs are read.
func TestNetworksFlagsStart(t *testing.T) {
	clearFlannelEnv(t)
	for _, args := range [][]string{
		{"--networks", "red,blue", "--subnet-dir", t.TempDir()},
		{"--networks", " red , blue ", "--subnet-dir", t.TempDir()}, // spaces, as in a hand-written unit file
	} {
		cmd := agentCmd()
		cmd.SetArgs(append(args, "--etcd-endpoints", "http://127.0.0.1:1", "--iface", "lo"))
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		ctx, cancel := context.WithCancel(t.Context())
		stop := time.AfterFunc(1500*time.Millisecond, cancel)
		err := cmd.ExecuteContext(ctx)
		early := stop.Stop() // the timer had not fired: the agent returned on its own
		cancel()
		if err != nil || early {
			t.Errorf("agent %q = %v (returned before its context ended: %v), want it to run until its context ends", args, err, early)
		}
	}
}
