package overlay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Reconnect tuning. gRPC's defaults back off up to two minutes between
// dials; after a 20 s etcd outage the next dial comes ~10 s late, and a
// short lease TTL expires before the agent notices etcd is back. Dials to
// a restarting etcd are cheap (a refused connection), so retry within a
// second, jittered so that many agents do not dial in lockstep.
const (
	etcdDialTimeout      = 5 * time.Second
	etcdReconnectBase    = 100 * time.Millisecond
	etcdReconnectMax     = time.Second
	etcdMinConnectTime   = 3 * time.Second // one dial attempt; a silent (partitioned) etcd gives up here
	etcdKeepAliveTime    = 5 * time.Second // etcd refuses pings more often than every 5 s
	etcdKeepAliveTimeout = 3 * time.Second // a connection that stopped answering is dropped and redialled
)

// etcdClientConfig is the client configuration the agent uses for
// endpoints (TLS is added by the caller).
func etcdClientConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          etcdDialTimeout,
		DialKeepAliveTime:    etcdKeepAliveTime,
		DialKeepAliveTimeout: etcdKeepAliveTimeout,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  etcdReconnectBase,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   etcdReconnectMax,
			},
			MinConnectTimeout: etcdMinConnectTime,
		})},
		// The client's own zap logger would interleave JSON with our text
		// logs; its errors reach us as values and are logged there.
		Logger: zap.NewNop(),
	}
}

func (a *Agent) etcdClient() (*clientv3.Client, error) {
	cfg := etcdClientConfig(a.opts.EtcdEndpoints)
	if a.opts.EtcdCAFile != "" || a.opts.EtcdCertFile != "" || a.opts.EtcdKeyFile != "" {
		tlsCfg, err := loadTLS(a.opts.EtcdCAFile, a.opts.EtcdCertFile, a.opts.EtcdKeyFile)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", a.opts.EtcdEndpoints, err)
	}
	return cli, nil
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
