package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// EtcdOptions configures the lab's embedded etcd member process.
type EtcdOptions struct {
	Name      string
	DataDir   string
	ClientIPs []string // addresses to serve clients on (port 2379)
	PeerIP    string   // address for the peer URL (port 2380)
	// With CertFile, KeyFile and TrustedCAFile set, clients are served over
	// TLS and must present a certificate signed by the CA.
	CertFile, KeyFile, TrustedCAFile string
	// InitialCluster lists every member as name=peerURL (empty: just this one).
	InitialCluster string
}

// RunEtcd runs one embedded etcd member until SIGTERM/SIGINT. It is the body
// of the hidden `overlaylab etcd` command, started inside the etcd netns.
func RunEtcd(o EtcdOptions) error {
	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.DataDir
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{"stderr"}
	scheme := "http"
	if o.CertFile != "" {
		scheme = "https"
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.TrustedCAFile, ClientCertAuth: true}
	}
	var lc, ac []url.URL
	for _, ip := range o.ClientIPs {
		u := url.URL{Scheme: scheme, Host: net.JoinHostPort(ip, "2379")}
		lc = append(lc, u)
		ac = append(ac, u)
	}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort(o.PeerIP, "2380")}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = lc, ac
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = o.Name + "=" + peer.String()
	if o.InitialCluster != "" {
		cfg.InitialCluster = o.InitialCluster
	}
	// Keep history bounded on long runs; watchers resume after compaction.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		slog.Info("etcd ready", "clients", o.ClientIPs, "data_dir", o.DataDir)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return errors.New("etcd did not become ready within 60s")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		slog.Info("etcd stopping", "signal", s.String())
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}

// EtcdClient connects the controller to a lab's etcd, from inside the etcd
// namespace (the controller lives in the root netns, the lab's etcd on the
// underlay), with the lab's client certificate when etcd serves TLS.
func (s *State) EtcdClient() (*clientv3.Client, error) {
	t, err := s.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("lab %q etcd TLS: %w", s.Name, err)
	}
	return Client(s.Etcd.Endpoints, s.Etcd.Netns, t)
}

// Client connects to etcd endpoints; when nsName is set, connections are
// made from inside that namespace.
func Client(endpoints []string, nsName string, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: nopZap(), TLS: tlsCfg}
	if nsName != "" {
		dial := nsutil.DialContext(nsName)
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dial(ctx, "tcp", addr)
		})}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client %v: %w", endpoints, err)
	}
	return cli, nil
}

// waitEtcd blocks until a read succeeds or ctx ends.
func waitEtcd(ctx context.Context, cli *clientv3.Client) error {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(c, "health")
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not reachable: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RunProxy forwards TCP connections accepted on listen (inside the lab's
// etcd netns) to an external etcd at target, dialled from the namespace the
// proxy process runs in. It lets a lab use an etcd that the host namespaces
// could not otherwise reach, while faults on the underlay stay real.
func RunProxy(nsName, listen, target string) error {
	var ln net.Listener
	err := nsutil.DoNamed(nsName, func() error {
		var err error
		ln, err = net.Listen("tcp", listen)
		return err
	})
	if err != nil {
		return fmt.Errorf("etcd proxy: listen on %s in %s: %w", listen, nsName, err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; ln.Close() }()
	slog.Info("etcd proxy", "listen", listen, "target", target)
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				slog.Warn("etcd proxy: dial", "target", target, "err", err)
				return
			}
			defer u.Close()
			var wg sync.WaitGroup
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			go pipe(u, c)
			go pipe(c, u)
			wg.Wait()
		}()
	}
}
