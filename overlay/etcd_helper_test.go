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
// cleanup also shows the agent's log when the test failed.
func startAgent(t *testing.T, opts Options, lb *logBuffer) *runningAgent {
	t.Helper()
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
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
