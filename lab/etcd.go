package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/topo"
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
// underlay), with the lab's client certificate when etcd serves TLS. The
// caller closes it.
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

// etcdTimeout bounds every single etcd call of the controller: a dead or
// partitioned etcd must give an error, never a hang.
const etcdTimeout = 5 * time.Second

// withEtcd runs one short operation against the lab's etcd, with its own
// client and a deadline.
func (s *State) withEtcd(ctx context.Context, fn func(context.Context, *clientv3.Client) error) error {
	cli, err := s.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	if err := fn(ctx, cli); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("lab %q: etcd at %v did not answer within %s: %w", s.Name, s.Etcd.Endpoints, etcdTimeout, err)
		}
		return err
	}
	return nil
}

func (l *Lab) withEtcd(ctx context.Context, fn func(context.Context, *clientv3.Client) error) error {
	return l.Snapshot().withEtcd(ctx, fn)
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

// waitEtcdUp waits up to timeout until the lab's etcd (as the state
// records it now) answers a read.
func (l *Lab) waitEtcdUp(ctx context.Context, timeout time.Duration) error {
	cli, err := l.Snapshot().EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return waitEtcd(ctx, cli)
}

// RunProxy forwards TCP connections accepted on listen (inside the lab's
// etcd netns) to an external etcd at target, dialled from the namespace the
// proxy process runs in. It lets a lab use an etcd that the host namespaces
// could not otherwise reach, while faults on the underlay stay real.
func RunProxy(nsName, listen, target string) error {
	ln, err := openIn(nsName, func() (net.Listener, error) { return net.Listen("tcp", listen) })
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

// startEtcd starts the lab's etcd (members or the proxy to an external
// one), waits until it answers and writes every network's config.
func (l *Lab) startEtcd(ctx context.Context, p *plan.Plan) error {
	n := max(p.Etcd.Members, 1)
	if len(p.Etcd.Endpoints) > 0 {
		n = 1 // one proxy to the external etcd
	}
	scheme := "http"
	if p.Etcd.TLS {
		scheme = "https"
	}
	var members []EtcdMember
	var cluster []string
	var ips []net.IP
	for k := 1; k <= n; k++ {
		ip := p.Addr.Etcd(k)
		m := EtcdMember{Name: fmt.Sprintf("m%d", k), Netns: p.Names.EtcdNS(k), IP: ip.String()}
		if err := topo.CreateNS(m.Netns); err != nil {
			return err
		}
		err := topo.Attach(topo.Attachment{
			NodeNS: m.Netns, NodeIf: plan.HostIf, NodeMAC: plan.MAC(plan.MACEtcd, 0, k),
			Addr: p.Addr.Prefix(ip), MTU: p.UnderlayMTU,
			BridgeNS: p.Names.UnderlayNS(), Bridge: plan.UnderlayBridge, Port: plan.EtcdPort(k), PortMAC: plan.MAC(plan.MACPort, 0, 249+k),
		})
		if err != nil {
			return err
		}
		ips = append(ips, ip.AsSlice())
		cluster = append(cluster, fmt.Sprintf("%s=http://%s:%d", m.Name, m.IP, plan.EtcdPeerPort))
		members = append(members, m)
	}
	var tlsFiles *TLSFiles
	if p.Etcd.TLS {
		f, err := generateTLS(filepath.Join(l.dir, "tls"), append(ips, net.IPv4(127, 0, 0, 1)))
		if err != nil {
			return fmt.Errorf("etcd TLS: %w", err)
		}
		tlsFiles = f
	}
	var endpoints []string
	for k := range members {
		m := &members[k]
		endpoints = append(endpoints, fmt.Sprintf("%s://%s:%d", scheme, m.IP, plan.EtcdClientPort))
		m.Log = filepath.Join(l.dir, "logs", "etcd.log")
		m.DataDir = filepath.Join(l.dir, "etcd")
		if n > 1 {
			m.Log = filepath.Join(l.dir, "logs", "etcd-"+m.Name+".log")
			m.DataDir = filepath.Join(l.dir, "etcd-"+m.Name)
		}
		if len(p.Etcd.Endpoints) > 0 {
			target, err := plan.EndpointHostPort(p.Etcd.Endpoints[0])
			if err != nil {
				return err
			}
			// The proxy runs in the root netns to reach the external etcd
			// and listens inside the etcd netns.
			m.Args = []string{"etcd-proxy", "--netns", m.Netns, "--listen", fmt.Sprintf("%s:%d", m.IP, plan.EtcdClientPort), "--target", target}
			m.RootNetns, m.DataDir = true, ""
			continue
		}
		m.Args = []string{"etcd-member", "--name", m.Name, "--data-dir", m.DataDir,
			"--client-ip", m.IP, "--client-ip", "127.0.0.1", "--peer-ip", m.IP, "--initial-cluster", strings.Join(cluster, ",")}
		if tlsFiles != nil {
			m.Args = append(m.Args, "--cert-file", tlsFiles.ServerCert, "--key-file", tlsFiles.ServerKey, "--trusted-ca-file", tlsFiles.CA)
		}
	}
	if err := l.update(func(st *State) error {
		st.Etcd.Members, st.Etcd.Endpoints, st.Etcd.TLS, st.Etcd.Netns = members, endpoints, tlsFiles, members[0].Netns
		return nil
	}); err != nil {
		return err
	}
	for k := range members {
		if err := l.spawnMember(k + 1); err != nil {
			return err
		}
	}
	if err := l.waitEtcdUp(ctx, 20*time.Second); err != nil {
		return fmt.Errorf("%w\n--- %s ---\n%s", err, members[0].Log, tail(members[0].Log, 20))
	}
	return l.writeConfigs(ctx)
}

// writeConfigs writes every network's config key.
func (l *Lab) writeConfigs(ctx context.Context) error {
	st := l.Snapshot()
	for _, n := range st.Networks {
		if err := st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
			_, err := cli.Put(ctx, n.Prefix+"/config", string(n.Config))
			return err
		}); err != nil {
			return fmt.Errorf("write network config %s/config: %w", n.Prefix, err)
		}
	}
	return nil
}

