package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/overlay"
)

// testKnobs are environment variables that set hidden test flags when the
// flag is not given (the command line wins, as with FLANNELD_*).
var testKnobs = []struct{ env, flag string }{
	{"OVERLAYLAB_LEASE_TTL", "lease-ttl"},
	{"OVERLAYLAB_RENEW_MARGIN", "lease-renew-margin"},
}

func agentCmd() *cobra.Command {
	o := overlay.DefaultOptions()
	var endpoints, networks string
	var verbose int
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the overlay agent on this host (flanneld's flags; each also as FLANNELD_<NAME>)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := knobsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			o.EtcdEndpoints = splitList(endpoints)
			o.Networks = splitList(networks)
			if len(o.Networks) > 0 && !cmd.Flags().Changed("subnet-file") {
				// flanneld's default file is the single network's: with
				// --networks each network writes --subnet-dir/NAME.env, and
				// only a --subnet-file the user gave is an error.
				o.SubnetFile = ""
			}
			// Checked before anything starts: a typo must not wait for
			// etcd and a network config to be reported.
			if err := o.Validate(); err != nil {
				return err
			}
			level := slog.LevelInfo
			if verbose > 0 {
				level = slog.LevelDebug
			}
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(o.Logger)
			a, err := overlay.New(o)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&endpoints, "etcd-endpoints", strings.Join(o.EtcdEndpoints, ","), "comma-separated etcd endpoints")
	f.StringVar(&o.EtcdPrefix, "etcd-prefix", o.EtcdPrefix, "etcd prefix")
	f.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA file for etcd TLS")
	f.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate for etcd TLS")
	f.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "client key for etcd TLS")
	f.StringVar(&o.Iface, "iface", "", "interface (name or IP) for inter-host traffic; default: the default route's")
	f.StringVar(&o.PublicIP, "public-ip", "", "IP published to peers; default: the interface's")
	f.BoolVar(&o.IPMasq, "ip-masq", false, "masquerade traffic leaving the overlay network (nftables)")
	f.StringVar(&o.SubnetFile, "subnet-file", o.SubnetFile, "where to write the subnet environment (single network)")
	f.StringVar(&networks, "networks", "", "serve several networks, comma-separated names (1-8 of a-z0-9, starting with a letter), each with its config at <etcd-prefix>/NAME/config, its own datapath, routing table and conntrack zone; excludes --subnet-file")
	f.StringVar(&o.SubnetDir, "subnet-dir", "", "with --networks: directory of the networks' subnet environments, NAME.env each")
	f.IntVar(&o.RenewMarginMinutes, "subnet-lease-renew-margin", o.RenewMarginMinutes, "renew the lease this many minutes before it expires")
	f.StringVar(&o.HealthzIP, "healthz-ip", o.HealthzIP, "address for /healthz, /readyz and /metrics")
	f.IntVar(&o.HealthzPort, "healthz-port", 0, "port for /healthz, /readyz and /metrics (0 disables)")
	f.IntVarP(&verbose, "v", "v", 0, "log verbosity (0 info, 1+ debug)")
	f.BoolVar(&o.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the healthz address (needs --healthz-port)")
	f.Int64Var(&o.SubnetSeed, "subnet-seed", 0, "seed for picking a free subnet (labs; 0 = random)")
	_ = f.MarkHidden("subnet-seed")
	// Test knobs, as flags so a lab or scenario can pass them per agent.
	f.DurationVar(&o.LeaseTTL, "lease-ttl", 0, "subnet lease TTL (tests; default 24h)")
	f.DurationVar(&o.LeaseRenewMargin, "lease-renew-margin", 0, "renew this long before expiry (tests; overrides --subnet-lease-renew-margin)")
	_ = f.MarkHidden("lease-ttl")
	_ = f.MarkHidden("lease-renew-margin")
	f.StringVar(&o.UDPMode, "udp-mode", o.UDPMode, "udp backend datapath: fast (batched syscalls, TUN and UDP segmentation offloads) or simple (one packet per syscall, as flanneld); same datagrams on the wire")
	f.IntVar(&o.UDPWorkers, "udp-workers", 0, fmt.Sprintf("udp backend: parallel datapath workers, 0..%d (0 = the backend's default)", overlay.MaxUDPWorkers))
	return cmd
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// knobsFromEnv applies the test knobs' environment variables to flags not
// given on the command line.
func knobsFromEnv(fs *pflag.FlagSet) error {
	for _, k := range testKnobs {
		v, ok := os.LookupEnv(k.env)
		if !ok || fs.Changed(k.flag) {
			continue
		}
		if err := fs.Set(k.flag, v); err != nil {
			return fmt.Errorf("%s %q: want a Go duration such as 10s: %w", k.env, v, err)
		}
	}
	return nil
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
