package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/scenarios"
	"github.com/overlaylab/overlaylab/scenarios/report"
	"github.com/overlaylab/overlaylab/scenarios/run"
)

func validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE|DIR...",
		Short: "Check scenario files without running them (no root needed)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := scenarioFiles(args)
			if err != nil {
				return err
			}
			bad := 0
			for _, f := range files {
				sc, err := scenarios.Load(f)
				if err != nil {
					bad++
					printParseErrors(f, err)
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

func printParseErrors(file string, err error) {
	var es scenarios.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(os.Stderr, e)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
}

// scenarioFiles expands directories to the .yaml/.yml files in them.
func scenarioFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", a, err)
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		var found []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(a, pat))
			found = append(found, m...)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("scenario directory %s holds no .yaml files", a)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	return files, nil
}

// suiteRun is one run to play: a scenario, an agent, a repetition.
type suiteRun struct {
	sc     *scenarios.Scenario
	agent  string // path, "" for the scenario's own
	repeat int
	lab    string
	out    string
}

func runCmd() *cobra.Command {
	var out, root string
	var agents []string
	var parallel, repeat int
	cmd := &cobra.Command{
		Use:   "run FILE|DIR...",
		Short: "Play scenarios: build each lab, play its timeline, check its expectations, tear down, write reports",
		Long: `Plays every scenario file (directories: every .yaml in them). With several files, agents
(--agent, repeatable: the matrix scenario x agent) or --repeat, each run gets its own lab and
output dir, and the output dir also gets one combined junit.xml and an index.html grid.
Exits 1 when any run failed, 2 when a file does not parse.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if parallel < 1 || repeat < 1 {
				return fmt.Errorf("--parallel %d, --repeat %d: both must be at least 1", parallel, repeat)
			}
			files, err := scenarioFiles(args)
			if err != nil {
				return err
			}
			var scs []*scenarios.Scenario
			bad := false
			for _, f := range files {
				sc, err := scenarios.Load(f)
				if err != nil {
					printParseErrors(f, err)
					bad = true
					continue
				}
				scs = append(scs, sc)
			}
			if bad {
				return exitError{code: 2}
			}
			for _, a := range agents {
				if a == "" {
					return errors.New("--agent: an empty path")
				}
			}
			runs, err := planRuns(scs, agents, repeat, out)
			if err != nil {
				return err
			}
			for _, r := range runs {
				if lab.Exists(root, r.lab) {
					return fmt.Errorf("lab %q already exists: run `overlaylab down --name %s` first", r.lab, r.lab)
				}
			}
			return playSuite(cmd.Context(), runs, parallel, root, out, len(files) > 1 || len(agents) > 1 || repeat > 1)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for results, reports and artifacts (default overlaylab-results, or overlaylab-results/<scenario> for one run)")
	cmd.Flags().StringVar(&root, "state-dir", plan.DefaultStateRoot, "where labs keep their state")
	cmd.Flags().StringArrayVar(&agents, "agent", nil, "run every host with this agent binary (repeatable: each file runs once per agent)")
	cmd.Flags().IntVar(&parallel, "parallel", 1, "runs at once (each in its own lab)")
	cmd.Flags().IntVar(&repeat, "repeat", 1, "play each scenario this many times (counts passes: how intermittent failures are caught)")
	return cmd
}

// planRuns lays out every run: its lab name (distinct whenever more than
// one run exists) and its output dir.
func planRuns(scs []*scenarios.Scenario, agents []string, repeat int, out string) ([]suiteRun, error) {
	if len(agents) == 0 {
		agents = []string{""}
	}
	var runs []suiteRun
	for _, sc := range scs {
		for _, a := range agents {
			for k := 1; k <= repeat; k++ {
				runs = append(runs, suiteRun{sc: sc, agent: a, repeat: k, lab: sc.Lab})
			}
		}
	}
	single := len(runs) == 1
	if out == "" {
		out = defaultResults
		if single {
			out = filepath.Join(out, scs[0].Name)
		}
	}
	dirs := map[string]bool{}
	for i := range runs {
		r := &runs[i]
		if single {
			r.out = out
			continue
		}
		suffix := "-" + strconv.Itoa(i+1)
		base := r.sc.Lab
		if len(base)+len(suffix) > plan.MaxNameLen {
			base = strings.TrimRight(base[:plan.MaxNameLen-len(suffix)], "-")
		}
		r.lab = base + suffix
		if err := plan.CheckName(r.lab); err != nil {
			return nil, fmt.Errorf("scenario %s: lab name for run %d: %w", r.sc.Name, i+1, err)
		}
		d := r.sc.Name
		if len(agents) > 1 || r.agent != "" {
			d += "-" + report.AgentLabel(r.agent)
		}
		if repeat > 1 {
			d += "-r" + strconv.Itoa(r.repeat)
		}
		for dirs[d] { // two files with one scenario name
			d += "x"
		}
		dirs[d] = true
		r.out = filepath.Join(out, d)
	}
	return runs, nil
}

// playSuite plays the runs, at most parallel at once, and writes the
// combined reports when there is more than one run.
func playSuite(ctx context.Context, runs []suiteRun, parallel int, root, out string, combined bool) error {
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	results := make([]report.SuiteRun, len(runs))
	var logMu sync.Mutex
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range runs {
		r := runs[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			label := r.sc.Name
			if combined {
				label = fmt.Sprintf("%s [%s] #%d", r.sc.Name, report.AgentLabel(r.agent), r.repeat)
			}
			var log io.Writer = os.Stdout
			if combined {
				log = &prefixWriter{prefix: "[" + r.lab + "] ", mu: &logMu, w: os.Stdout}
			}
			res, err := run.Run(ctx, r.sc, run.Options{Binary: bin, StateRoot: root, Out: r.out, Log: log,
				Agent: plan.Agent{Path: r.agent}, Lab: r.lab, Label: label})
			sr := report.SuiteRun{Scenario: r.sc.Name, Agent: report.AgentLabel(r.agent), Repeat: r.repeat, Result: res}
			if rel, rerr := filepath.Rel(suiteDir(out), r.out); rerr == nil {
				sr.Dir = rel
			}
			if err != nil {
				sr.Err = err.Error()
			}
			results[i] = sr
			logMu.Lock()
			printVerdict(r, res, err)
			logMu.Unlock()
		}()
	}
	wg.Wait()
	passed := 0
	for i := range results {
		if results[i].Passed() {
			passed++
		}
	}
	if combined {
		paths, err := report.WriteSuite(suiteDir(out), results)
		if err != nil {
			return err
		}
		fmt.Printf("\nsuite: %d/%d runs passed in %s; %s\n", passed, len(results), time.Since(start).Round(time.Second), strings.Join(paths, ", "))
	}
	if passed < len(results) {
		return exitError{code: 1}
	}
	return nil
}

// defaultResults is where runs write without --out.
const defaultResults = "overlaylab-results"

// suiteDir is where a suite's combined reports go.
func suiteDir(out string) string {
	if out == "" {
		return defaultResults
	}
	return out
}

func printVerdict(r suiteRun, res *report.Result, err error) {
	if err != nil {
		fmt.Printf("\nERROR %s (lab %s): %v\n", r.sc.Name, r.lab, err)
		return
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
	fmt.Printf("\n%s %s: %d/%d expectations passed in %s; report: %s\n", verdict, res.Label, passed, len(res.Expectations),
		res.Duration.Round(time.Millisecond), filepath.Join(r.out, "report.html"))
	if res.Error != "" {
		l, _, _ := strings.Cut(res.Error, "\n")
		fmt.Printf("error: %s\n", l)
	}
}

// prefixWriter prefixes each line with the run's lab, for runs that share
// the terminal.
type prefixWriter struct {
	prefix string
	mu     *sync.Mutex
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
