package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// UpOptions configure Up.
type UpOptions struct {
	Options
	// Verify runs the ping matrix and the wire check once the lab is built.
	Verify bool
}

// buildParallelism bounds the namespaces built at once: netlink work is
// mostly the kernel's, and two cores gain nothing from more.
const buildParallelism = 8

// Up builds a lab from a spec and, with Verify, checks it. On a build error
// it removes what it made and returns no handle. On a verification failure
// the lab stays up for inspection: the handle comes back with the error.
// The returned handle holds the lab's lock until Close.
func Up(ctx context.Context, root string, s plan.Spec, o UpOptions) (*Lab, error) {
	p, err := s.Check()
	if err != nil {
		return nil, err
	}
	if err := Preflight(p.Backends); err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	dir := plan.StateDir(root, s.Name)
	if o.Command == "overlaylab" {
		o.Command = "up"
	}
	lk, err := acquireLock(ctx, dir, s.Name, o.Command, true, o.Wait)
	if err != nil {
		return nil, err
	}
	l := &Lab{root: root, name: s.Name, dir: dir, bin: o.Binary, out: o.Out, lock: lk}
	if _, err := os.Stat(statePath(dir)); err == nil {
		lk.release()
		return nil, fmt.Errorf("lab %q already exists: use it, or run `%s down --name %s` first", s.Name, selfCommand(), s.Name)
	}
	if ns := labNamespaces(s.Name); len(ns) > 0 {
		lk.release()
		return nil, fmt.Errorf("lab %q has leftover namespaces (%s, ...) but no state: run `%s down --name %s` first", s.Name, ns[0], selfCommand(), s.Name)
	}
	agents, err := probeAgents(ctx, p, o.Binary)
	var cniDir string
	if err == nil && p.Runtime == plan.RuntimeCNI {
		cniDir, err = cniPluginDir(p.CNIDir, o.Binary)
	}
	if err != nil {
		l.removeDir()
		lk.release()
		return nil, err
	}
	l.st = newState(p, dir)
	l.st.CNIDir = cniDir
	if err := l.st.save(); err != nil {
		l.removeDir()
		lk.release()
		return nil, err
	}
	pr := &progress{w: o.Out, start: time.Now()}
	if err := l.build(ctx, p, agents, pr); err != nil {
		if _, derr := l.teardown(context.WithoutCancel(ctx)); derr != nil {
			err = fmt.Errorf("%w\n(and removing what was built failed: %v)", err, derr)
		}
		lk.release()
		return nil, err
	}
	if err := l.update(func(st *State) error { st.Phase = "up"; return nil }); err != nil {
		return l, err
	}
	if o.Verify {
		if err := l.Verify(ctx, pr); err != nil {
			pr.closePhase(time.Now())
			l.phases = pr.phases
			return l, err
		}
	}
	pr.summary(l.Snapshot(), root)
	l.phases = pr.phases
	return l, nil
}

// newState is the state of a lab about to be built.
func newState(p *plan.Plan, dir string) *State {
	first := p.Networks[0].Config
	st := &State{
		Name: p.Name, Backend: first.Backend.Type, Network: first.Network.String(), StateDir: dir, Phase: "building",
		Seed: p.Seed, Runtime: p.Runtime, NextHost: 1, Hosts: []HostState{},
		Underlay: UnderlayState{Netns: p.Names.UnderlayNS(), Bridge: plan.UnderlayBridge, CIDR: p.Addr.Underlay.String(), MTU: p.UnderlayMTU},
		Etcd:     EtcdState{Netns: p.Names.EtcdNS(1), External: p.Etcd.Endpoints},
	}
	if st.Runtime == "" {
		st.Runtime = plan.RuntimeBridge
	}
	st.Defaults = HostDefaults{Agent: p.Agent, AgentArgs: p.AgentArgs}
	if p.Agent.Path != "" {
		if abs, err := filepath.Abs(p.Agent.Path); err == nil {
			st.Defaults.Agent.Path = abs
		}
	}
	for _, n := range p.Networks {
		js, _ := n.Config.Marshal()
		ns := NetworkState{Name: n.Name, Network: n.Config.Network.String(), Backend: n.Config.Backend.Type, Prefix: defaultPrefix, Config: js}
		if n.Name != "" {
			ns.Prefix = defaultPrefix + "/" + n.Name
		}
		ns.VNI, ns.Port = n.Config.Backend.VNI, n.Config.Backend.Port
		st.Networks = append(st.Networks, ns)
	}
	return st
}

