package overlay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/loopetcd"
	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// agentEtcd is the in-process etcd every agent test talks to. Tests keep out
// of each other's way with their own key prefix (or, for the default prefix,
// by deleting the keys they use first).
var agentEtcd *loopetcd.Server

func TestMain(m *testing.M) { loopetcd.RunTests(m, "overlaylab-agent-etcd-", &agentEtcd) }

// etcdClient is a client of the test etcd, closed when the test ends.
func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := agentEtcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdPut(t *testing.T, cli *clientv3.Client, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, val); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func etcdDeletePrefix(t *testing.T, cli *clientv3.Client, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete %s: %v", prefix, err)
	}
}

// testPrefix is a key prefix of this test's own, unique across -count runs.
func testPrefix(t *testing.T) string {
	prefixMu.Lock()
	defer prefixMu.Unlock()
	prefixN++
	return fmt.Sprintf("/agenttest/%s-%d/network", strings.ReplaceAll(t.Name(), "/", "_"), prefixN)
}

var (
	prefixMu sync.Mutex
	prefixN  int
)

// logBuffer collects the agent's log lines; the agent writes from several
// goroutines while the test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// runningAgent is an agent whose Run executes in a goroutine.
type runningAgent struct {
	agent  *Agent
	log    *logBuffer
	base   string // http://127.0.0.1:PORT
	port   int
	cancel context.CancelFunc
	done   chan error // receives Run's result once
	result error
	ended  bool
}

// agentOptions are the options every agent test starts from: loopback
// everywhere, a private subnet file, logs captured.
func agentOptions(t *testing.T, lb *logBuffer) Options {
	t.Helper()
	port, err := loopetcd.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		EtcdEndpoints: []string{agentEtcd.Endpoint},
		Iface:         "lo",
		HealthzIP:     "127.0.0.1",
		HealthzPort:   port,
		SubnetFile:    t.TempDir() + "/subnet.env",
		Logger:        lb.logger(),
	}
}

// startAgent runs an agent until the test ends (or stop is called). The
// cleanup also shows the agent's log when the test failed. Its backends are
// wrapped in a recorder that keeps Reconcile away from the kernel: these
// agents run in the machine's own namespace.
func startAgent(t *testing.T, opts Options, lb *logBuffer) *runningAgent {
	t.Helper()
	return startRecordedAgent(t, opts, lb, &recorder{})
}

// startRecordedAgent is startAgent with a recorder the test looks at.
func startRecordedAgent(t *testing.T, opts Options, lb *logBuffer, rec *recorder) *runningAgent {
	t.Helper()
	return startAgentWith(t, opts, lb, rec, nil)
}

// startAgentWith is startRecordedAgent with the backends the test gives
// (nil: the built-in ones), each wrapped in the recorder.
func startAgentWith(t *testing.T, opts Options, lb *logBuffer, rec *recorder, backends map[string]backend.Factory) *runningAgent {
	t.Helper()
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if backends != nil {
		a.backends = backends
	}
	for typ, f := range a.backends {
		a.backends[typ] = rec.wrap(f)
	}
	a.tenancy = rec.tenancy()
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{
		agent: a, log: lb, port: opts.HealthzPort, cancel: cancel, done: make(chan error, 1),
		base: fmt.Sprintf("http://127.0.0.1:%d", opts.HealthzPort),
	}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		ra.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", lb.String())
		}
	})
	return ra
}

// stop cancels Run and waits for it to return; it fails the test if Run
// takes longer than a few seconds.
func (ra *runningAgent) stop(t *testing.T) error {
	t.Helper()
	if ra.ended {
		return ra.result
	}
	ra.cancel()
	select {
	case ra.result = <-ra.done:
		ra.ended = true
	case <-time.After(10 * time.Second):
		t.Errorf("agent Run did not return within 10s of cancel")
	}
	return ra.result
}

// exited reports whether Run has returned, without waiting.
func (ra *runningAgent) exited() (error, bool) {
	if ra.ended {
		return ra.result, true
	}
	select {
	case ra.result = <-ra.done:
		ra.ended = true
		return ra.result, true
	default:
		return nil, false
	}
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

// get fetches path from the agent's HTTP endpoint.
func (ra *runningAgent) get(path string) (int, string, http.Header, error) {
	resp, err := httpClient.Get(ra.base + path)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header, err
}

// eventually polls cond every 20 ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder wraps the real backends: every call goes through to them except
// Reconcile (the tests run in the machine's own namespace, whose routes are
// not theirs to reconcile), and it records what happened when. runDrain,
// when set, makes the datapath's Run take that long to return after its
// context ends, like a datapath finishing its batches; runErr makes Run
// fail at once instead.
type recorder struct {
	runDrain time.Duration
	runErr   error

	mu         sync.Mutex
	running    bool
	runEnded   time.Time
	closes     int
	closedAt   time.Time
	closedLive bool // Close came while Run still ran
	reconciles int
	resets     [][]tenancy // plans handed to the tenancy's reset
	ensured    map[string]int
}

// tenancy is a tenancyKernel that keeps the networks' isolation away from
// the kernel (the tests run in the machine's own namespace) and records it.
func (r *recorder) tenancy() tenancyKernel { return recordedTenancy{r} }

type recordedTenancy struct{ r *recorder }

func (t recordedTenancy) reset(plan []tenancy) error {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.resets = append(t.r.resets, plan)
	return nil
}

func (t recordedTenancy) ensure(x tenancy) error {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	if t.r.ensured == nil {
		t.r.ensured = map[string]int{}
	}
	t.r.ensured[x.name]++
	return nil
}

func (r *recorder) wrap(f backend.Factory) backend.Factory {
	return func(cfg *config.Config, ext backend.External, m *backend.Metrics, o backend.Options) (backend.Backend, error) {
		be, err := f(cfg, ext, m, o)
		if err != nil {
			return nil, err
		}
		return &recorded{Backend: be, rec: r}, nil
	}
}

func (r *recorder) snapshot() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	ensured := map[string]int{}
	for k, v := range r.ensured {
		ensured[k] = v
	}
	return recorder{running: r.running, runEnded: r.runEnded, closes: r.closes, closedAt: r.closedAt, closedLive: r.closedLive, reconciles: r.reconciles,
		resets: append([][]tenancy(nil), r.resets...), ensured: ensured}
}

type recorded struct {
	backend.Backend
	rec *recorder
}

func (b *recorded) Run(ctx context.Context) error {
	r := b.rec
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running, r.runEnded = false, time.Now()
		r.mu.Unlock()
	}()
	if r.runErr != nil {
		return r.runErr
	}
	err := b.Backend.Run(ctx)
	time.Sleep(r.runDrain)
	return err
}

func (b *recorded) Close() error {
	r := b.rec
	r.mu.Lock()
	r.closes++
	r.closedAt = time.Now()
	r.closedLive = r.closedLive || r.running
	r.mu.Unlock()
	return b.Backend.Close()
}

func (b *recorded) Reconcile(ctx context.Context) error {
	b.rec.mu.Lock()
	b.rec.reconciles++
	b.rec.mu.Unlock()
	return nil
}
