package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// An agent is any binary that takes flanneld's flags: overlaylab's own (the
// default, `overlaylab agent …`) or another, such as upstream flanneld. The
// lab tells them apart by what `--version` prints, talks to any of them
// with flanneld's flags only, and gives our own agent its extra knobs
// (seed, lease TTL, udp mode, pprof) and our readiness probe (/readyz). A
// foreign agent is ready when it has written subnet.env after it started
// and its lease is in etcd.

// probeAgent resolves an agent spec to the binary it runs and its version.
func probeAgent(ctx context.Context, a plan.Agent, self string) (AgentState, error) {
	path := a.Path
	if path == "" {
		path = self
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return AgentState{}, fmt.Errorf("agent %s: %w", path, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return AgentState{}, fmt.Errorf("agent %s: %w", path, err)
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return AgentState{}, fmt.Errorf("agent %s: not an executable file", path)
	}
	ver, err := agentVersion(ctx, abs)
	if err != nil {
		return AgentState{}, fmt.Errorf("agent %s: %w", path, err)
	}
	return AgentState{Path: abs, Version: ver, Ours: isOurs(ver), Args: a.Args}, nil
}

// isOurs reads an agent's --version line: overlaylab prints "overlaylab …".
func isOurs(version string) bool { return strings.HasPrefix(version, "overlaylab") }

// agentVersion runs `PATH --version` and returns its first line.
func agentVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		return "", fmt.Errorf("`%s --version` failed (%v): %s", path, err, line)
	}
	if line == "" {
		return "unknown", nil
	}
	return line, nil
}

// probeAgents resolves every host's agent once per distinct binary, and
// refuses flags only our agent takes on another one.
func probeAgents(ctx context.Context, p *plan.Plan, self string) ([]AgentState, error) {
	cache := map[string]AgentState{}
	out := make([]AgentState, p.Hosts)
	for i := range out {
		a, args := p.AgentOn(i + 1)
		key := a.Path
		st, ok := cache[key]
		if !ok {
			var err error
			if st, err = probeAgent(ctx, plan.Agent{Path: a.Path}, self); err != nil {
				return nil, err
			}
			cache[key] = st
		}
		st.Args = a.Args
		if !st.Ours {
			if flag := plan.OurAgentOnlyFlag(args); flag != "" {
				return nil, &plan.FieldError{Field: "agent-arg", Value: flag, Rule: fmt.Sprintf("only overlaylab's agent takes it, and host h%d runs %s (%s)", i+1, st.Path, st.Version), Host: i + 1}
			}
			if p.Multi() {
				return nil, &plan.FieldError{Field: "agent", Value: st.Path, Rule: "a multi-network lab needs overlaylab's agent (--networks)", Host: i + 1}
			}
		}
		out[i] = st
	}
	return out, nil
}

// agentArgs is the command line of a host's agent.
func (l *Lab) agentArgs(st *State, h *HostState, extra []string) []string {
	var args []string
	if h.Agent.Ours {
		args = append(args, "agent")
	}
	flag := func(name, value string) { args = append(args, "--"+name+"="+value) }
	flag("etcd-endpoints", strings.Join(st.Etcd.Endpoints, ","))
	flag("iface", plan.HostIf)
	flag("public-ip", h.UnderlayIP)
	flag("healthz-port", strconv.Itoa(plan.HealthzPort))
	// With the CNI runtime the agent masquerades, as kube-flannel runs it:
	// the flannel CNI plugin then tells its bridge not to (ipMasq is the
	// opposite of FLANNEL_IPMASQ), and traffic between containers keeps its
	// addresses; only what leaves the Network is masqueraded.
	flag("ip-masq", strconv.FormatBool(st.Runtime == plan.RuntimeCNI))
	if t := st.Etcd.TLS; t != nil {
		flag("etcd-cafile", t.CA)
		flag("etcd-certfile", t.ClientCert)
		flag("etcd-keyfile", t.ClientKey)
	}
	if st.multi() {
		var names []string
		for _, n := range st.Networks {
			names = append(names, n.Name)
		}
		flag("etcd-prefix", defaultPrefix)
		flag("networks", strings.Join(names, ","))
		flag("subnet-dir", h.SubnetDir)
	} else {
		flag("etcd-prefix", st.Networks[0].Prefix)
		flag("subnet-file", h.SubnetFile)
	}
	if h.Agent.Ours {
		flag("healthz-ip", "0.0.0.0")
		if st.Seed != 0 {
			flag("subnet-seed", strconv.FormatInt(st.Seed, 10))
		}
	}
	args = append(args, h.Agent.Args...)
	return append(args, extra...)
}

