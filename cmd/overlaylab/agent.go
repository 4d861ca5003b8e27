package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/overlay"
)

func agentCmd() *cobra.Command {
	var o overlay.Options
	var endpoints string
	var renewMargin int
	var verbose int
	var leaseTTL, leaseRenew time.Duration
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the overlay agent on this host (flanneld's flags; each also as FLANNELD_<NAME>)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			level := slog.LevelInfo
			if verbose > 0 {
				level = slog.LevelDebug
			}
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(o.Logger)
			for _, e := range strings.Split(endpoints, ",") {
				if e = strings.TrimSpace(e); e != "" {
					o.EtcdEndpoints = append(o.EtcdEndpoints, e)
				}
			}
			if renewMargin < 1 {
				return fmt.Errorf("--subnet-lease-renew-margin %d: must be at least 1 minute", renewMargin)
			}
			o.RenewMargin = time.Duration(renewMargin) * time.Minute
			// Hidden test knobs shorten the lease lifecycle (flanneld has no
			// such flags; its TTL is fixed at 24 h).
			if v := os.Getenv("OVERLAYLAB_LEASE_TTL"); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d < time.Second {
					return fmt.Errorf("OVERLAYLAB_LEASE_TTL %q: want a duration of at least 1s", v)
				}
				o.LeaseTTL = d
			}
			if v := os.Getenv("OVERLAYLAB_RENEW_MARGIN"); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d <= 0 {
					return fmt.Errorf("OVERLAYLAB_RENEW_MARGIN %q: want a positive duration", v)
				}
				o.RenewMargin = d
			}
			if leaseTTL != 0 {
				if leaseTTL < time.Second {
					return fmt.Errorf("--lease-ttl %s: at least 1s", leaseTTL)
				}
				o.LeaseTTL = leaseTTL
			}
			if leaseRenew != 0 {
				o.RenewMargin = leaseRenew
			}
			// Checked here, not when the backend starts: a typo must not
			// wait for etcd and a network config to be reported.
			if o.UDPMode != "fast" && o.UDPMode != "simple" {
				return fmt.Errorf("--udp-mode %q: use fast or simple", o.UDPMode)
			}
			if o.UDPWorkers < 0 || o.UDPWorkers > 1024 {
				return fmt.Errorf("--udp-workers %d: must be 0..1024 (0 = the backend's default)", o.UDPWorkers)
			}
			if o.HealthzPort < 0 || o.HealthzPort > 65535 {
				return fmt.Errorf("--healthz-port %d: must be 0..65535", o.HealthzPort)
			}
			a, err := overlay.New(o)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoints, "etcd-endpoints", "http://127.0.0.1:2379", "comma-separated etcd endpoints")
	f.StringVar(&o.EtcdPrefix, "etcd-prefix", "/coreos.com/network", "etcd prefix")
	f.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA file for etcd TLS")
	f.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate for etcd TLS")
	f.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "client key for etcd TLS")
	f.StringVar(&o.Iface, "iface", "", "interface (name or IP) for inter-host traffic; default: the default route's")
	f.StringVar(&o.PublicIP, "public-ip", "", "IP published to peers; default: the interface's")
	f.BoolVar(&o.IPMasq, "ip-masq", false, "masquerade traffic leaving the overlay network (nftables)")
	f.StringVar(&o.SubnetFile, "subnet-file", "/run/flannel/subnet.env", "where to write the subnet environment")
	f.IntVar(&renewMargin, "subnet-lease-renew-margin", 60, "renew the lease this many minutes before it expires")
	f.StringVar(&o.HealthzIP, "healthz-ip", "0.0.0.0", "address for /healthz, /readyz and /metrics")
	f.IntVar(&o.HealthzPort, "healthz-port", 0, "port for /healthz, /readyz and /metrics (0 disables)")
	f.IntVarP(&verbose, "v", "v", 0, "log verbosity (0 info, 1+ debug)")
	f.BoolVar(&o.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the healthz address (needs --healthz-port)")
	f.Int64Var(&o.SubnetSeed, "subnet-seed", 0, "seed for picking a free subnet (labs; 0 = random)")
	_ = f.MarkHidden("subnet-seed")
	// Test knobs, as flags so a lab or scenario can pass them per agent.
	f.DurationVar(&leaseTTL, "lease-ttl", 0, "subnet lease TTL (tests; default 24h)")
	f.DurationVar(&leaseRenew, "lease-renew-margin", 0, "renew this long before expiry (tests; overrides --subnet-lease-renew-margin)")
	_ = f.MarkHidden("lease-ttl")
	_ = f.MarkHidden("lease-renew-margin")
	f.StringVar(&o.UDPMode, "udp-mode", "fast", "udp backend datapath: fast (batched syscalls, TUN and UDP segmentation offloads) or simple (one packet per syscall, as flanneld); same datagrams on the wire")
	f.IntVar(&o.UDPWorkers, "udp-workers", 0, "udp backend: parallel datapath workers (0 = the backend's default)")
	return cmd
}

// flagsFromEnv applies FLANNELD_<NAME> (dashes as underscores, upper case)
// to every flag not given on the command line, as flanneld does.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		env := "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, serr)
			}
		}
	})
	return err
}
