package overlay

import (
	"strings"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

func TestDefaultOptionsValid(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("DefaultOptions().Validate() = %v", err)
	}
}

// TestValidate: each mistake is refused with an error naming the flag it
// came from; the valid edges pass.
func TestValidate(t *testing.T) {
	checkValidate(t, []validateCase{
		{"no endpoints", func(o *Options) { o.EtcdEndpoints = nil }, "--etcd-endpoints"},
		{"cert without key", func(o *Options) { o.EtcdCertFile = "c.pem" }, "--etcd-keyfile"},
		{"key without cert", func(o *Options) { o.EtcdKeyFile = "k.pem" }, "--etcd-certfile"},
		{"cert and key", func(o *Options) { o.EtcdCertFile, o.EtcdKeyFile = "c.pem", "k.pem" }, ""},
		{"public IP not an address", func(o *Options) { o.PublicIP = "host1" }, "--public-ip"},
		{"public IP v6", func(o *Options) { o.PublicIP = "fd00::1" }, "--public-ip"},
		{"public IP v4", func(o *Options) { o.PublicIP = "192.0.2.1" }, ""},
		{"renew margin 0", func(o *Options) { o.RenewMarginMinutes = 0 }, "--subnet-lease-renew-margin 0"},
		{"renew margin negative", func(o *Options) { o.RenewMarginMinutes = -5 }, "--subnet-lease-renew-margin -5"},
		{"renew margin 1", func(o *Options) { o.RenewMarginMinutes = 1 }, ""},
		{"lease TTL under 1s", func(o *Options) { o.LeaseTTL = 500 * time.Millisecond }, "OVERLAYLAB_LEASE_TTL"},
		{"lease TTL negative", func(o *Options) { o.LeaseTTL = -time.Second }, "--lease-ttl"},
		{"lease TTL 1s", func(o *Options) { o.LeaseTTL = time.Second }, ""},
		{"renew margin knob negative", func(o *Options) { o.LeaseRenewMargin = -time.Second }, "OVERLAYLAB_RENEW_MARGIN"},
		{"healthz port too big", func(o *Options) { o.HealthzPort = 65536 }, "--healthz-port 65536"},
		{"healthz port negative", func(o *Options) { o.HealthzPort = -1 }, "--healthz-port -1"},
		{"healthz port max", func(o *Options) { o.HealthzPort = 65535 }, ""},
		{"healthz IP a name", func(o *Options) { o.HealthzIP = "localhost" }, "--healthz-ip"},
		{"pprof without healthz", func(o *Options) { o.Pprof = true }, "--pprof needs --healthz-port"},
		{"pprof with healthz", func(o *Options) { o.Pprof, o.HealthzPort = true, 9285 }, ""},
		{"udp mode", func(o *Options) { o.UDPMode = "turbo" }, `--udp-mode "turbo"`},
		{"udp mode simple", func(o *Options) { o.UDPMode = "simple" }, ""},
		{"udp workers negative", func(o *Options) { o.UDPWorkers = -1 }, "--udp-workers -1"},
		{"udp workers too many", func(o *Options) { o.UDPWorkers = 257 }, "--udp-workers 257: must be 0..256"},
		{"udp workers max", func(o *Options) { o.UDPWorkers = 256 }, ""},
	})
}

// validateCase is a change to DefaultOptions and what Validate must say.
type validateCase struct {
	name string
	mod  func(*Options)
	want string // "" = valid
}

// checkValidate runs each case as a subtest: a valid case must pass, any
// other must fail with an error containing want.
func checkValidate(t *testing.T, cases []validateCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.mod(&o)
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestValidateReportsAll: several mistakes are reported together.
func TestValidateReportsAll(t *testing.T) {
	o := DefaultOptions()
	o.HealthzPort, o.UDPMode, o.UDPWorkers = 70000, "x", -2
	err := o.Validate()
	for _, want := range []string{"--healthz-port", "--udp-mode", "--udp-workers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, lacks %s", err, want)
		}
	}
}

// TestNewFillsDefaults: a library caller may leave fields zero, a CLI that
// passes what the user typed may not (Validate alone refuses a 0 margin).
func TestNewFillsDefaults(t *testing.T) {
	o := Options{EtcdEndpoints: []string{"http://127.0.0.1:1"}}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--subnet-lease-renew-margin 0") {
		t.Errorf("Validate on a zero margin = %v, want the margin refused", err)
	}
	a, err := New(o)
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	if a.opts.renewMargin() != time.Hour {
		t.Errorf("renew margin = %v, want flanneld's 60 minutes", a.opts.renewMargin())
	}
	o.LeaseRenewMargin = 3 * time.Second
	if a, err = New(o); err != nil || a.opts.renewMargin() != 3*time.Second {
		t.Errorf("LeaseRenewMargin 3s: renew margin %v, %v", a.opts.renewMargin(), err)
	}
	if _, err := New(Options{EtcdEndpoints: []string{"x"}, UDPWorkers: 5000}); err == nil {
		t.Error("New accepted 5000 udp workers")
	}
}

// TestWorkersReachBackend: UDPWorkers and UDPMode are what the backend
// factory is given as backend.Options.
func TestWorkersReachBackend(t *testing.T) {
	a, err := New(Options{EtcdEndpoints: []string{"x"}, UDPWorkers: 6, UDPMode: "simple"})
	if err != nil {
		t.Fatal(err)
	}
	var got backend.Options
	a.backends = map[string]backend.Factory{config.BackendUDP: func(_ *config.Config, _ backend.External, _ *backend.Metrics, o backend.Options) (backend.Backend, error) {
		got = o
		return nil, nil
	}}
	if _, err := a.newBackend(a.nets[0], &config.Config{Backend: config.Backend{Type: config.BackendUDP}}, backend.External{}); err != nil {
		t.Fatal(err)
	}
	if got.Workers != 6 || got.UDPMode != "simple" {
		t.Errorf("backend.Options = %+v, want Workers 6, UDPMode simple", got)
	}
	if _, err := a.newBackend(a.nets[0], &config.Config{Backend: config.Backend{Type: "ipip"}}, backend.External{}); err == nil || !strings.Contains(err.Error(), `"ipip"`) {
		t.Errorf("unknown backend type: %v", err)
	}
}
