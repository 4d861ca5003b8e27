package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// testState is a two-host lab's state as `up` would have saved it.
func testState(t *testing.T, backend string) *State {
	t.Helper()
	n, err := plan.NewNetwork("", plan.DefaultNetwork, 0, backend)
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Spec{Name: "t", Hosts: 2, Containers: 2, Networks: []plan.Network{n}, Underlay: netip.MustParsePrefix(plan.DefaultUnderlay)}.Check()
	if err != nil {
		t.Fatal(err)
	}
	st := newState(p, t.TempDir())
	l := &Lab{name: "t", dir: st.StateDir, st: st}
	for i := 1; i <= 2; i++ {
		h := l.newHost(st, p.Addr, i, AgentState{Path: "/bin/overlaylab", Ours: true})
		h.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, byte(i), 0}), 24).String()
		for j := 1; j <= 2; j++ {
			h.Containers = append(h.Containers, ContainerState{Name: plan.Names{}.Container("", j), Netns: p.Names.ContainerNS(i, "", j),
				IP: netip.AddrFrom4([4]byte{10, 10, byte(i), byte(j + 1)}).String()})
		}
		st.Hosts = append(st.Hosts, h)
	}
	st.Etcd.Endpoints = []string{"http://192.168.77.250:2379"}
	st.NextHost = 3
	return st
}

func TestLockWaitsAndSaysForWhom(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab1")
	ctx := context.Background()
	first, err := acquireLock(ctx, dir, "lab1", "up", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	var said bytes.Buffer
	got := make(chan error, 1)
	go func() {
		l, err := acquireLock(ctx, dir, "lab1", "host add", false, &said)
		if err == nil {
			l.release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second lock taken while the first is held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.release()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if s := said.String(); !strings.Contains(s, `lab "lab1" is busy (pid `) || !strings.Contains(s, ": up, since ") {
		t.Errorf("waiting message %q", s)
	}
}

// A waiter whose lab is removed by the holder (down) finds no lab instead of
// a lock on a deleted file.
func TestLockWaiterSeesLabRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab2")
	ctx := context.Background()
	holder, err := acquireLock(ctx, dir, "lab2", "down", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	waiting := &saidWaiting{ch: make(chan struct{})}
	go func() {
		l, err := acquireLock(ctx, dir, "lab2", "kill h1", false, waiting)
		if err == nil {
			l.release()
		}
		got <- err
	}()
	// Remove the lab only once the waiter waits on its lock: a waiter that
	// had not started yet would find no lab whatever the lock does.
	select {
	case <-waiting.ch:
	case err := <-got:
		t.Fatalf("waiter returned while the lock was held: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never said it waits")
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	holder.release()
	if err := <-got; !errors.Is(err, errNoDir) {
		t.Fatalf("waiter got %v, want errNoDir", err)
	}
}

// saidWaiting is a lock's wait writer that closes ch at the first line.
type saidWaiting struct {
	once sync.Once
	ch   chan struct{}
}

func (w *saidWaiting) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.ch) })
	return len(p), nil
}

func TestLockGivesUpWithContext(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab3")
	holder, err := acquireLock(context.Background(), dir, "lab3", "up", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := acquireLock(ctx, dir, "lab3", "up", true, nil); err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("got %v", err)
	}
}

