package overlay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// serveHTTP starts /healthz, /readyz and /metrics on HealthzIP:HealthzPort.
func (a *Agent) serveHTTP(ctx context.Context) error {
	addr := net.JoinHostPort(a.opts.HealthzIP, strconv.Itoa(a.opts.HealthzPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--healthz-port: listen on %s: %w", addr, err)
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("healthz server stopped", "err", err)
		}
	}()
	a.log.Info("healthz listening", "addr", ln.Addr().String())
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

// loadTLS builds the etcd client TLS config from flanneld's three files.
func loadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cafile %s: no PEM certificate found", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--etcd-certfile and --etcd-keyfile must be given together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-certfile/--etcd-keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// defaultRouteIface returns the device of the IPv4 default route.
func defaultRouteIface() (*net.Interface, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.LinkIndex > 0 {
			ifc, err := net.InterfaceByIndex(r.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("default route device %d: %w", r.LinkIndex, err)
			}
			return ifc, nil
		}
	}
	// Without a default route, a host with one non-loopback interface is unambiguous.
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var cand []net.Interface
	for _, i := range ifcs {
		if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagUp != 0 {
			if _, err := firstIPv4(&i); err == nil {
				cand = append(cand, i)
			}
		}
	}
	if len(cand) == 1 {
		return &cand[0], nil
	}
	return nil, errors.New("no default route and no single up interface with an IPv4 address: pass --iface")
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