// spawnMember starts etcd member k (or the proxy) from its recorded args.
func (l *Lab) spawnMember(k int) error {
	st := l.Snapshot()
	m, err := st.member(k)
	if err != nil {
		return err
	}
	ns := m.Netns
	if m.RootNetns {
		ns = ""
	}
	args := m.Args
	if len(args) > 0 && args[0] == "etcd" { // recorded by an older overlaylab
		args = append([]string{"etcd-member"}, args[1:]...)
	}
	pid, err := spawn(l.bin, ns, l.name, "etcd-"+m.Name, args, m.Log, true)
	if err != nil {
		return err
	}
	return l.update(func(st *State) error { st.Etcd.Members[k-1].PID = pid; return nil })
}

func (s *State) member(k int) (*EtcdMember, error) {
	if k < 1 || k > len(s.Etcd.Members) {
		return nil, fmt.Errorf("lab %q has etcd members 1..%d, not %d", s.Name, len(s.Etcd.Members), k)
	}
	return &s.Etcd.Members[k-1], nil
}

// StopEtcd kills etcd member k (1-based) with SIGKILL, as a crash would.
func (l *Lab) StopEtcd(k int) error {
	st := l.Snapshot()
	m, err := st.member(k)
	if err != nil {
		return err
	}
	if !alive(m.PID, l.name) {
		return fmt.Errorf("etcd member %s of lab %q (pid %d) is not running", m.Name, l.name, m.PID)
	}
	return stop(m.PID, l.name, syscall.SIGKILL, 5*time.Second)
}

// StartEtcd starts etcd member k again on the same data dir and waits until
// the cluster answers (with too few members for a quorum it cannot, so it
// only waits for the process to start then).
func (l *Lab) StartEtcd(ctx context.Context, k int) error {
	st := l.Snapshot()
	m, err := st.member(k)
	if err != nil {
		return err
	}
	if alive(m.PID, l.name) {
		return fmt.Errorf("etcd member %s of lab %q (pid %d) is still running", m.Name, l.name, m.PID)
	}
	if err := l.spawnMember(k); err != nil {
		return err
	}
	st = l.Snapshot()
	up := 0
	for _, o := range st.Etcd.Members {
		if alive(o.PID, l.name) {
			up++
		}
	}
	if up <= len(st.Etcd.Members)/2 {
		return nil // no quorum yet: nothing to wait for
	}
	if err := l.waitEtcdUp(ctx, 30*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(m.Log, 10))
	}
	return nil
}