func TestOpenRejectsBadNames(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"..", "", "../x", "A"} {
		if l, err := Open(context.Background(), root, name, Options{Binary: "/bin/true"}); err == nil {
			l.Close()
			t.Errorf("Open(%q) succeeded", name)
		}
		if _, err := Down(context.Background(), root, name, Options{Binary: "/bin/true"}); err == nil {
			t.Errorf("Down(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("root gone: %v", err)
	}
}

func TestOpenMissingLab(t *testing.T) {
	_, err := Open(context.Background(), t.TempDir(), "nolab", Options{Binary: "/bin/true"})
	if !errors.Is(err, ErrNoLab) {
		t.Fatalf("got %v, want ErrNoLab", err)
	}
}

func TestStateRoundTripAndUpgrade(t *testing.T) {
	st := testState(t, config.BackendVXLAN)
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	back, err := loadState(st.StateDir, "t")
	if err != nil {
		t.Fatal(err)
	}
	if back.Hosts[1].UnderlayIP != "192.168.77.2" || back.NextHost != st.NextHost || back.Networks[0].VNI != 1 {
		t.Errorf("round trip lost data: %+v", back)
	}
	// A state written before hosts had an index and labs a NextHost.
	old := `{"name":"t","backend":"udp","network":"10.10.0.0/16","etcd":{"endpoints":[],"netns":"ol-t-etcd","members":[]},
"underlay":{"netns":"ol-t-ul","bridge":"ol-t-br","cidr":"192.168.77.0/24","mtu":0},
"hosts":[{"name":"h1","netns":"ol-t-h1","underlayIP":"192.168.77.1","containers":[]},{"name":"h3","netns":"ol-t-h3","underlayIP":"192.168.77.3","containers":[]}]}`
	dir := t.TempDir()
	if err := os.WriteFile(statePath(dir), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	up, err := loadState(dir, "t")
	if err != nil {
		t.Fatal(err)
	}
	if up.Hosts[1].Index != 3 || up.NextHost != 4 || up.Runtime != plan.RuntimeBridge || len(up.Networks) != 1 || up.Networks[0].Prefix != defaultPrefix {
		t.Errorf("upgrade: %+v", up)
	}
	if _, err := loadState(dir, "other"); err == nil {
		t.Error("a state naming another lab was accepted")
	}
}

func TestClone(t *testing.T) {
	st := testState(t, config.BackendUDP)
	c := st.Clone()
	c.Hosts[0].Containers[0].IP = "1.2.3.4"
	c.Hosts = append(c.Hosts, HostState{Name: "h9"})
	if st.Hosts[0].Containers[0].IP == "1.2.3.4" || len(st.Hosts) != 2 {
		t.Error("a clone shares memory with its original")
	}
}

func TestTarget(t *testing.T) {
	st := testState(t, config.BackendUDP)
	st.Etcd.Netns = "ol-t-etcd"
	st.Etcd.Members = []EtcdMember{{Netns: "ol-t-etcd"}, {Netns: "ol-t-etcd2"}}
	for target, want := range map[string]string{
		"h1": "ol-t-h1", "h2/c2": "ol-t-h2-c2", "etcd": "ol-t-etcd", "etcd2": "ol-t-etcd2", "underlay": "ol-t-ul",
	} {
		if got, err := st.Target(target); err != nil || got != want {
			t.Errorf("Target(%q) = %q, %v; want %q", target, got, err, want)
		}
	}
	for target, wants := range map[string][]string{
		"h9":    {`"h9"`, "h1, h2", "etcd", "underlay"},
		"h1/c9": {"h1", `"c9"`, "c1, c2"},
		"":      {"h1, h2"},
		// Cases the CLI's own target test had before it moved here.
		"h9/c1":   {`"h9"`, "h1, h2"},
		"h1/":     {"h1"},
		"etcd/c1": {"etcd/c1"},
	} {
		_, err := st.Target(target)
		for _, w := range wants {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Target(%q) = %v, want it to mention %s", target, err, w)
			}
		}
	}
}

// Our agent gets our knobs; any other agent gets flanneld's flags only.
func TestAgentArgs(t *testing.T) {
	st := testState(t, config.BackendUDP)
	st.Seed = 7
	l := &Lab{name: "t", st: st}
	ours := st.Hosts[0]
	args := l.agentArgs(st, &ours, []string{"--udp-mode=simple"})
	joined := strings.Join(args, " ")
	for _, want := range []string{"agent", "--etcd-endpoints=http://192.168.77.250:2379", "--iface=eth0", "--public-ip=192.168.77.1",
		"--subnet-file=" + ours.SubnetFile, "--healthz-port=9285", "--subnet-seed=7", "--udp-mode=simple", "--etcd-prefix=/coreos.com/network"} {
		if !slices.Contains(args, want) {
			t.Errorf("our agent's args %q lack %s", joined, want)
		}
	}
	foreign := st.Hosts[1]
	foreign.Agent = AgentState{Path: "/opt/flanneld", Version: "v0.28.10", Args: []string{"--iptables-forward-rules=false"}}
	args = l.agentArgs(st, &foreign, nil)
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if a == "agent" || plan.OurAgentOnlyFlag([]string{name}) != "" || name == "--healthz-ip" {
			t.Errorf("flanneld gets %s (args %q)", a, args)
		}
	}
	if !slices.Contains(args, "--iptables-forward-rules=false") || !slices.Contains(args, "--ip-masq=false") {
		t.Errorf("flanneld's args %q", args)
	}
}

