package overlay

import (
	"bytes"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/overlaylab/overlaylab/overlay/subnetenv"
)

// Retry delays for a subnet.env write that failed.
const (
	envRetryMin = 500 * time.Millisecond
	envRetryMax = 30 * time.Second
)

// envFile keeps subnet.env in step with the lease. It writes only when the
// content changes (a same-subnet re-acquire writes nothing), and a failed
// write is logged, counted and retried with backoff while the datapath runs
// on: the running overlay does not depend on the file, only containers
// started later do.
//
// Methods other than the counters are called from one goroutine (the
// agent's event loop), which also waits on retryC.
type envFile struct {
	path string
	log  *slog.Logger

	onDisk []byte        // content known to be in the file; nil = none or unknown
	want   subnetenv.Env // what the file should say, once set was called
	delay  time.Duration // next retry delay
	timer  *time.Timer   // pending retry; nil when none

	failures atomic.Uint64 // failed writes, for /metrics
	pending  atomic.Bool   // the file lags want, for /metrics
}

// newEnvFile starts from what the file holds now, so that a restarted agent
// whose lease did not change leaves the file alone.
func newEnvFile(path string, log *slog.Logger) *envFile {
	f := &envFile{path: path, log: log}
	if data, err := os.ReadFile(path); err == nil {
		f.onDisk = data
	}
	return f
}

// set makes the file say e. It returns the write error, if any; a retry is
// then already scheduled.
func (f *envFile) set(e subnetenv.Env) error {
	f.want = e
	if bytes.Equal(subnetenv.Render(e), f.onDisk) {
		f.settled()
		return nil
	}
	return f.write()
}

// retryC fires when a failed write is due to be retried (never when none
// is pending).
func (f *envFile) retryC() <-chan time.Time {
	if f.timer == nil {
		return nil
	}
	return f.timer.C
}

// retry is called when retryC fired.
func (f *envFile) retry() {
	f.timer = nil
	_ = f.write()
}

func (f *envFile) write() error {
	if err := subnetenv.Write(f.path, f.want); err != nil {
		f.failures.Add(1)
		f.pending.Store(true)
		f.delay = min(max(2*f.delay, envRetryMin), envRetryMax)
		f.stopTimer()
		f.timer = time.NewTimer(f.delay)
		f.log.Error("cannot write subnet.env; the datapath keeps running, retrying", "path", f.path, "err", err, "retry_in", f.delay)
		return err
	}
	if f.pending.Load() {
		f.log.Info("subnet.env written after earlier failures", "path", f.path)
	}
	f.onDisk = subnetenv.Render(f.want)
	f.settled()
	return nil
}

func (f *envFile) settled() {
	f.stopTimer()
	f.delay = 0
	f.pending.Store(false)
}

func (f *envFile) stopTimer() {
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
}