func (l *Lab) build(ctx context.Context, p *plan.Plan, agents []AgentState, pr *progress) error {
	pr.phase("underlay")
	if err := topo.CreateNS(p.Names.UnderlayNS()); err != nil {
		return err
	}
	if err := topo.CreateBridge(p.Names.UnderlayNS(), plan.UnderlayBridge, netip.Prefix{}, p.UnderlayMTU, nil); err != nil {
		return err
	}
	pr.phase("etcd")
	if err := l.startEtcd(ctx, p); err != nil {
		return err
	}
	crashPoint("after-etcd")
	pr.phase(fmt.Sprintf("hosts (%d)", p.Hosts))
	st := l.Snapshot()
	hosts := make([]HostState, p.Hosts)
	for i := range hosts {
		hosts[i] = l.newHost(st, p.Addr, i+1, agents[i])
	}
	if err := l.update(func(st *State) error { st.Hosts = hosts; st.NextHost = p.Hosts + 1; return nil }); err != nil {
		return err
	}
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(buildParallelism)
	for i := range hosts {
		g.Go(func() error {
			err := l.buildHost(st.Underlay, p.Addr, &hosts[i])
			if i == 0 {
				crashPoint("mid-hosts")
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := l.wireUnderlay(nil); err != nil {
		return err
	}
	pr.phase(fmt.Sprintf("agents (%d, waiting for each to hold a lease)", p.Hosts))
	names := make([]string, p.Hosts)
	for i := range hosts {
		names[i] = hostName(i + 1)
	}
	if err := l.startAgents(ctx, p, names, agentReadyTimeout(startingAgents)); err != nil {
		return err
	}
	pr.phase(fmt.Sprintf("containers (%d per host%s, %s runtime)", p.Containers, perNetwork(p), p.Runtime))
	// One snapshot and one save for all containers: per container, both
	// would be quadratic in a large lab's size. A crash in between loses
	// nothing that down cannot find: the containers are namespaces.
	st = l.Snapshot()
	made := make([][]ContainerState, len(st.Hosts))
	g, _ = errgroup.WithContext(ctx)
	g.SetLimit(buildParallelism)
	for i := range hosts {
		g.Go(func() error {
			var err error
			made[i], err = l.makeContainers(ctx, st, &st.Hosts[i], p.ContainersOn(i+1), nil)
			if i == 0 {
				crashPoint("mid-containers")
			}
			return err
		})
	}
	err := g.Wait()
	return errors.Join(err, l.update(func(st *State) error {
		for i := range made {
			st.Hosts[i].Containers = append(st.Hosts[i].Containers, made[i]...)
		}
		return nil
	}))
}

func perNetwork(p *plan.Plan) string {
	if p.Multi() {
		return " and network"
	}
	return ""
}

func hostName(i int) string { return plan.Names{}.Host(i) }

// agentReadyTimeout grows with the lab: a thousand agents acquiring leases
// at once queue at etcd.
func agentReadyTimeout(hosts int) time.Duration {
	return 30*time.Second + time.Duration(hosts)*100*time.Millisecond
}

// removeDir removes the lab's state dir (only it: the name was checked).
func (l *Lab) removeDir() {
	if filepath.Dir(l.dir) == filepath.Clean(l.root) && filepath.Base(l.dir) == l.name {
		_ = os.RemoveAll(l.dir)
	}
}

// EnvCrashAt names a build phase at which `up` kills itself with SIGKILL
// (after-etcd, mid-hosts, mid-agents, mid-containers). It exists so tests
// can prove that a crash at any point leaves nothing `down --all` misses.
const EnvCrashAt = "OVERLAYLAB_CRASH_AT"

func crashPoint(name string) {
	if os.Getenv(EnvCrashAt) == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