// EtcdCompact compacts the lab's etcd at its current revision, so a watcher
// behind it must re-list (the agents' resync path).
func (l *Lab) EtcdCompact(ctx context.Context) (int64, error) {
	var rev int64
	err := l.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, "compact-probe")
		if err != nil {
			return fmt.Errorf("read the current revision: %w", err)
		}
		rev = resp.Header.Revision
		if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			return fmt.Errorf("compact at revision %d: %w", rev, err)
		}
		return nil
	})
	return rev, err
}

// EtcdWipe stops every etcd member, deletes its data and starts it empty;
// with keepConfig the lab writes the network configs again (the leases are
// gone either way).
func (l *Lab) EtcdWipe(ctx context.Context, keepConfig bool) error {
	st := l.Snapshot()
	if len(st.Etcd.External) > 0 {
		return errors.New("etcd-wipe needs the lab's embedded etcd (this lab proxies an external one)")
	}
	for k, m := range st.Etcd.Members {
		if err := stop(m.PID, l.name, syscall.SIGKILL, 5*time.Second); err != nil { // stop skips a member that is not running
			return fmt.Errorf("stop etcd member %d: %w", k+1, err)
		}
	}
	for _, m := range st.Etcd.Members {
		if m.DataDir == "" {
			return fmt.Errorf("etcd member %s: no data dir recorded", m.Name)
		}
		if err := os.RemoveAll(m.DataDir); err != nil {
			return fmt.Errorf("wipe %s: %w", m.DataDir, err)
		}
	}
	// Members start together: a fresh cluster needs its quorum to form.
	for k := range st.Etcd.Members {
		if err := l.spawnMember(k + 1); err != nil {
			return err
		}
	}
	if err := l.waitEtcdUp(ctx, 30*time.Second); err != nil {
		return fmt.Errorf("etcd after the wipe: %w", err)
	}
	if keepConfig {
		return l.writeConfigs(ctx)
	}
	return nil
}

// EtcdMembers is how many etcd members (or proxies) the lab has.
func (s *State) EtcdMembers() int { return len(s.Etcd.Members) }

// EtcdMemberAlive reports whether etcd member k runs.
func (s *State) EtcdMemberAlive(k int) bool {
	return k >= 1 && k <= len(s.Etcd.Members) && alive(s.Etcd.Members[k-1].PID, s.Name)
}

// EtcdLeader returns the 1-based index of the member that leads the
// cluster now.
func (l *Lab) EtcdLeader(ctx context.Context) (int, error) {
	st := l.Snapshot()
	leader := 0
	err := st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		for k, m := range st.Etcd.Members {
			if !alive(m.PID, l.name) {
				continue
			}
			resp, err := cli.Status(ctx, st.Etcd.Endpoints[k])
			if err == nil && resp.Header.MemberId == resp.Leader {
				leader = k + 1
				return nil
			}
		}
		return fmt.Errorf("lab %q: no etcd member says it leads", l.name)
	})
	return leader, err
}

// PutConfig writes a network's config key verbatim (valid or not).
func (l *Lab) PutConfig(ctx context.Context, network, value string) error {
	st := l.Snapshot()
	n, err := st.network(network)
	if err != nil {
		return err
	}
	return st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		if _, err := cli.Put(ctx, n.Prefix+"/config", value); err != nil {
			return fmt.Errorf("write network config: %w", err)
		}
		return nil
	})
}

// deleteLease removes a subnet's lease key from the lab's etcd.
func (l *Lab) deleteLease(ctx context.Context, network, sub string) error {
	p, err := netip.ParsePrefix(sub)
	if err != nil {
		return fmt.Errorf("subnet %q: %w", sub, err)
	}
	st := l.Snapshot()
	n, err := st.network(network)
	if err != nil {
		return err
	}
	return st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		if _, err := cli.Delete(ctx, n.Prefix+"/subnets/"+subnet.SubnetKey(p)); err != nil {
			return fmt.Errorf("delete lease %s: %w", sub, err)
		}
		return nil
	})
}

// DeleteLease removes a host's lease from etcd, as an operator or a bug
// would: in one tenant network, or ("") in every network.
func (l *Lab) DeleteLease(ctx context.Context, host, network string) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if network != "" {
		if _, err := st.network(network); err != nil {
			return err
		}
		return l.deleteLease(ctx, network, h.subnetOf(network))
	}
	for _, n := range st.Networks {
		if err := l.deleteLease(ctx, n.Name, h.subnetOf(n.Name)); err != nil {
			return err
		}
	}
	return nil
}
