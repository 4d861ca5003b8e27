package subnet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/loopetcd"
)

// sharedEtcd serves every test that does not need to stop its etcd; tests
// isolate themselves with their own key prefix.
var sharedEtcd *loopetcd.Server

func TestMain(m *testing.M) { loopetcd.RunTests(m, "overlaylab-subnet-etcd-", &sharedEtcd) }

// startOwnEtcd gives a test its own etcd, for tests that stop or restart it.
func startOwnEtcd(t *testing.T) *loopetcd.Server {
	t.Helper()
	te, err := loopetcd.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(te.Stop)
	return te
}

func newClient(t *testing.T, te *loopetcd.Server) *clientv3.Client {
	t.Helper()
	cli, err := te.Client()
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
