package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// Teardown says what a `down` removed, and what it could not.
type Teardown struct {
	Lab        string   `json:"lab"`
	Processes  []string `json:"processes,omitempty"`  // ended, "PID (comm in netns)"
	Namespaces []string `json:"namespaces,omitempty"` // removed
	StateDir   string   `json:"stateDir,omitempty"`   // removed
	Left       []string `json:"left,omitempty"`       // namespaces still there
}

// Summary is the teardown in a line or two.
func (t *Teardown) Summary() string {
	if len(t.Processes) == 0 && len(t.Namespaces) == 0 && t.StateDir == "" {
		return fmt.Sprintf("lab %q: nothing to remove", t.Lab)
	}
	s := fmt.Sprintf("lab %q is down: %d namespaces removed", t.Lab, len(t.Namespaces))
	if len(t.Processes) > 0 {
		s += fmt.Sprintf(", %d processes ended (%s)", len(t.Processes), strings.Join(t.Processes, ", "))
	}
	if len(t.Left) > 0 {
		s += fmt.Sprintf("; NOT removed: %s", strings.Join(t.Left, " "))
	}
	return s
}

// Down removes the lab behind the handle: its processes (the lab's own and
// anything running inside its namespaces), CNI attachments, namespaces and
// state dir. The handle is spent afterwards.
func (l *Lab) Down(ctx context.Context) (*Teardown, error) {
	defer l.lock.release()
	return l.teardown(ctx)
}

// Down removes a lab by name, with or without state (a crash may have left
// only namespaces or processes). It takes the lab's lock, so it waits for a
// command still working on the lab. It is idempotent.
func Down(ctx context.Context, root, name string, o Options) (*Teardown, error) {
	dir, err := plan.SafeStateDir(root, name)
	if err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	if o.Command == "overlaylab" {
		o.Command = "down"
	}
	lk, err := acquireLock(ctx, dir, name, o.Command, true, o.Wait)
	if err != nil {
		return nil, err
	}
	defer lk.release()
	l := &Lab{root: root, name: name, dir: dir, bin: o.Binary, out: o.Out, lock: lk}
	if st, err := loadState(dir, name); err == nil {
		l.st = st
	}
	return l.teardown(ctx)
}

// teardown does the work of Down; the caller holds the lock.
func (l *Lab) teardown(ctx context.Context) (*Teardown, error) {
	t := &Teardown{Lab: l.name}
	var errs []error
	var st *State
	if l.st != nil {
		st = l.Snapshot()
		for _, h := range st.Hosts {
			errs = append(errs, stop(h.AgentPID, l.name, syscall.SIGTERM, 3*time.Second))
			errs = append(errs, l.detachContainers(ctx, st, &h))
		}
		for _, m := range st.Etcd.Members {
			errs = append(errs, stop(m.PID, l.name, syscall.SIGTERM, 5*time.Second))
		}
	}
	// Whatever carries the lab's mark but is not in the state (a crash
	// between start and save, the etcd proxy in the root namespace) goes too.
	for _, pid := range labProcesses(l.name) {
		errs = append(errs, stop(pid, l.name, syscall.SIGTERM, 3*time.Second))
	}
	// Anything else running inside the lab's namespaces (what users started
	// with `overlaylab exec` or `ip netns exec`) ends with them.
	errs = append(errs, t.removeNamespaces(labNamespaces(l.name)))
	if ents, err := os.ReadDir(l.dir); err == nil {
		if len(t.Left) == 0 {
			l.removeDir()
			if len(ents) > 1 || (len(ents) == 1 && ents[0].Name() != "lock") {
				t.StateDir = l.dir // not just the lock file this command made
			}
		} else {
			errs = append(errs, fmt.Errorf("kept %s: namespaces %s are still there", l.dir, strings.Join(t.Left, " ")))
		}
	}
	return t, errors.Join(errs...)
}

// DownAll removes every lab: those with state, and any leftover namespace
// or marked process found by the prefix (after a crash that lost the state).
func DownAll(ctx context.Context, root string, o Options) ([]*Teardown, error) {
	seen := map[string]bool{}
	if ents, err := os.ReadDir(root); err == nil {
		for _, e := range ents {
			if e.IsDir() && plan.CheckName(e.Name()) == nil {
				if _, err := os.Stat(statePath(filepath.Join(root, e.Name()))); err == nil {
					seen[e.Name()] = true
				}
			}
		}
	}
	for _, pid := range labProcesses("") {
		if l, _, ok := procMark(pid); ok && plan.CheckName(l) == nil {
			seen[l] = true
		}
	}
	all, _ := nsutil.List(plan.NamePrefix)
	for _, ns := range all {
		if l, ok := plan.LabOf(ns); ok {
			seen[l] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	var errs []error
	var out []*Teardown
	for _, name := range names {
		t, err := Down(ctx, root, name, o)
		if t != nil {
			out = append(out, t)
		}
		errs = append(errs, err)
	}
	// Namespaces with our prefix but no lab's shape (an older overlaylab's)
	// go too: `--all` means every leftover.
	rest, _ := nsutil.List(plan.NamePrefix)
	rest = slices.DeleteFunc(rest, func(ns string) bool { _, ok := plan.LabOf(ns); return ok })
	if len(rest) > 0 {
		t := &Teardown{Lab: "(unnamed leftovers)"}
		errs = append(errs, t.removeNamespaces(rest))
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}

// removeNamespaces ends every process inside the namespaces, deletes them
// and records in t what ended, what went and what is still there.
func (t *Teardown) removeNamespaces(nss []string) error {
	ended, serr := stopInNamespaces(nss, 3*time.Second)
	for _, p := range ended {
		t.Processes = append(t.Processes, p.String())
	}
	gone, derr := topo.DeleteNamespaces(nss)
	t.Namespaces = append(t.Namespaces, gone...)
	for _, ns := range nss {
		if nsutil.Exists(ns) {
			t.Left = append(t.Left, ns)
		}
	}
	return errors.Join(serr, derr)
}
