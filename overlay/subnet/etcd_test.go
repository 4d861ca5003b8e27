package subnet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// testEtcd is an in-process single-member etcd on loopback.
type testEtcd struct {
	dir          string
	cport, pport int
	e            *embed.Etcd
	endpoint     string
}

// sharedEtcd serves every test that does not need to stop its etcd; tests
// isolate themselves with their own key prefix.
var sharedEtcd *testEtcd

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "overlaylab-subnet-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedEtcd, err = startEtcd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	sharedEtcd.stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort asks the kernel for an unused loopback port. Another process could
// grab it before etcd binds it, so startEtcd retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string) (*testEtcd, error) {
	var lastErr error
	for range 5 {
		cport, err := freePort()
		if err != nil {
			return nil, err
		}
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		te := &testEtcd{dir: dir, cport: cport, pport: pport, endpoint: fmt.Sprintf("http://127.0.0.1:%d", cport)}
		if lastErr = te.start(); lastErr == nil {
			return te, nil
		}
		if !strings.Contains(lastErr.Error(), "address already in use") {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// config builds a fresh embed.Config each start: StartEtcd keeps state in
// the one it is given, and a restart must reuse the same ports and data.
func (te *testEtcd) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Dir = te.dir
	cfg.Name = "test"
	curl := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", te.cport)}
	purl := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", te.pport)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{curl}, []url.URL{curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{purl}, []url.URL{purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// A nop logger: even at "error" level etcd reports its own orderly
	// shutdown as errors, which would bury the test's output.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

func (te *testEtcd) start() error {
	e, err := embed.StartEtcd(te.config())
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return fmt.Errorf("etcd not ready after 20s")
	}
	te.e = e
	return nil
}

func (te *testEtcd) stop() {
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}

// startOwnEtcd gives a test its own etcd, for tests that stop or restart it.
func startOwnEtcd(t *testing.T) *testEtcd {
	t.Helper()
	te, err := startEtcd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(te.stop)
	return te
}

func newClient(t *testing.T, te *testEtcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{te.endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// testLogger sends the manager's logs to the test's output (shown on failure
// or with -v). Goroutines that log must end before the test does.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testPrefix isolates a test's keys in the shared etcd. It is remembered per
// *testing.T so that repeated calls within one test agree, and numbered so
// that -count=N repetitions (same name, same etcd) do not see each other.
func testPrefix(t *testing.T) string {
	prefixMu.Lock()
	defer prefixMu.Unlock()
	if p, ok := prefixes[t]; ok {
		return p
	}
	p := fmt.Sprintf("/test/%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), len(prefixes))
	prefixes[t] = p
	return p
}

var (
	prefixMu sync.Mutex
	prefixes = map[*testing.T]string{}
)

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
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
