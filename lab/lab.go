// Package lab runs a lab behind one handle, *Lab: it builds what a checked
// plan.Spec says (underlay, etcd, hosts, agents of any flannel-compatible
// kind, containers on a bridge or through CNI), owns its state dir and its
// lock, applies faults, runs every check (one ICMP prober, one
// expected-vs-actual matrix, one wire check) and tears everything down.
// Everything it creates is a namespace named with the lab's prefix and is
// recorded in the state dir, so `down` can always undo it.
//
// Files by concern: lab.go (the handle), lock.go, state.go (the JSON
// contract of status -o json), build.go and progress.go (up), hosts.go,
// agents.go (also agent kills, restarts and upgrades), etcd.go (also its
// faults: stop, start, compact, wipe), containers.go and cni.go (the two
// runtimes), tenants.go, faults.go and impair.go (link, firewall and
// device faults), probe.go and matrix.go (the ICMP prober and the judged
// matrix), wire.go (captures), flow.go and checks.go (the other checks),
// verify.go (up's check), procns.go and teardown.go (down), inspect.go.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

const defaultPrefix = subnet.DefaultPrefix

// Options configure a handle.
type Options struct {
	// Binary is the overlaylab binary the lab starts its children from
	// (etcd, our agents); default: this process's own executable.
	Binary string
	// Out gets progress and summaries; nil discards them.
	Out io.Writer
	// Wait gets the line saying that the command waits for another one
	// holding the lab's lock; nil: os.Stderr.
	Wait io.Writer
	// Command names what this handle does, for whoever waits on its lock.
	Command string
}

// Lab is one running lab. Methods that change it are safe to call from
// several goroutines of one process (they serialize on the handle); between
// processes the lab's lock serializes whole commands.
type Lab struct {
	root, name, dir string
	bin             string
	out             io.Writer
	lock            *lock

	mu sync.Mutex // guards st
	st *State

	phases []Phase // of Up, in order
}

// Phases are the steps Up took to build (and verify) the lab, with their
// durations; empty for a handle from Open.
func (l *Lab) Phases() []Phase { return l.phases }

func (o *Options) fill() error {
	if o.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the overlaylab binary: %w", err)
		}
		o.Binary = bin
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Wait == nil {
		o.Wait = os.Stderr
	}
	if o.Command == "" {
		o.Command = "overlaylab"
	}
	return nil
}

// Open takes a running lab's lock (waiting while another command holds it)
// and loads its state. Close releases it.
func Open(ctx context.Context, root, name string, o Options) (*Lab, error) {
	dir, err := plan.SafeStateDir(root, name)
	if err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	lk, err := acquireLock(ctx, dir, name, o.Command, false, o.Wait)
	if errors.Is(err, errNoDir) {
		_, err = loadState(dir, name) // the same "no such lab" message as Load
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	st, err := loadState(dir, name)
	if err != nil {
		lk.release()
		return nil, err
	}
	return &Lab{root: root, name: name, dir: dir, bin: o.Binary, out: o.Out, lock: lk, st: st}, nil
}

// Close releases the lab's lock; the lab keeps running.
func (l *Lab) Close() error {
	l.lock.release()
	return nil
}

// Name is the lab's name.
func (l *Lab) Name() string { return l.name }

// Dir is the lab's state dir.
func (l *Lab) Dir() string { return l.dir }

// Snapshot is a copy of the lab's state that the caller may keep.
func (l *Lab) Snapshot() *State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Clone()
}

// update changes the state under the handle's mutex and saves it.
func (l *Lab) update(fn func(*State) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := fn(l.st); err != nil {
		return err
	}
	return l.st.save()
}

// view reads the state under the handle's mutex.
func (l *Lab) view(fn func(*State) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fn(l.st)
}

// Exists reports whether a lab of that name has state or namespaces.
func Exists(root, name string) bool {
	dir, err := plan.SafeStateDir(root, name)
	if err != nil {
		return false
	}
	if _, err := os.Stat(statePath(dir)); err == nil {
		return true
	}
	return len(labNamespaces(name)) > 0
}

// labNamespaces lists the namespaces that belong to a lab (by the exact
// grammar of its names, see plan.Names.Owns).
func labNamespaces(name string) []string {
	all, _ := nsutil.List(plan.NamePrefix)
	n := plan.Names{Lab: name}
	var out []string
	for _, ns := range all {
		if n.Owns(ns) {
			out = append(out, ns)
		}
	}
	return out
}

// Preflight checks what needs the real system: root, and /dev/net/tun for
// a backend that opens it.
func Preflight(backends []plan.Backend) error {
	if os.Geteuid() != 0 {
		return errors.New("overlaylab needs root to create network namespaces: run it with sudo")
	}
	for _, b := range backends {
		if b.NeedsTUN {
			if _, err := os.Stat("/dev/net/tun"); err != nil {
				return fmt.Errorf("the %s backend needs /dev/net/tun (%v): load the tun module (modprobe tun) or use --backend vxlan", b.Type, err)
			}
		}
	}
	return nil
}

// openIn opens a socket (or anything that keeps the namespace it was made
// in) inside the named namespace; it is usable from any goroutine after.
func openIn[T any](ns string, open func() (T, error)) (T, error) {
	var v T
	err := nsutil.DoNamed(ns, func() error {
		var err error
		v, err = open()
		return err
	})
	return v, err
}