func TestProbeAgentsRefusesOurKnobsOnForeignAgents(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "flanneld")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho v0.28.10\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	n, _ := plan.NewNetwork("", plan.DefaultNetwork, 0, config.BackendUDP)
	s := plan.Spec{Name: "t", Hosts: 2, Networks: []plan.Network{n}, Underlay: netip.MustParsePrefix(plan.DefaultUnderlay),
		Agent: plan.Agent{Path: fake}, AgentArgs: []string{"--lease-ttl=10s"}}
	p, err := s.Check()
	if err != nil {
		t.Fatal(err)
	}
	_, err = probeAgents(context.Background(), p, "/bin/true")
	if err == nil || !strings.Contains(err.Error(), "--lease-ttl") || !strings.Contains(err.Error(), "v0.28.10") {
		t.Fatalf("got %v", err)
	}
	p.AgentArgs = nil
	as, err := probeAgents(context.Background(), p, "/bin/true")
	if err != nil || as[1].Ours || as[1].Version != "v0.28.10" || as[1].Path != fake {
		t.Fatalf("probe: %+v %v", as, err)
	}
	if _, err := probeAgent(context.Background(), plan.Agent{Path: filepath.Join(dir, "missing")}, "/bin/true"); err == nil {
		t.Error("a missing agent binary was accepted")
	}
	if !isOurs("overlaylab devel-abc") || isOurs("v0.28.10") {
		t.Error("isOurs")
	}
}

func TestJudge(t *testing.T) {
	eps := []Endpoint{{Name: "a", Netns: "x"}, {Name: "b", Netns: "y"}, {Name: "c", Netns: "z"}}
	all := func(i, j int) bool { return i != j }
	c := &Counts{Sent: [][]int{{0, 5, 5}, {5, 0, 5}, {5, 5, 0}}, Received: [][]int{{0, 5, 4}, {5, 0, 5}, {0, 5, 0}}}
	if m := Judge(eps, all, c, Want{Kind: WantAll}); m.OK() || m.Failures() != 2 || m.Pairs() != 6 {
		t.Errorf("all: ok=%v failures=%d pairs=%d", m.OK(), m.Failures(), m.Pairs())
	}
	if m := Judge(eps, all, c, Want{Kind: WantAll, Once: true}); m.OK() || m.Failures() != 1 {
		t.Errorf("all once: ok=%v failures=%d", m.OK(), m.Failures())
	}
	if m := Judge(eps, all, c, Want{Kind: WantNone}); m.OK() || m.Failures() != 5 {
		t.Errorf("none: ok=%v failures=%d", m.OK(), m.Failures())
	}
	// 30 sent, 24 answered: 20% loss.
	if m := Judge(eps, all, c, Want{Kind: WantLoss, MaxLoss: 20}); !m.OK() {
		t.Errorf("loss<=20%%: %s", m.Summary())
	}
	if m := Judge(eps, all, c, Want{Kind: WantLoss, MaxLoss: 19}); m.OK() {
		t.Errorf("loss<=19%%: %s", m.Summary())
	}
	// Nothing probed proves nothing.
	if m := Judge(eps, func(i, j int) bool { return false }, c, Want{Kind: WantNone}); m.OK() {
		t.Error("an empty check passed")
	}
	s := Judge(eps, all, c, Want{Kind: WantAll}).String()
	if !strings.Contains(s, "4/5!") || !strings.Contains(s, "5/5") {
		t.Errorf("rendering:\n%s", s)
	}
}

// The sample of a large lab probes every pair of hosts once, from the lower
// host (the reply crosses back), and every same-host pair.
func TestSampleCoversEveryHostPair(t *testing.T) {
	st := &State{}
	var eps []Endpoint
	for i := 1; i <= 30; i++ {
		h := HostState{Name: plan.Names{}.Host(i)}
		st.Hosts = append(st.Hosts, h)
		for j := 1; j <= 2; j++ {
			eps = append(eps, Endpoint{Name: h.Name + "/c" + string(rune('0'+j))})
		}
	}
	pair := st.sample(eps)
	covered := map[[2]string]bool{}
	n := 0
	for i := range eps {
		for j := range eps {
			if pair(i, j) {
				n++
				covered[[2]string{strings.Split(eps[i].Name, "/")[0], strings.Split(eps[j].Name, "/")[0]}] = true
			}
		}
	}
	for a := 1; a <= 30; a++ {
		for b := 1; b <= 30; b++ {
			ha, hb := plan.Names{}.Host(a), plan.Names{}.Host(b)
			want := a <= b // the same host, or from the lower one
			if covered[[2]string{ha, hb}] != want {
				t.Errorf("%s → %s probed: %v, want %v", ha, hb, covered[[2]string{ha, hb}], want)
			}
		}
	}
	if n >= len(eps)*(len(eps)-1) {
		t.Errorf("the sample probes every pair (%d)", n)
	}
}

