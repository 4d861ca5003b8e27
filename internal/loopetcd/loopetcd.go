// Package loopetcd runs an in-process single-member etcd on loopback, for
// tests and for `overlaylab bench control`. It picks free ports, keeps them
// across a restart, and logs nothing.
package loopetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one etcd member on 127.0.0.1.
type Server struct {
	Dir                  string
	ClientPort, PeerPort int
	Endpoint             string // http://127.0.0.1:ClientPort
	e                    *embed.Etcd
}

// Start runs a member with its data in dir. Another process may take a free
// port between the probe and etcd's bind, so it retries a few times.
func Start(dir string) (*Server, error) {
	var lastErr error
	for range 5 {
		cport, err := FreePort()
		if err != nil {
			return nil, err
		}
		pport, err := FreePort()
		if err != nil {
			return nil, err
		}
		s := &Server{Dir: dir, ClientPort: cport, PeerPort: pport, Endpoint: fmt.Sprintf("http://127.0.0.1:%d", cport)}
		if lastErr = s.Restart(); lastErr == nil {
			return s, nil
		}
		if !strings.Contains(lastErr.Error(), "address already in use") {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// FreePort returns a loopback TCP port nobody listened on a moment ago;
// someone may take it before the caller binds it.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// config builds a fresh embed.Config per start: StartEtcd keeps state in the
// one it is given, and a restart must reuse the same ports and data.
func (s *Server) config() *embed.Config {
	cfg := embed.NewConfig()
	cfg.Dir = s.Dir
	cfg.Name = "loop"
	curl := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", s.ClientPort)}
	purl := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", s.PeerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{curl}, []url.URL{curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{purl}, []url.URL{purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Even at "error" level etcd reports its own orderly shutdown as errors.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

// Restart starts the member (again) on the same ports and data dir.
func (s *Server) Restart() error {
	if s.e != nil {
		return errors.New("loopetcd: already running")
	}
	e, err := embed.StartEtcd(s.config())
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return errors.New("etcd not ready after 20s")
	}
	s.e = e
	return nil
}

// Stop stops the member; its data stays for a Restart.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Etcd is the running embedded server (nil when stopped).
func (s *Server) Etcd() *embed.Etcd { return s.e }

// Client is a client of the member (no logs, a 5 s dial timeout).
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// RunTests is the body of a test package's TestMain that shares one member:
// it starts the member in a fresh temporary directory named after pattern,
// sets *srv, runs the tests (m is the *testing.M), stops the member, removes
// the directory and exits with the tests' code.
func RunTests(m interface{ Run() int }, pattern string, srv **Server) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv, err = Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	(*srv).Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}
