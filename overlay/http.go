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

	"github.com/overlaylab/overlaylab/overlay/backend"
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
		if ok, waiting := a.ready(); !ok {
			msg := "not ready: no lease or datapath yet"
			if len(a.opts.Networks) > 0 {
				msg = "not ready: no lease, datapath or env file yet for network " + strings.Join(waiting, ", ")
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
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

// writeMetrics writes /metrics. The figures of a network carry its name as
// a label (network="red") in a multi-network agent, and none in a single-
// network one; the process figures never do.
func (a *Agent) writeMetrics(w http.ResponseWriter) {
	family := func(name, typ, help string, v func(n *network) int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, n := range a.nets {
			fmt.Fprintf(w, "%s%s %d\n", name, backend.Braces(n.label()), v(n))
		}
	}
	gauge := func(name, help string, v func(n *network) int64) { family(name, "gauge", help, v) }
	counter := func(name, help string, v func(n *network) uint64) {
		family(name, "counter", help, func(n *network) int64 { return int64(v(n)) })
	}
	lease := func(n *network) subnet.Stats {
		if m := n.mgr.Load(); m != nil {
			return m.Stats()
		}
		return subnet.Stats{}
	}
	env := func(n *network) *envFile {
		if f := n.env.Load(); f != nil {
			return f
		}
		return &envFile{}
	}
	gauge("overlaylab_ready", "1 once subnet.env is written and the datapath programmed.", func(n *network) int64 { return b2i(n.ready.Load()) })
	gauge("overlaylab_peers", "Peer leases programmed into the datapath.", func(n *network) int64 { return n.peers.Load() })
	counter("overlaylab_lease_renewals_total", "Times the subnet lease was renewed.", func(n *network) uint64 { return lease(n).Renewals })
	counter("overlaylab_lease_renewal_failures_total", "Failed attempts to renew the subnet lease.", func(n *network) uint64 { return lease(n).RenewFailures })
	counter("overlaylab_lease_reacquired_total", "Times the lease was lost (deleted, expired) and acquired again.", func(n *network) uint64 { return lease(n).Reacquired })
	counter("overlaylab_subnet_env_write_failures_total", "Failed attempts to write subnet.env (each is retried with backoff).", func(n *network) uint64 { return env(n).failures.Load() })
	gauge("overlaylab_subnet_env_pending", "1 while subnet.env does not yet say what the lease says (a write failed and is being retried).", func(n *network) int64 { return b2i(env(n).pending.Load()) })
	labeled := make([]backend.Labeled, len(a.nets))
	for i, n := range a.nets {
		labeled[i] = backend.Labeled{Label: n.label(), M: &n.metrics}
	}
	backend.WritePrometheusAll(w, labeled)
	// Process figures, for leak checks in soak runs.
	one := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	one("overlaylab_goroutines", "Goroutines in the agent.", int64(runtime.NumGoroutine()))
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		one("overlaylab_open_fds", "Open file descriptors of the agent.", int64(len(fds)))
	}
	if rss := residentBytes(); rss > 0 {
		one("overlaylab_resident_memory_bytes", "Resident set size of the agent.", rss)
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
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