func TestEchoFlowsAndWireMACs(t *testing.T) {
	for _, backend := range []string{config.BackendUDP, config.BackendHostGW} {
		st := testState(t, backend)
		eps := st.Endpoints("")
		flows := st.echoFlows("h1", eps, func(i, j int) bool { return true }, nil)
		if len(flows) != 4 { // 2 containers on h1 x 2 on h2
			t.Fatalf("%s: %d flows", backend, len(flows))
		}
		f := flows[0]
		if backend == config.BackendHostGW && f.OuterSrc.IsValid() {
			t.Errorf("host-gw flow with an outer header: %v", f)
		}
		if backend == config.BackendUDP && (f.OuterSrc.String() != "192.168.77.1" || f.OuterDst.String() != "192.168.77.2") {
			t.Errorf("udp flow %v", f)
		}
	}
	st := testState(t, config.BackendHostGW)
	macs, err := st.WireMACs(context.Background(), "")
	if err != nil || macs["h2"].String() != plan.MAC(plan.MACHost, 2, 0).String() {
		t.Errorf("host-gw wire MACs %v %v", macs, err)
	}
	st = testState(t, config.BackendUDP)
	if macs, err := st.WireMACs(context.Background(), ""); err != nil || len(macs) != 0 {
		t.Errorf("udp wire MACs %v %v", macs, err)
	}
}

func TestParseReply(t *testing.T) {
	ip := func(src, dst [4]byte, payload []byte) []byte {
		h := make([]byte, 20)
		h[0] = 0x45
		h[9] = 1
		copy(h[12:], src[:])
		copy(h[16:], dst[:])
		return append(h, payload...)
	}
	echo := func(typ byte, id, seq uint16) []byte {
		m := make([]byte, 8)
		m[0] = typ
		binary.BigEndian.PutUint16(m[4:], id)
		binary.BigEndian.PutUint16(m[6:], seq)
		return m
	}
	r, ok := parseReply(ip([4]byte{10, 10, 2, 2}, [4]byte{10, 10, 1, 2}, echo(0, 77, 5)), 77)
	if !ok || r.kind != echoReply || r.seq != 5 || r.src.String() != "10.10.2.2" {
		t.Errorf("echo reply: %+v %v", r, ok)
	}
	if _, ok := parseReply(ip([4]byte{10, 10, 2, 2}, [4]byte{10, 10, 1, 2}, echo(0, 78, 5)), 77); ok {
		t.Error("another prober's reply matched")
	}
	// Fragmentation needed, next-hop MTU 1400, quoting our echo to 10.10.2.2.
	quoted := ip([4]byte{10, 10, 1, 2}, [4]byte{10, 10, 2, 2}, echo(8, 77, 9))
	unreach := make([]byte, 8)
	unreach[0], unreach[1] = 3, 4
	binary.BigEndian.PutUint16(unreach[6:], 1400)
	r, ok = parseReply(ip([4]byte{192, 168, 77, 1}, [4]byte{10, 10, 1, 2}, append(unreach, quoted...)), 77)
	if !ok || r.kind != fragNeeded || r.mtu != 1400 || r.seq != 9 || r.src.String() != "10.10.2.2" {
		t.Errorf("frag needed: %+v %v", r, ok)
	}
	if _, ok := parseReply([]byte{0x45, 0}, 77); ok {
		t.Error("a truncated packet parsed")
	}
	// An IP header with options (IHL 6) is honoured; an echo request is no reply.
	withOpts := append([]byte{0x46, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 10, 10, 2, 2, 10, 10, 1, 2, 1, 1, 1, 1}, echo(0, 77, 300)...)
	if r, ok := parseReply(withOpts, 77); !ok || r.seq != 300 {
		t.Errorf("reply after IP options: %+v %v", r, ok)
	}
	if _, ok := parseReply(ip([4]byte{10, 10, 2, 2}, [4]byte{10, 10, 1, 2}, echo(8, 77, 5)), 77); ok {
		t.Error("an echo request was taken for a reply")
	}
}

