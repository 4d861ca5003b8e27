package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/bench"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

const defaultPerfDoc = "docs/PERFORMANCE.md"

func benchCmd() *cobra.Command {
	o := bench.Options{Progress: os.Stderr}
	var configs, output, doc string
	var all []string
	for _, c := range bench.DefaultConfigs() {
		all = append(all, c.Name)
	}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the data plane: TCP throughput, RTT and agent CPU/RSS per backend vs a no-overlay baseline (root)",
		Long: `Builds one 2-host × 1-container lab per configuration (` + strings.Join(all, ", ") + `),
measures them in interleaved rounds, prints a table of medians (min–max), ratios and
targets, tears every lab down and rewrites the data-plane section of docs/PERFORMANCE.md.
A configuration that does not come up is reported as such; the others are still measured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var names []string
			if configs != "" {
				names = strings.Split(configs, ",")
			}
			cfgs, err := bench.SelectConfigs(names)
			if err != nil {
				return err
			}
			o.Configs = cfgs
			if o.Binary, err = os.Executable(); err != nil {
				return err
			}
			o.Command = commandLine()
			rep, err := bench.Run(cmd.Context(), o)
			if rep == nil {
				return err
			}
			if perr := printResult(output, rep, func() { bench.WriteTable(os.Stdout, rep) }); perr != nil {
				return perr
			}
			if derr := updateDoc(cmd.Context(), doc, bench.SectionDataPlane, "data-plane", func() string { return bench.Markdown(rep) }); derr != nil {
				return errors.Join(err, derr)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Rounds, "rounds", 3, "rounds; each measures every configuration once")
	f.DurationVar(&o.Duration, "duration", 5*time.Second, "length of each TCP transfer (the first 0.5s is not measured)")
	f.StringVar(&configs, "configs", "", "comma-separated subset of: "+strings.Join(all, ",")+" (default all)")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	f.StringVar(&doc, "doc", defaultPerfDoc, `markdown file whose data-plane section is rewritten ("" to skip)`)
	f.StringVar(&o.StateRoot, "state-dir", plan.DefaultStateRoot, "where the bench's labs keep their state")
	cmd.AddCommand(benchControlCmd(), benchScaleCmd())
	return cmd
}

func benchScaleCmd() *cobra.Command {
	o := bench.ScaleOptions{Progress: os.Stderr}
	var output, doc string
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Measure how long `up` takes and what memory it uses for large labs (root)",
		Long: `For each --hosts count, builds one lab exactly as ` + "`overlaylab up`" + ` does (verify included: a ping
between every pair of hosts and the wire check), records each phase's time, the agents' and
etcd's resident memory and the machine's memory per host, then removes the lab. Rewrites the
scale section of docs/PERFORMANCE.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return errors.New("overlaylab bench scale needs root to build labs: run it with sudo")
			}
			o.Command = commandLine()
			rep, err := bench.RunScale(cmd.Context(), o)
			if rep == nil {
				return err
			}
			if perr := printResult(output, rep, func() { fmt.Print(bench.ScaleMarkdown(rep)) }); perr != nil {
				return perr
			}
			if len(rep.Runs) > 0 {
				if derr := updateDoc(cmd.Context(), doc, bench.SectionScale, "scale", func() string { return bench.ScaleMarkdown(rep) }); derr != nil {
					return errors.Join(err, derr)
				}
			}
			if err == nil {
				for _, r := range rep.Runs {
					if r.Error != "" {
						err = fmt.Errorf("scale bench: the %d-host lab failed (see the table)", r.Hosts)
					}
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntSliceVar(&o.Hosts, "hosts", []int{500}, "host counts, one lab each (e.g. 500,1000)")
	f.IntVar(&o.Containers, "containers", 1, "containers per host")
	f.StringVar(&o.Underlay, "underlay", "172.20.0.0/16", "underlay CIDR")
	f.StringVar(&o.Backend, "backend", config.BackendUDP, "backend")
	f.StringVar(&o.StateRoot, "state-dir", plan.DefaultStateRoot, "where the labs keep their state")
	f.StringVar(&o.LabPrefix, "lab-prefix", "scale", "lab names are PREFIX<hosts>")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	f.StringVar(&doc, "doc", defaultPerfDoc, `markdown file whose scale section is rewritten ("" to skip)`)
	return cmd
}

func benchControlCmd() *cobra.Command {
	o := bench.ControlOptions{Progress: os.Stderr}
	var output, doc string
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Measure the control plane: N lease-only agents against an in-process etcd (no root needed)",
		Long: `Starts an etcd inside this process on loopback and N lease-only agents (subnet managers, no
datapath) at the same instant; reports p50/p99 time to acquire a lease and the time until every
agent has seen every lease, then verifies from etcd: N keys, N distinct subnets, each PublicIP
once. Rewrites the control-plane section of docs/PERFORMANCE.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			o.Command = commandLine()
			rep, err := bench.RunControl(cmd.Context(), o)
			if rep == nil {
				return err
			}
			if perr := printResult(output, rep, func() { bench.WriteControlTable(os.Stdout, rep) }); perr != nil {
				return perr
			}
			if derr := updateDoc(cmd.Context(), doc, bench.SectionControl, "control-plane", func() string { return bench.ControlMarkdown(rep) }); derr != nil {
				return errors.Join(err, derr)
			}
			if err == nil && !rep.OK {
				err = errors.New("control bench: verification failed (see the table)")
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Agents, "agents", 1000, "lease-only agents")
	f.IntVar(&o.AgentsPerClient, "agents-per-client", 50, "agents sharing one etcd client")
	f.StringVar(&o.Network, "network", "10.0.0.0/8", "overlay Network")
	f.IntVar(&o.SubnetLen, "subnet-len", 24, "SubnetLen")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "give up after this long")
	f.StringVarP(&output, "output", "o", "", "output format: table or json")
	f.StringVar(&doc, "doc", defaultPerfDoc, `markdown file whose control-plane section is rewritten ("" to skip)`)
	return cmd
}

// updateDoc rewrites one section of the performance doc (none when doc is
// "") with a finished run's markdown: an interrupted run (ctx ended) is not
// a measurement to publish.
func updateDoc(ctx context.Context, doc, section, what string, markdown func() string) error {
	if doc == "" || ctx.Err() != nil {
		return nil
	}
	if err := bench.UpdateDoc(doc, section, markdown()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote the %s section of %s\n", what, doc)
	return nil
}

func checkOutput(output string) error {
	switch output {
	case "", "table", "json":
		return nil
	}
	return fmt.Errorf("-o %q: use table or json", output)
}

func printResult(output string, v any, table func()) error {
	if output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	table()
	return nil
}

// commandLine is how this process was invoked, as "overlaylab ARGS" with
// shell quoting where needed, for the reports.
func commandLine() string {
	parts := []string{"overlaylab"}
	for _, a := range os.Args[1:] {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
