package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/overlaylab/overlaylab/overlay/backend/udp"

	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// DefaultSubnetFile is where flanneld writes subnet.env.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// MaxUDPWorkers bounds Options.UDPWorkers: the udp backend's limit (the
// kernel's on a TUN device's queues), checked before anything waits.
const MaxUDPWorkers = udp.MaxWorkers

// Options are the agent's settings; the CLI fills them from flanneld's flags
// (and FLANNELD_* variables). Error messages name the flag a field comes
// from.
type Options struct {
	EtcdEndpoints []string // --etcd-endpoints
	EtcdPrefix    string   // --etcd-prefix; empty = subnet.DefaultPrefix
	EtcdCAFile    string
	EtcdCertFile  string
	EtcdKeyFile   string
	Iface         string // name or IP of the external interface; empty = default route's
	PublicIP      string // published address; empty = the interface's
	IPMasq        bool
	SubnetFile    string // empty = DefaultSubnetFile (single-network mode)
	// Networks (--networks) makes a multi-network agent: one process
	// serving every listed network, each with its config at
	// <prefix>/NAME/config, its leases under <prefix>/NAME/subnets/, its
	// own datapath, routing table and conntrack zone, and its subnet env
	// file SubnetDir/NAME.env. Empty: the single-network agent, exactly
	// flanneld's. Excludes SubnetFile.
	Networks []string
	// SubnetDir (--subnet-dir) holds a multi-network agent's env files.
	SubnetDir string
	// RenewMarginMinutes is flanneld's --subnet-lease-renew-margin: renew
	// the lease this many minutes (at least 1) before it expires.
	RenewMarginMinutes int
	// LeaseTTL and LeaseRenewMargin shorten the lease lifecycle for tests
	// (--lease-ttl, --lease-renew-margin; flanneld has neither, its TTL is
	// fixed at 24 h). Zero keeps the default TTL and RenewMarginMinutes.
	LeaseTTL         time.Duration
	LeaseRenewMargin time.Duration
	HealthzIP        string
	HealthzPort      int // 0 disables the HTTP endpoint
	// SubnetSeed, when non-zero, seeds the random choice of a free subnet
	// (mixed with the PublicIP, so hosts differ): reproducible labs.
	SubnetSeed int64
	// UDPMode is the udp backend's datapath: "fast" or "simple".
	UDPMode string
	// UDPWorkers is the udp backend's number of parallel datapath workers
	// (backend.Options.Workers); 0 = the backend's default.
	UDPWorkers int
	// Pprof serves /debug/pprof/ on the healthz address.
	Pprof  bool
	Logger *slog.Logger
}

// DefaultOptions are flanneld's defaults, the CLI's flag defaults.
func DefaultOptions() Options {
	return Options{
		EtcdEndpoints:      []string{"http://127.0.0.1:2379"},
		EtcdPrefix:         subnet.DefaultPrefix,
		SubnetFile:         DefaultSubnetFile,
		RenewMarginMinutes: 60,
		HealthzIP:          "0.0.0.0",
		UDPMode:            "fast",
	}
}

