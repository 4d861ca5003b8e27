package overlay

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// listenHTTP binds HealthzIP:HealthzPort and returns the server for
// /healthz, /readyz and /metrics (and /debug/pprof/ with Pprof). Binding
// here, before anything waits, reports a taken port at once.
func (a *Agent) listenHTTP() (*http.Server, net.Listener, error) {
	addr := net.JoinHostPort(a.opts.HealthzIP, strconv.Itoa(a.opts.HealthzPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--healthz-port: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: no lease or datapath yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		a.writeMetrics(w)
	})
	if a.opts.Pprof {
		// Profiles of the running datapath, for `make bench` and for
		// anyone chasing where the time goes. Off by default.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	a.log.Info("healthz listening", "addr", ln.Addr().String())
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln, nil
}

// serveHTTP serves until ctx is done, then closes the server and returns
// once Serve has. A server that fails on its own is logged, not fatal: the
// datapath does not depend on it.
func (a *Agent) serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-done
	case err := <-done:
		a.log.Error("healthz server stopped", "err", err)
	}
	return nil
}

func (a *Agent) writeMetrics(w http.ResponseWriter) {
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	ready := int64(0)
	if a.ready.Load() {
		ready = 1
	}
	gauge("overlaylab_ready", "1 once subnet.env is written and the datapath programmed.", ready)
	gauge("overlaylab_peers", "Peer leases programmed into the datapath.", a.peers.Load())
	var ls subnet.Stats
	if m := a.mgr.Load(); m != nil {
		ls = m.Stats()
	}
	counter("overlaylab_lease_renewals_total", "Times the subnet lease was renewed.", ls.Renewals)
	counter("overlaylab_lease_renewal_failures_total", "Failed attempts to renew the subnet lease.", ls.RenewFailures)
	counter("overlaylab_lease_reacquired_total", "Times the lease was lost (deleted, expired) and acquired again.", ls.Reacquired)
	var envFailures uint64
	var envPending int64
	if f := a.env.Load(); f != nil {
		envFailures = f.failures.Load()
		if f.pending.Load() {
			envPending = 1
		}
	}
	counter("overlaylab_subnet_env_write_failures_total", "Failed attempts to write subnet.env (each is retried with backoff).", envFailures)
	gauge("overlaylab_subnet_env_pending", "1 while subnet.env does not yet say what the lease says (a write failed and is being retried).", envPending)
	a.metrics.WritePrometheus(w)
	// Process figures, for leak checks in soak runs.
	gauge("overlaylab_goroutines", "Goroutines in the agent.", int64(runtime.NumGoroutine()))
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("overlaylab_open_fds", "Open file descriptors of the agent.", int64(len(fds)))
	}
	if rss := residentBytes(); rss > 0 {
		gauge("overlaylab_resident_memory_bytes", "Resident set size of the agent.", rss)
	}
}

// residentBytes reads VmRSS from /proc/self/status.
func residentBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
