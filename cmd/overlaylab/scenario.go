package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
)

func validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check scenario files without running them (no root needed)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			for _, f := range args {
				sc, err := scenarios.Load(f)
				if err != nil {
					bad++
					var es scenarios.Errors
					if errors.As(err, &es) {
						for _, e := range es {
							fmt.Fprintln(os.Stderr, e)
						}
					} else {
						fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
					}
					continue
				}
				fmt.Printf("%s: ok (%s: %d hosts, %s, %d steps, %d expectations)\n", f, sc.Name, len(sc.Hosts), sc.Backend, len(sc.Steps), len(sc.Expects))
			}
			if bad > 0 {
				return exitError{code: 1}
			}
			return nil
		},
	}
}

func runCmd() *cobra.Command {
	var out, root string
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Build a scenario's lab, play its timeline, check its expectations, tear down, write reports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := scenarios.Load(args[0])
			if err != nil {
				var es scenarios.Errors
				if errors.As(err, &es) {
					for _, e := range es {
						fmt.Fprintln(os.Stderr, e)
					}
					return exitError{code: 2}
				}
				return err
			}
			if err := lab.Preflight(sc.Backend); err != nil {
				return err
			}
			if lab.Exists(root, sc.Lab) {
				return fmt.Errorf("lab %q already exists: run `overlaylab down --name %s` first", sc.Lab, sc.Lab)
			}
			if out == "" {
				out = filepath.Join("overlaylab-results", sc.Name)
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			res, err := scenarios.Run(cmd.Context(), sc, scenarios.RunOptions{Binary: bin, StateRoot: root, Out: out, Log: os.Stdout})
			if err != nil {
				return err
			}
			passed := 0
			for _, e := range res.Expectations {
				if e.Passed {
					passed++
				}
			}
			verdict := "PASSED"
			if !res.Passed {
				verdict = "FAILED"
			}
			fmt.Printf("\n%s %s: %d/%d expectations passed in %s; report: %s\n", verdict, sc.Name, passed, len(res.Expectations),
				res.Duration.Round(1e6), filepath.Join(out, "report.html"))
			if res.Error != "" {
				fmt.Printf("error: %s\n", firstLine(res.Error))
			}
			if !res.Passed {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the result, reports and artifacts (default overlaylab-results/<scenario>)")
	cmd.Flags().StringVar(&root, "state-dir", lab.DefaultStateRoot, "where labs keep their state")
	return cmd
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
