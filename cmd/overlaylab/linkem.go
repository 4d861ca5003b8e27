package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/internal/linkem"
)

// linkemCmd runs one userspace link-emulator relay (the lab's impair on a
// kernel without sch_netem) until SIGTERM or SIGINT. The lab inserts the
// relay's plumbing (linkem.Insert) and starts this command, usually with
// --config; the flags can also describe a relay on their own, and override
// the file's values when both are given.
func linkemCmd() *cobra.Command {
	var lf linkemFlags
	cmd := &cobra.Command{
		Use:    "linkem",
		Short:  "Run one userspace link-emulator relay between two interfaces (used by impair)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.config(cmd.Flags())
			if err != nil {
				return err
			}
			base := cmd.Context()
			if base == nil {
				base = context.Background()
			}
			ctx, stop := signal.NotifyContext(base, syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := linkem.Run(ctx, c); err != nil {
				return fmt.Errorf("linkem %s <-> %s: %w", c.HostIf, c.BridgeIf, err)
			}
			return nil
		},
	}
	lf.register(cmd.Flags())
	return cmd
}

// linkemFlags holds the command's flags until they are resolved into a
// linkem.Config.
type linkemFlags struct {
	configFile, netns, hostIf, bridgeIf string
	seed                                uint64
	delay, jitter                       time.Duration
	loss, reorder, duplicate, corrupt   string
	rate, direction, match              string
	udpPorts                            []uint
	networks, etcdIPs                   []string
	statsFile                           string
	statsInterval                       time.Duration
}

func (lf *linkemFlags) register(f *pflag.FlagSet) {
	f.StringVar(&lf.configFile, "config", "", "relay config (JSON, linkem.Config); flags given as well override it")
	f.StringVar(&lf.netns, "netns", "", "network namespace holding both interfaces (default: this process's)")
	f.StringVar(&lf.hostIf, "host-if", "", "interface facing the host (the port taken off the bridge)")
	f.StringVar(&lf.bridgeIf, "bridge-if", "", "interface facing the bridge (the relay pair's free end)")
	f.Uint64Var(&lf.seed, "seed", 0, "seed of every random decision")
	f.DurationVar(&lf.delay, "delay", 0, "delay added to matched packets")
	f.DurationVar(&lf.jitter, "jitter", 0, "uniform jitter (±) on top of the delay, without reordering")
	f.StringVar(&lf.loss, "loss", "", "loss percentage (e.g. 1%)")
	f.StringVar(&lf.reorder, "reorder", "", "percentage of packets sent at once, ahead of delayed ones (needs --delay)")
	f.StringVar(&lf.duplicate, "duplicate", "", "duplicate percentage")
	f.StringVar(&lf.corrupt, "corrupt", "", "corrupt percentage (one bit of the IP packet flipped)")
	f.StringVar(&lf.rate, "rate", "", "rate limit, e.g. 100mbit")
	f.StringVar(&lf.direction, "direction", "both", "in, out (host → underlay) or both")
	f.StringVar(&lf.match, "match", "", "all, overlay or control (default all)")
	f.UintSliceVar(&lf.udpPorts, "overlay-udp-port", nil, "match overlay: UDP ports of the backend's encapsulation (8285, 8472)")
	f.StringSliceVar(&lf.networks, "overlay-network", nil, "match overlay: IPv4 networks whose packets are overlay traffic (host-gw)")
	f.StringSliceVar(&lf.etcdIPs, "etcd-ip", nil, "match control: etcd addresses (default any)")
	f.StringVar(&lf.statsFile, "stats-file", "", "write counters here as JSON (periodically, on SIGUSR1 and at exit)")
	f.DurationVar(&lf.statsInterval, "stats-interval", 0, "how often to write the stats file (default 1s; negative: only on SIGUSR1)")
}