// listensOn judges readiness by PID: it must see our own listener and not
// another process's.
func TestListensOn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if !listensOn(os.Getpid(), port) {
		t.Errorf("our own listener on %d not seen", port)
	}
	sleep := exec.Command("sleep", "5")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	if listensOn(sleep.Process.Pid, port) {
		t.Error("a process without the socket was said to listen")
	}
}

// Processes are found through their network namespace: a child of ours
// shares ours.
func TestProcessesIn(t *testing.T) {
	id, ok := statNS("/proc/self/ns/net")
	if !ok {
		t.Skip("no /proc/self/ns/net")
	}
	sleep := exec.Command("sleep", "5")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleep.Process.Kill(); _ = sleep.Wait() }()
	found := processesIn(map[nsID]string{id: "self"})
	if !slices.ContainsFunc(found, func(p proc) bool { return p.PID == sleep.Process.Pid && p.Comm == "sleep" }) {
		t.Errorf("sleep %d not found among %v", sleep.Process.Pid, found)
	}
	if slices.ContainsFunc(found, func(p proc) bool { return p.PID == os.Getpid() }) {
		t.Error("the caller itself is listed")
	}
	if got := processesIn(map[nsID]string{{dev: 1, ino: 1}: "none"}); len(got) != 0 {
		t.Errorf("found %v in a namespace that does not exist", got)
	}
}

func TestTeardownSummary(t *testing.T) {
	td := &Teardown{Lab: "x"}
	if s := td.Summary(); s != `lab "x": nothing to remove` {
		t.Errorf("%q", s)
	}
	td = &Teardown{Lab: "x", Namespaces: []string{"ol-x-ul"}, Processes: []string{"42 (iperf3 in ol-x-h2-c1)"}, Left: []string{"ol-x-h1"}}
	s := td.Summary()
	for _, want := range []string{"1 namespaces removed", "iperf3", "NOT removed: ol-x-h1"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary %q lacks %q", s, want)
		}
	}
	js, _ := json.Marshal(td)
	if !bytes.Contains(js, []byte(`"left":["ol-x-h1"]`)) {
		t.Errorf("json %s", js)
	}
}

// Every etcd call of the controller has a deadline: an etcd that accepts
// connections and never answers (dead between readiness and the config
// write) gives an error, not a hang.
func TestEtcdCallsHaveDeadlines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex // the accept loop appends while the test's end reads
	var conns []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accepted, never answered
			mu.Unlock()
		}
	}()
	st := testState(t, config.BackendUDP)
	st.Etcd.Endpoints = []string{"http://" + ln.Addr().String()}
	st.Etcd.Netns = "" // dial from here
	l := &Lab{name: "t", dir: st.StateDir, st: st}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- l.writeConfigs(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "did not answer within") {
			t.Errorf("writeConfigs against a silent etcd: %v", err)
		}
	case <-time.After(etcdTimeout + 10*time.Second):
		t.Fatalf("writeConfigs still waits after %s", time.Since(start))
	}
	if _, err := st.Leases(context.Background(), ""); err == nil {
		t.Error("reading leases from a silent etcd succeeded")
	}
}

// TestTCPOutcome: a connection attempt's error names its outcome, the
// socket's own deadline ("i/o timeout") as a timeout too: a dial whose
// socket deadline fires before its context's used to be reported as an
// error, so a tcp check wanting a timeout could not pass.
func TestTCPOutcome(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp4", Err: err} }
	for _, c := range []struct {
		err  error
		want string
		ok   bool
	}{
		{op(os.ErrDeadlineExceeded), TCPTimeout, true},
		{op(context.DeadlineExceeded), TCPTimeout, true},
		{op(&os.SyscallError{Syscall: "connect", Err: syscall.ETIMEDOUT}), TCPTimeout, true},
		{op(&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}), TCPRefused, true},
		{op(&os.SyscallError{Syscall: "connect", Err: syscall.EHOSTUNREACH}), "unreachable", true},
		{op(errors.New("something else")), "", false},
	} {
		if got, ok := tcpOutcome(c.err); got != c.want || ok != c.ok {
			t.Errorf("tcpOutcome(%v) = %q, %v; want %q, %v", c.err, got, ok, c.want, c.ok)
		}
	}
}
