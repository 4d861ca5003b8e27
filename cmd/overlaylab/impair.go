package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/overlaylab/overlaylab/internal/linkem"
	"github.com/overlaylab/overlaylab/lab"
)

func impairCmd() *cobra.Command {
	var name, root, loss, reorder, duplicate, corrupt, rate, direction, match string
	var delay, jitter time.Duration
	var seed int64
	var clear bool
	cmd := &cobra.Command{
		Use:   "impair HOST [--delay 20ms] [--jitter 5ms] [--loss 1%] [--reorder 2%] [--duplicate 1%] [--corrupt 0.1%] [--rate 100mbit] [--direction in|out|both] [--match all|overlay|control] [--seed N] | --clear",
		Short: "Impair a host's underlay link (a userspace link emulator: no netem needed), or --clear it",
		Long: `Puts a relay on the host's link in the underlay namespace: the host sees nothing change, its
traffic is delayed, jittered, lost, reordered, duplicated, corrupted or rate-limited. Direction is the
host's (out: host → underlay); both is the default, so --delay 20ms adds 40 ms to every round trip
through the host. --match overlay impairs only the backend's encapsulated traffic, control only etcd's.
Every random decision is seeded: the same seed and the same packets give the same outcome.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clear {
				impairing := false
				cmd.Flags().Visit(func(f *pflag.Flag) {
					switch f.Name {
					case "clear", "name", "state-dir":
					default:
						impairing = true
					}
				})
				if impairing {
					return fmt.Errorf("--clear takes no impairment flags")
				}
				return withLab(cmd.Context(), root, name, "impair "+args[0]+" --clear", func(l *lab.Lab) error {
					if err := l.ImpairClear(cmd.Context(), args[0]); err != nil {
						return err
					}
					fmt.Printf("%s's link is no longer impaired\n", args[0])
					return nil
				})
			}
			im := lab.Impairment{Delay: delay, Jitter: jitter, Direction: direction, Match: match, Seed: seed}
			var err error
			for _, p := range []struct {
				flag, v string
				to      *float64
			}{{"loss", loss, &im.Loss}, {"reorder", reorder, &im.Reorder}, {"duplicate", duplicate, &im.Duplicate}, {"corrupt", corrupt, &im.Corrupt}} {
				if p.v == "" {
					continue
				}
				if *p.to, err = linkem.ParsePercent(p.v); err != nil {
					return fmt.Errorf("--%s: %w", p.flag, err)
				}
			}
			if rate != "" {
				if im.RateBps, err = linkem.ParseRate(rate); err != nil {
					return fmt.Errorf("--rate: %w", err)
				}
			}
			if delay < 0 || jitter < 0 {
				return fmt.Errorf("--delay %s, --jitter %s: must not be negative", delay, jitter)
			}
			if jitter > 0 && delay == 0 {
				return fmt.Errorf("--jitter varies a delay: give --delay too")
			}
			if im.Delay == 0 && im.Jitter == 0 && im.Loss == 0 && im.Reorder == 0 && im.Duplicate == 0 && im.Corrupt == 0 && im.RateBps == 0 {
				return fmt.Errorf("impair %s: give at least one of --delay, --loss, --reorder, --duplicate, --corrupt, --rate (or --clear)", args[0])
			}
			return withLab(cmd.Context(), root, name, "impair "+args[0], func(l *lab.Lab) error {
				if err := l.Impair(cmd.Context(), args[0], im); err != nil {
					return err
				}
				h, _ := l.Snapshot().Host(args[0])
				fmt.Printf("%s's link is impaired (relay pid %d; counters: %s)\n", args[0], h.Impair.PID, h.Impair.Stats)
				return nil
			})
		},
	}
	labFlags(cmd, &name, &root)
	f := cmd.Flags()
	f.DurationVar(&delay, "delay", 0, "added to every packet, each direction")
	f.DurationVar(&jitter, "jitter", 0, "uniform ± variation of the delay (never reorders)")
	f.StringVar(&loss, "loss", "", "percent of packets dropped, e.g. 1%")
	f.StringVar(&reorder, "reorder", "", "percent sent ahead of the delayed ones (needs --delay)")
	f.StringVar(&duplicate, "duplicate", "", "percent sent twice")
	f.StringVar(&corrupt, "corrupt", "", "percent with one bit flipped (after the checksum: the receiver drops them)")
	f.StringVar(&rate, "rate", "", "rate limit, e.g. 100mbit")
	f.StringVar(&direction, "direction", "both", "in, out (host → underlay) or both")
	f.StringVar(&match, "match", "all", "all, overlay (the backend's encapsulated traffic) or control (etcd's)")
	f.Int64Var(&seed, "seed", 0, "seed of every random decision (0: the lab's seed, else 1)")
	f.BoolVar(&clear, "clear", false, "remove the impairment")
	return cmd
}