// config resolves the flags (over --config's file, when given) and validates
// the result.
func (lf *linkemFlags) config(fl *pflag.FlagSet) (linkem.Config, error) {
	var c linkem.Config
	if lf.configFile != "" {
		loaded, err := linkem.LoadConfig(lf.configFile)
		if err != nil {
			return c, err
		}
		c = *loaded
	}
	for _, s := range []struct {
		flag string
		dst  *string
		v    string
	}{{"netns", &c.Netns, lf.netns}, {"host-if", &c.HostIf, lf.hostIf}, {"bridge-if", &c.BridgeIf, lf.bridgeIf}, {"stats-file", &c.StatsFile, lf.statsFile}} {
		if fl.Changed(s.flag) {
			*s.dst = s.v
		}
	}
	if fl.Changed("seed") {
		c.Seed = lf.seed
	}
	if fl.Changed("stats-interval") {
		c.StatsInterval = linkem.Duration(lf.statsInterval)
	}
	if err := lf.classes(fl, &c); err != nil {
		return c, err
	}
	anyImp := false
	for _, n := range []string{"delay", "jitter", "loss", "reorder", "duplicate", "corrupt", "rate", "match", "direction"} {
		anyImp = anyImp || fl.Changed(n)
	}
	if anyImp {
		imp, err := lf.impairment()
		if err != nil {
			return c, err
		}
		dir, err := linkem.ParseDirection(lf.direction)
		if err != nil {
			return c, fmt.Errorf("--direction: %w", err)
		}
		c.Set(dir, imp)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("linkem: %w", err)
	}
	return c, nil
}

// classes fills the overlay and control class definitions from the flags.
func (lf *linkemFlags) classes(fl *pflag.FlagSet, c *linkem.Config) error {
	if fl.Changed("overlay-udp-port") {
		c.Overlay.UDPPorts = nil
		for _, p := range lf.udpPorts {
			if p == 0 || p > 65535 {
				return fmt.Errorf("--overlay-udp-port %d: want 1..65535", p)
			}
			c.Overlay.UDPPorts = append(c.Overlay.UDPPorts, uint16(p))
		}
	}
	if fl.Changed("overlay-network") {
		c.Overlay.Networks = nil
		for _, s := range lf.networks {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return fmt.Errorf("--overlay-network %q: %w", s, err)
			}
			c.Overlay.Networks = append(c.Overlay.Networks, p.Masked())
		}
	}
	if fl.Changed("etcd-ip") {
		c.Control.EtcdIPs = nil
		for _, s := range lf.etcdIPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("--etcd-ip %q: %w", s, err)
			}
			c.Control.EtcdIPs = append(c.Control.EtcdIPs, a.Unmap())
		}
	}
	return nil
}

// impairment is what the impairment flags describe (the others zero).
func (lf *linkemFlags) impairment() (linkem.Impairment, error) {
	imp := linkem.Impairment{Delay: linkem.Duration(lf.delay), Jitter: linkem.Duration(lf.jitter)}
	for _, p := range []struct {
		flag string
		v    string
		dst  *float64
	}{{"loss", lf.loss, &imp.Loss}, {"reorder", lf.reorder, &imp.Reorder}, {"duplicate", lf.duplicate, &imp.Duplicate}, {"corrupt", lf.corrupt, &imp.Corrupt}} {
		if p.v == "" {
			continue
		}
		v, err := linkem.ParsePercent(p.v)
		if err != nil {
			return imp, fmt.Errorf("--%s: %w", p.flag, err)
		}
		*p.dst = v
	}
	if lf.rate != "" {
		v, err := linkem.ParseRate(lf.rate)
		if err != nil {
			return imp, fmt.Errorf("--rate: %w", err)
		}
		imp.Rate = v
	}
	if lf.match != "" {
		m, err := linkem.ParseMatch(lf.match)
		if err != nil {
			return imp, fmt.Errorf("--match: %w", err)
		}
		imp.Match = m
	}
	return imp, nil
}
