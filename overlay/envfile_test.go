package overlay

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

func testEnv(subnet string) subnetenv.Env {
	return subnetenv.Env{
		Network: netip.MustParsePrefix("10.10.0.0/16"),
		Subnet:  subnetenv.SubnetFromLease(netip.MustParsePrefix(subnet)),
		MTU:     1450,
	}
}

// TestEnvFileWritesOnlyChanges: the same content is never written again,
// not even by a new agent that finds it in place.
func TestEnvFileWritesOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	f := newEnvFile(path, slog.New(slog.DiscardHandler))
	if err := f.set(testEnv("10.10.3.0/24")); err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The atomic write renames a new inode into place: an unchanged inode
	// proves nothing was written.
	ino := func(fi os.FileInfo) uint64 { return statIno(t, fi) }
	if err := f.set(testEnv("10.10.3.0/24")); err != nil {
		t.Fatal(err)
	}
	f2 := newEnvFile(path, slog.New(slog.DiscardHandler)) // a restarted agent
	if err := f2.set(testEnv("10.10.3.0/24")); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(path)
	if ino(st1) != ino(st2) {
		t.Errorf("unchanged content was rewritten (inode %d → %d)", ino(st1), ino(st2))
	}
	if err := f2.set(testEnv("10.10.4.0/24")); err != nil {
		t.Fatal(err)
	}
	env, err := subnetenv.Read(path)
	if err != nil || env.LeaseSubnet() != netip.MustParsePrefix("10.10.4.0/24") {
		t.Errorf("after a change the file says %+v, %v", env, err)
	}
	if f.failures.Load()+f2.failures.Load() != 0 || f2.pending.Load() {
		t.Errorf("failures %d, pending %v; want none", f.failures.Load()+f2.failures.Load(), f2.pending.Load())
	}
}

// TestEnvFileRetries: a failed write is counted, marked pending and
// retried with growing delays until it succeeds; a change back to what is
// on disk needs no write and cancels the retry.
func TestEnvFileRetries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(dir, nil, 0o644); err != nil { // a file where the directory should be
		t.Fatal(err)
	}
	f := newEnvFile(path, slog.New(slog.DiscardHandler))
	if f.retryC() != nil {
		t.Fatal("a retry is pending before any write")
	}
	if err := f.set(testEnv("10.10.3.0/24")); err == nil {
		t.Fatal("write into a file succeeded")
	}
	if f.failures.Load() != 1 || !f.pending.Load() || f.retryC() == nil {
		t.Fatalf("after a failed write: failures %d, pending %v, retry scheduled %v", f.failures.Load(), f.pending.Load(), f.retryC() != nil)
	}
	first := f.delay
	<-f.retryC()
	f.retry()
	if f.failures.Load() != 2 || f.delay <= first {
		t.Errorf("after a failed retry: failures %d, delay %v (was %v); want 2 and a longer delay", f.failures.Load(), f.delay, first)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.retryC():
	case <-time.After(10 * time.Second):
		t.Fatal("no retry within 10s")
	}
	f.retry()
	if f.pending.Load() || f.retryC() != nil {
		t.Errorf("after a successful retry: pending %v, retry scheduled %v", f.pending.Load(), f.retryC() != nil)
	}
	if env, err := subnetenv.Read(path); err != nil || env.LeaseSubnet() != netip.MustParsePrefix("10.10.3.0/24") {
		t.Errorf("retried file says %+v, %v", env, err)
	}

	// A change that fails (the directory is moved away and a file put in
	// its place), then a change back to the file's content.
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.set(testEnv("10.10.9.0/24")); err == nil {
		t.Fatal("write succeeded on a broken path")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	if err := f.set(testEnv("10.10.3.0/24")); err != nil {
		t.Fatal(err)
	}
	if f.pending.Load() || f.retryC() != nil {
		t.Errorf("back to the content on disk: pending %v, retry scheduled %v; want settled without a write", f.pending.Load(), f.retryC() != nil)
	}
}

func statIno(t *testing.T, fi os.FileInfo) uint64 {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no inode numbers here")
	}
	return st.Ino
}
