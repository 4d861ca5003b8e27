package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/topo"
)

// Faults are real actions on a running lab: links, qdiscs and nftables rules
// in the lab's own namespaces, signals to the lab's own processes.

// Each fault that uses nftables owns one table in the host's namespace, so
// clearing a fault deletes exactly what it added.
const (
	lossTable      = "overlaylab-loss"
	partitionTable = "overlaylab-partition"
)

func hostIndex(st *State, host string) (int, *HostState, error) {
	h, ok := st.Host(host)
	if !ok {
		return 0, nil, fmt.Errorf("no host %q in lab %q", host, st.Name)
	}
	i, err := h.Index()
	return i, h, err
}

// SetLink takes a host's underlay link down or up (its port on the
// underlay bridge, so the host sees its carrier go).
func SetLink(st *State, host string, up bool) error {
	i, _, err := hostIndex(st, host)
	if err != nil {
		return err
	}
	port := topo.Names{Lab: st.Name}.HostPort(i)
	return topo.WithHandle(st.Underlay.Netns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(port)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", st.Underlay.Netns, port, err)
		}
		if up {
			return h.LinkSetUp(l)
		}
		return h.LinkSetDown(l)
	})
}

func withNft(ns string, fn func(*nftables.Conn) error) error {
	nh, err := nsutil.Handle(ns)
	if err != nil {
		return err
	}
	defer nh.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(nh)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", ns, err)
	}
	defer c.CloseLasting()
	return fn(c)
}

// dropTable removes one of our tables; a missing table is fine.
func dropTable(c *nftables.Conn, name string) error {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == name {
			c.DelTable(t)
			return c.Flush()
		}
	}
	return nil
}

// filterChains adds input, output and forward filter chains to t.
func filterChains(c *nftables.Conn, t *nftables.Table) []*nftables.Chain {
	var chains []*nftables.Chain
	for _, hk := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"input", nftables.ChainHookInput}, {"output", nftables.ChainHookOutput}, {"forward", nftables.ChainHookForward}} {
		chains = append(chains, c.AddChain(&nftables.Chain{
			Name: hk.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hk.hook, Priority: nftables.ChainPriorityFilter,
		}))
	}
	return chains
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// SetLoss drops percent of the packets entering or leaving a host's eth0,
// chosen at random per packet (nftables numgen). 0 removes the loss.
func SetLoss(st *State, host string, percent float64) error {
	_, h, err := hostIndex(st, host)
	if err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss %v%%: must be 0..100", percent)
	}
	return withNft(h.Netns, func(c *nftables.Conn) error {
		if err := dropTable(c, lossTable); err != nil {
			return fmt.Errorf("%s: clear loss: %w", host, err)
		}
		if percent == 0 {
			return nil
		}
		// numgen random mod 10000 < percent*100, compared in network byte
		// order (cmp compares bytes).
		threshold := make([]byte, 4)
		binary.BigEndian.PutUint32(threshold, uint32(percent*100+0.5))
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: lossTable})
		for _, ch := range filterChains(c, t) {
			key := expr.MetaKeyIIFNAME
			if ch.Name == "output" || ch.Name == "forward" {
				key = expr.MetaKeyOIFNAME
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("eth0")},
				&expr.Numgen{Register: 1, Modulus: 10000, Type: unix.NFT_NG_RANDOM},
				&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
				&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: threshold},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
			if ch.Name == "forward" {
				// Forwarded traffic arriving on eth0 is lost as well.
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("eth0")},
					&expr.Numgen{Register: 1, Modulus: 10000, Type: unix.NFT_NG_RANDOM},
					&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
					&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: threshold},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("%s: install %v%% loss: %w", host, percent, err)
		}
		return nil
	})
}

// SetPartition cuts a host off from etcd (both directions) while it keeps
// its peers; on=false heals it.
func SetPartition(st *State, host string, on bool) error {
	_, h, err := hostIndex(st, host)
	if err != nil {
		return err
	}
	var etcdIPs [][]byte
	for _, ep := range st.Etcd.Endpoints {
		hp := strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
		hostPart, _, _ := strings.Cut(hp, ":")
		if a, err := netip.ParseAddr(hostPart); err == nil && a.Is4() {
			b := a.As4()
			etcdIPs = append(etcdIPs, b[:])
		}
	}
	if len(etcdIPs) == 0 {
		return fmt.Errorf("lab %q: no IPv4 etcd endpoint to partition from", st.Name)
	}
	return withNft(h.Netns, func(c *nftables.Conn) error {
		if err := dropTable(c, partitionTable); err != nil {
			return fmt.Errorf("%s: heal: %w", host, err)
		}
		if !on {
			return nil
		}
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: partitionTable})
		for _, ch := range filterChains(c, t)[:2] { // input, output
			off := uint32(12) // input: match the source
			if ch.Name == "output" {
				off = 16
			}
			for _, ip := range etcdIPs {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("%s: partition from etcd: %w", host, err)
		}
		return nil
	})
}