// startAgent starts a host's agent with the host's recorded extra flags, or
// with extra when it is non-nil, and records its PID.
func (l *Lab) startAgent(host string, extra []string) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	pid, err := l.spawnAgent(st, h, extra)
	if err != nil {
		return err
	}
	return l.update(func(st *State) error { return recordAgent(st, host, pid, h.AgentArgs) })
}

// startingAgents bounds the agents of a lab being built that have been
// started and are not ready yet. All at once, hundreds of agents starve
// etcd and the controller of CPU on a small machine: etcd times requests
// out, agents retry, and a 500-host start took twice as long.
const startingAgents = 32

// startAgents starts the agents of a lab being built and waits until each
// is ready (within timeout of its own start), keeping at most
// startingAgents of them starting at a time. PIDs
// are saved in batches and the subnets once at the end (a save per agent
// would be quadratic in the lab's size); a crash in between loses no
// process: down finds them through the lab's namespaces.
func (l *Lab) startAgents(ctx context.Context, p *plan.Plan, hosts []string, timeout time.Duration) error {
	st := l.Snapshot()
	type started struct {
		host string
		pid  int
		args []string
	}
	var done []started
	flush := func() error {
		err := l.update(func(st *State) error {
			for _, s := range done {
				if err := recordAgent(st, s.host, s.pid, s.args); err != nil {
					return err
				}
			}
			return nil
		})
		done = done[:0]
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	slots := make(chan struct{}, startingAgents)
	// Upstream flanneld picks a free subnet at random and exits when
	// another agent created that lease first ("subnet already exists"):
	// agents that are not ours start one at a time, each once the one
	// before holds its lease. Ours retry, and start side by side.
	foreign := make(chan struct{}, 1)
	var mu sync.Mutex
	var ready []string
	var lastReady atomic.Int64 // unix ns of the last agent that became ready
	var err error
	for k, name := range hosts {
		select {
		case slots <- struct{}{}:
		case <-gctx.Done():
		}
		if gctx.Err() != nil {
			break
		}
		h, herr := st.host(name)
		if herr != nil {
			err = herr
			break
		}
		if !h.Agent.Ours {
			select {
			case foreign <- struct{}{}:
			case <-gctx.Done():
			}
			if gctx.Err() != nil {
				break
			}
		}
		_, args := p.AgentOn(h.Index)
		pid, serr := l.spawnAgent(st, h, args)
		if serr != nil {
			err = serr
			break
		}
		h.AgentPID = pid
		done = append(done, started{name, pid, h.AgentArgs})
		if k == 0 {
			crashPoint("mid-agents")
		}
		if len(done) == 64 {
			if err = flush(); err != nil {
				break
			}
		}
		// Each agent gets the time one agent gets from when it started
		// (a large lab's last agents start minutes after its first), and
		// more while other agents keep becoming ready: on a loaded machine
		// etcd answers a thousandth agent slowly, and that agent is not
		// stuck while the lab still moves.
		startedAt := time.Now()
		deadline := func() time.Time {
			return later(startedAt, time.Unix(0, lastReady.Load())).Add(timeout)
		}
		g.Go(func() error {
			defer func() { <-slots }()
			if !h.Agent.Ours {
				defer func() { <-foreign }()
			}
			if err := l.waitReady(gctx, st, h, startedAt, deadline, timeout, "of its start and of the last agent that became ready"); err != nil {
				return err
			}
			lastReady.Store(time.Now().UnixNano())
			mu.Lock()
			ready = append(ready, h.Name)
			mu.Unlock()
			return nil
		})
	}
	err = errors.Join(err, flush(), g.Wait())
	return errors.Join(err, l.recordReady(ready))
}

// spawnAgent starts h's agent with extra flags (nil: the host's own) and
// sets h.AgentArgs to what it ran with.
func (l *Lab) spawnAgent(st *State, h *HostState, extra []string) (int, error) {
	if extra == nil {
		extra = h.AgentArgs
	}
	h.AgentArgs = extra
	if err := os.MkdirAll(filepath.Dir(h.SubnetFile), 0o755); err != nil {
		return 0, err
	}
	if h.SubnetDir != "" {
		if err := os.MkdirAll(h.SubnetDir, 0o755); err != nil {
			return 0, err
		}
	}
	return spawn(h.Agent.Path, h.Netns, l.name, "agent-"+h.Name, l.agentArgs(st, h, extra), h.AgentLog, h.Agent.Ours)
}

// recordAgent notes in the state that host's agent runs as pid.
func recordAgent(st *State, host string, pid int, args []string) error {
	h, err := st.host(host)
	if err != nil {
		return err
	}
	h.AgentPID = pid
	h.AgentArgs = args
	h.Agent.Started = append(h.Agent.Started, pid)
	return nil
}

// waitAgents waits until the named hosts' agents are ready, then records
// each one's subnet and MTU from its subnet.env. An agent that exits first
// fails the wait with the end of its log.
func (l *Lab) waitAgents(ctx context.Context, hosts []string, timeout time.Duration) error {
	st := l.Snapshot()
	deadline := time.Now().Add(timeout)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	var mu sync.Mutex
	var ready []string
	for _, name := range hosts {
		h, err := st.host(name)
		if err != nil {
			return err
		}
		started := time.Now()
		g.Go(func() error {
			if err := l.waitReady(ctx, st, h, started, func() time.Time { return deadline }, timeout, ""); err != nil {
				return err
			}
			mu.Lock()
			ready = append(ready, h.Name)
			mu.Unlock()
			return nil
		})
	}
	return errors.Join(g.Wait(), l.recordReady(ready))
}

// waitReady polls until h's agent is ready, it exits, or the deadline
// passes (asked each time: it may move); budget says what timeout counts
// from, when not from the start of the wait.
func (l *Lab) waitReady(ctx context.Context, st *State, h *HostState, started time.Time, deadline func() time.Time, timeout time.Duration, budget string) error {
	for {
		ok, why := l.agentReady(ctx, st, h, started)
		if ok {
			return nil
		}
		if !alive(h.AgentPID, l.name) {
			return fmt.Errorf("agent on %s (%s, pid %d) exited before it was ready\n--- %s ---\n%s", h.Name, h.Agent.Path, h.AgentPID, h.AgentLog, tail(h.AgentLog, 20))
		}
		if time.Now().After(deadline()) {
			within := timeout.String()
			if budget != "" {
				within += " " + budget
			}
			return fmt.Errorf("agent on %s (%s, pid %d) not ready within %s: %s\n--- %s ---\n%s", h.Name, h.Agent.Path, h.AgentPID, within, why, h.AgentLog, tail(h.AgentLog, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// recordReady saves the subnets of the ready hosts, in one save (one per
// agent would be quadratic in a large lab), also for those that were ready
// when another one failed.
func (l *Lab) recordReady(ready []string) error {
	return l.update(func(st *State) error {
		for _, name := range ready {
			if err := recordSubnets(st, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// recordSubnets reads a ready host's subnet.env files into the state.
func recordSubnets(st *State, host string) error {
	h, err := st.host(host)
	if err != nil {
		return err
	}
	for k, n := range st.Networks {
		env, err := subnetenv.Read(h.subnetFileOf(n.Name))
		if err != nil {
			return fmt.Errorf("agent on %s is ready but: %w", host, err)
		}
		sub := env.Subnet.Masked().String()
		if k == 0 {
			h.Subnet, h.MTU = sub, env.MTU
		}
		if n.Name != "" {
			if h.Subnets == nil {
				h.Subnets = map[string]string{}
			}
			h.Subnets[n.Name] = sub
		}
	}
	return nil
}

// subnetOf is the host's subnet in a network ("": the single network's),
// as recorded from its subnet.env.
func (h *HostState) subnetOf(network string) string {
	if network == "" {
		return h.Subnet
	}
	return h.Subnets[network]
}

// subnetFileOf is the host's subnet.env for a network.
func (h *HostState) subnetFileOf(network string) string {
	if h.SubnetDir == "" {
		return h.SubnetFile
	}
	return filepath.Join(h.SubnetDir, network+".env")
}

// agentReady judges readiness by the PID the lab started: for our agent,
// /readyz answers 200 and that PID is the one listening on the port (not a
// predecessor still holding it); for another agent, every subnet.env was
// written after it started and its lease is in etcd.
func (l *Lab) agentReady(ctx context.Context, st *State, h *HostState, started time.Time) (bool, string) {
	if h.Agent.Ours {
		if !readyz(ctx, h.Netns) {
			return false, "/readyz does not answer 200"
		}
		if !listensOn(h.AgentPID, plan.HealthzPort) {
			return false, fmt.Sprintf("port %d is not held by pid %d", plan.HealthzPort, h.AgentPID)
		}
		return true, ""
	}
	for _, n := range st.Networks {
		fi, err := os.Stat(h.subnetFileOf(n.Name))
		if err != nil || fi.ModTime().Before(started.Add(-time.Second)) {
			return false, "no subnet.env written since it started"
		}
		env, err := subnetenv.Read(h.subnetFileOf(n.Name))
		if err != nil {
			return false, err.Error()
		}
		sub, err := st.LeaseOf(ctx, n.Name, h.UnderlayIP)
		if err != nil || sub != env.Subnet.Masked().String() {
			return false, fmt.Sprintf("no lease for %s in etcd matching subnet.env's %s", h.UnderlayIP, env.Subnet.Masked())
		}
	}
	return true, ""
}

// readyz asks our agent's /readyz from inside its host namespace.
func readyz(ctx context.Context, netns string) bool {
	c := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DialContext: nsutil.DialContext(netns), DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(plan.HealthzPort)+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// listensOn reports whether pid holds a TCP socket listening on port (in
// its own network namespace, which /proc/PID/net/tcp shows).
func listensOn(pid, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	inodes := map[string]bool{}
	// Go listens on 0.0.0.0 with a dual-stack socket, listed in tcp6.
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.Name()); err == nil && inodes[link] {
			return true
		}
	}
	return false
}

// KillAgent sends sig to a host's agent and waits until it is gone.
func (l *Lab) KillAgent(host string, sig syscall.Signal) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if !alive(h.AgentPID, l.name) {
		return fmt.Errorf("agent on %s (pid %d) is not running", host, h.AgentPID)
	}
	return stop(h.AgentPID, l.name, sig, 5*time.Second)
}

// StartAgentOptions tune StartAgent.
type StartAgentOptions struct {
	// NoWait returns once the process runs, without waiting for it to be
	// ready (an agent started during an etcd outage cannot be).
	NoWait bool
	// Agent, when set, replaces the host's agent binary from now on (an
	// upgrade or a downgrade).
	Agent *plan.Agent
}

// StartAgent starts a host's stopped agent again with the flags it had and,
// unless NoWait, waits until it is ready.
func (l *Lab) StartAgent(ctx context.Context, host string, o StartAgentOptions) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if alive(h.AgentPID, l.name) {
		return fmt.Errorf("agent on %s (pid %d) is still running", host, h.AgentPID)
	}
	if o.Agent != nil {
		a, err := probeAgent(ctx, *o.Agent, l.bin)
		if err != nil {
			return err
		}
		if flag := plan.OurAgentOnlyFlag(h.AgentArgs); flag != "" && !a.Ours {
			return fmt.Errorf("host %s's agent flags include %s, which %s (%s) does not take", host, flag, a.Path, a.Version)
		}
		if err := l.update(func(st *State) error {
			h, err := st.host(host)
			if err == nil {
				a.Started = h.Agent.Started
				h.Agent = a
			}
			return err
		}); err != nil {
			return err
		}
	}
	if err := l.startAgent(host, nil); err != nil {
		return err
	}
	if o.NoWait {
		return nil
	}
	return l.waitAgents(ctx, []string{host}, agentReadyTimeout(1))
}

// UpgradeAgent stops a host's agent (TERM) and starts the same host's
// agent from another binary, with the flags it had, waiting until ready.
func (l *Lab) UpgradeAgent(ctx context.Context, host, binary string, noWait bool) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if err := stop(h.AgentPID, l.name, syscall.SIGTERM, 5*time.Second); err != nil { // stop skips an agent that is not running
		return err
	}
	return l.StartAgent(ctx, host, StartAgentOptions{NoWait: noWait, Agent: &plan.Agent{Path: binary}})
}

// AgentReady reports once whether a host's agent is ready now.
func (l *Lab) AgentReady(ctx context.Context, host string) (bool, string) {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return false, err.Error()
	}
	if !alive(h.AgentPID, l.name) {
		return false, fmt.Sprintf("agent on %s (pid %d) is not running", host, h.AgentPID)
	}
	return l.agentReady(ctx, st, h, time.Time{})
}

// AgentAlive reports whether a host's agent runs.
func (s *State) AgentAlive(host string) bool {
	h, ok := s.Host(host)
	return ok && alive(h.AgentPID, s.Name)
}

// AgentExit reads how a host's last agent ended, when the process that
// started it recorded it ("exit 0", "signal: killed"); ok=false while it
// runs or when unknown.
func AgentExit(h *HostState) (code int, how string, ok bool) {
	data, err := os.ReadFile(exitPath(h.AgentLog))
	if err != nil {
		return 0, "", false
	}
	f := strings.SplitN(strings.TrimSpace(string(data)), " ", 3)
	if len(f) < 3 {
		return 0, "", false
	}
	pid, _ := strconv.Atoi(f[0])
	if pid != h.AgentPID {
		return 0, "", false // about an earlier agent
	}
	code, _ = strconv.Atoi(f[1])
	return code, f[2], true
}

func exitPath(logPath string) string { return strings.TrimSuffix(logPath, ".log") + ".exit" }

// AgentProcesses lists the processes in a host's namespace that run the
// host's agent binary: the one the lab started, and any other (a
// supervisor's restart, an agent that re-executed itself).
func (s *State) AgentProcesses(host string) []int {
	h, ok := s.Host(host)
	if !ok || h.Agent.Path == "" {
		return nil
	}
	want, err := filepath.EvalSymlinks(h.Agent.Path)
	if err != nil {
		want = h.Agent.Path
	}
	var pids []int
	for _, p := range processesIn(namespaceIDs([]string{h.Netns})) {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(p.PID) + "/exe"); err == nil && (exe == want || exe == h.Agent.Path) {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