// withDefaults fills the fields a library caller may leave zero.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.EtcdPrefix == "" {
		o.EtcdPrefix = d.EtcdPrefix
	}
	if o.SubnetFile == "" && len(o.Networks) == 0 {
		o.SubnetFile = d.SubnetFile
	}
	if o.RenewMarginMinutes == 0 {
		o.RenewMarginMinutes = d.RenewMarginMinutes
	}
	if o.UDPMode == "" {
		o.UDPMode = d.UDPMode
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate checks the options exactly as given, without touching the
// system: every mistake a user can make on the command line is reported
// here, at once, instead of after waiting for etcd and a network config.
// New fills the zero fields a library caller left out before validating;
// the CLI calls Validate on what the user gave (an explicit 0 margin is an
// error, not a default).
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(o.EtcdEndpoints) == 0 {
		bad("--etcd-endpoints: at least one endpoint is needed")
	}
	if (o.EtcdCertFile == "") != (o.EtcdKeyFile == "") {
		bad("--etcd-certfile and --etcd-keyfile must be given together")
	}
	if o.PublicIP != "" {
		if ip, err := netip.ParseAddr(o.PublicIP); err != nil || !ip.Is4() {
			bad("--public-ip %q: not an IPv4 address", o.PublicIP)
		}
	}
	if o.RenewMarginMinutes < 1 {
		bad("--subnet-lease-renew-margin %d: must be at least 1 minute", o.RenewMarginMinutes)
	}
	if o.LeaseTTL != 0 && o.LeaseTTL < time.Second {
		bad("--lease-ttl (OVERLAYLAB_LEASE_TTL) %s: want a duration of at least 1s", o.LeaseTTL)
	}
	if o.LeaseRenewMargin < 0 {
		bad("--lease-renew-margin (OVERLAYLAB_RENEW_MARGIN) %s: want a positive duration", o.LeaseRenewMargin)
	}
	if o.HealthzPort < 0 || o.HealthzPort > 65535 {
		bad("--healthz-port %d: must be 0..65535", o.HealthzPort)
	}
	if o.HealthzIP != "" {
		if _, err := netip.ParseAddr(o.HealthzIP); err != nil {
			bad("--healthz-ip %q: not an IP address", o.HealthzIP)
		}
	}
	if o.Pprof && o.HealthzPort == 0 {
		bad("--pprof needs --healthz-port (profiles are served on the healthz address)")
	}
	if o.UDPMode != "fast" && o.UDPMode != "simple" {
		bad("--udp-mode %q: use fast or simple", o.UDPMode)
	}
	if o.UDPWorkers < 0 || o.UDPWorkers > MaxUDPWorkers {
		bad("--udp-workers %d: must be 0..%d (0 = the backend's default)", o.UDPWorkers, MaxUDPWorkers)
	}
	errs = append(errs, o.validateNetworks()...)
	return errors.Join(errs...)
}

// MaxNetworks bounds --networks: each network is a routing table, a
// conntrack zone and a datapath of the agent's.
const MaxNetworks = 64

// validateNetworks checks --networks and the flags that go with it.
func (o Options) validateNetworks() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(o.Networks) == 0 {
		if o.SubnetDir != "" {
			bad("--subnet-dir %q: only with --networks (a single network writes --subnet-file)", o.SubnetDir)
		}
		return errs
	}
	if len(o.Networks) > MaxNetworks {
		bad("--networks: %d networks, at most %d", len(o.Networks), MaxNetworks)
	}
	seen := map[string]bool{}
	for _, n := range o.Networks {
		if err := ValidNetworkName(n); err != nil {
			bad("--networks: %w", err)
		} else if seen[n] {
			bad("--networks: network %q listed twice", n)
		}
		seen[n] = true
	}
	if o.SubnetFile != "" {
		bad("--networks and --subnet-file %q exclude each other: each network writes --subnet-dir/NAME.env", o.SubnetFile)
	}
	if o.SubnetDir == "" {
		bad("--networks needs --subnet-dir (each network writes DIR/NAME.env)")
	}
	if o.IPMasq {
		bad("--ip-masq with --networks is refused: each network's routing table ends in an unreachable default, so no traffic of a tenant network leaves the overlay to be masqueraded")
	}
	return errs
}

// ValidNetworkName checks a network name of --networks: 1 to 8 of
// [a-z0-9], starting with a letter. The name ends up in kernel names with
// a 15-character limit (the udp device fl-NAME) and in etcd keys.
func ValidNetworkName(name string) error {
	ok := len(name) >= 1 && len(name) <= 8 && name[0] >= 'a' && name[0] <= 'z'
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9')
	}
	if !ok {
		return fmt.Errorf("network name %q: want 1 to 8 of a-z and 0-9, starting with a letter", name)
	}
	return nil
}

// renewMargin is the margin the lease is renewed with.
func (o Options) renewMargin() time.Duration {
	if o.LeaseRenewMargin > 0 {
		return o.LeaseRenewMargin
	}
	return time.Duration(o.RenewMarginMinutes) * time.Minute
}