// SetRate limits a host's underlay link to bps in both directions (a tbf on
// eth0 and one on its bridge port). 0 removes the limit.
func SetRate(st *State, host string, bps uint64) error {
	i, h, err := hostIndex(st, host)
	if err != nil {
		return err
	}
	apply := func(ns, dev string) error {
		return topo.WithHandle(ns, func(nh *netlink.Handle) error {
			l, err := nh.LinkByName(dev)
			if err != nil {
				return fmt.Errorf("%s: find %s: %w", ns, dev, err)
			}
			attrs := netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0x4f4c, 0), Parent: netlink.HANDLE_ROOT}
			if bps == 0 {
				if err := nh.QdiscDel(&netlink.Tbf{QdiscAttrs: attrs}); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("%s: remove rate limit on %s: %w", ns, dev, err)
				}
				return nil
			}
			rate := bps / 8 // bytes per second
			// A burst of at least one jumbo frame and ~10 ms worth; a queue of ~50 ms.
			buffer := uint32(max(rate/100, 16*1024))
			limit := uint32(max(rate/20, 64*1024))
			q := &netlink.Tbf{QdiscAttrs: attrs, Rate: rate, Buffer: buffer, Limit: limit}
			if err := nh.QdiscReplace(q); err != nil {
				return fmt.Errorf("%s: rate %d bit/s on %s: %w", ns, bps, dev, err)
			}
			return nil
		})
	}
	if err := apply(h.Netns, "eth0"); err != nil {
		return err
	}
	return apply(st.Underlay.Netns, topo.Names{Lab: st.Name}.HostPort(i))
}

// StopEtcd kills etcd member k (1-based) with SIGKILL, as a crash would.
func StopEtcd(st *State, k int) error {
	m, err := member(st, k)
	if err != nil {
		return err
	}
	if !alive(m.PID, st.Name) {
		return fmt.Errorf("etcd member %s of lab %q (pid %d) is not running", m.Name, st.Name, m.PID)
	}
	return stop(m.PID, st.Name, syscall.SIGKILL, 5*time.Second)
}

func member(st *State, k int) (*EtcdMember, error) {
	if k < 1 || k > len(st.Etcd.Members) {
		return nil, fmt.Errorf("lab %q has etcd members 1..%d, not %d", st.Name, len(st.Etcd.Members), k)
	}
	return &st.Etcd.Members[k-1], nil
}

// startMember starts one etcd member (or the proxy) from its recorded args.
func startMember(bin string, st *State, m *EtcdMember) error {
	ns := m.Netns
	if m.RootNetns {
		ns = ""
	}
	pid, err := spawn(bin, ns, st.Name, "etcd-"+m.Name, m.Args, m.Log)
	if err != nil {
		return err
	}
	m.PID = pid
	return nil
}

// StartEtcd starts etcd member k again on the same data dir and waits until
// the cluster answers (with too few members for a quorum it cannot, so it
// only waits for the process to listen then).
func StartEtcd(ctx context.Context, st *State, bin string, k int) error {
	m, err := member(st, k)
	if err != nil {
		return err
	}
	if alive(m.PID, st.Name) {
		return fmt.Errorf("etcd member %s of lab %q (pid %d) is still running", m.Name, st.Name, m.PID)
	}
	if err := startMember(bin, st, m); err != nil {
		return err
	}
	if err := st.Save(); err != nil {
		return err
	}
	up := 0
	for _, o := range st.Etcd.Members {
		if alive(o.PID, st.Name) {
			up++
		}
	}
	if up <= len(st.Etcd.Members)/2 {
		return nil // no quorum yet: nothing to wait for
	}
	cli, err := st.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitEtcd(wctx, cli); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(m.Log, 10))
	}
	return nil
}

// EtcdMemberAlive reports whether etcd member k runs.
func (s *State) EtcdMemberAlive(k int) bool {
	return k >= 1 && k <= len(s.Etcd.Members) && alive(s.Etcd.Members[k-1].PID, s.Name)
}

// EtcdLeader returns the 1-based index of the member that leads the
// cluster now.
func EtcdLeader(ctx context.Context, st *State) (int, error) {
	cli, err := st.EtcdClient()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	for k, m := range st.Etcd.Members {
		if !alive(m.PID, st.Name) {
			continue
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.Status(c, st.Etcd.Endpoints[k])
		cancel()
		if err == nil && resp.Header.MemberId == resp.Leader {
			return k + 1, nil
		}
	}
	return 0, fmt.Errorf("lab %q: no etcd member says it leads", st.Name)
}

// PutConfig writes the network config key verbatim.
func PutConfig(ctx context.Context, st *State, value string) error {
	return st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		if _, err := cli.Put(ctx, subnet.DefaultPrefix+"/config", value); err != nil {
			return fmt.Errorf("write network config: %w", err)
		}
		return nil
	})
}

// AgentExit reads how a host's last agent ended, when the process that
// started it recorded it ("exit 0", "signal: killed"); ok=false while it
// runs or when unknown.
func AgentExit(h *HostState) (code int, how string, ok bool) {
	data, err := os.ReadFile(exitPath(h.AgentLog))
	if err != nil {
		return 0, "", false
	}
	f := strings.SplitN(strings.TrimSpace(string(data)), " ", 3)
	if len(f) < 3 {
		return 0, "", false
	}
	pid, _ := strconv.Atoi(f[0])
	if pid != h.AgentPID {
		return 0, "", false // about an earlier agent
	}
	code, _ = strconv.Atoi(f[1])
	return code, f[2], true
}

func exitPath(logPath string) string { return strings.TrimSuffix(logPath, ".log") + ".exit" }
