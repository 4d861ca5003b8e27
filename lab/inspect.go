package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// HostOfIP finds the host whose container has ip.
func (s *State) HostOfIP(ip netip.Addr) *HostState { return s.hostOf(ip) }

// Routes lists a namespace's IPv4 routes as "dst [via gw] dev name".
func Routes(ns string) ([]string, error) {
	var out []string
	err := withHandle(ns, func(h *netlink.Handle) error {
		rs, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("%s: list routes: %w", ns, err)
		}
		names := map[int]string{}
		if links, err := h.LinkList(); err == nil {
			for _, l := range links {
				names[l.Attrs().Index] = l.Attrs().Name
			}
		}
		for _, r := range rs {
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			s := dst
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			out = append(out, s+" dev "+names[r.LinkIndex])
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// Promisc puts a device into promiscuous mode, so a capture on a bridge
// sees the frames it forwards between its ports.
func Promisc(ns, dev string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", ns, dev, err)
		}
		if l.Attrs().Promisc == 1 {
			return nil
		}
		return h.SetPromiscOn(l)
	})
}

// Dump describes a namespace for a bug report: links, addresses, routes,
// neighbours, FDB (through iproute2 when it is installed) and nftables.
func Dump(ns string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# netns %s\n", ns)
	for _, c := range [][]string{{"ip", "-d", "link"}, {"ip", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"bridge", "fdb", "show"}, {"tc", "qdisc"}} {
		fmt.Fprintf(&b, "\n$ %s\n", strings.Join(c, " "))
		var out []byte
		err := nsutil.DoNamed(ns, func() error {
			cmd := exec.Command(c[0], c[1:]...)
			var err error
			out, err = cmd.CombinedOutput()
			return err
		})
		b.Write(out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	b.WriteString("\n# nftables\n")
	_ = withNft(ns, func(c *nftables.Conn) error {
		tables, err := c.ListTables()
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
			return nil
		}
		chains, _ := c.ListChains()
		for _, t := range tables {
			fmt.Fprintf(&b, "table %v %s\n", t.Family, t.Name)
			for _, ch := range chains {
				if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
					continue
				}
				rules, _ := c.GetRules(t, ch)
				fmt.Fprintf(&b, "  chain %s: %d rules\n", ch.Name, len(rules))
				for _, r := range rules {
					js, _ := json.Marshal(r.Exprs)
					fmt.Fprintf(&b, "    %s\n", js)
				}
			}
		}
		return nil
	})
	return b.String()
}

// DumpEtcd lists every key under /coreos.com/network with its lease TTL.
func DumpEtcd(st *State) string {
	cli, err := st.EtcdClient()
	if err != nil {
		return err.Error()
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/coreos.com/network/", clientv3.WithPrefix())
	if err != nil {
		return "etcd: " + err.Error()
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		ttl := ""
		if kv.Lease != 0 {
			if t, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
				ttl = fmt.Sprintf(" (lease %x, ttl %ds)", kv.Lease, t.TTL)
			}
		}
		fmt.Fprintf(&b, "%s = %s%s\n", kv.Key, kv.Value, ttl)
	}
	return b.String()
}

// LeaseOf returns the subnet leased to publicIP in the lab's etcd, or "".
func LeaseOf(ctx context.Context, st *State, publicIP string) (string, error) {
	cli, err := st.EtcdClient()
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/coreos.com/network/subnets/", clientv3.WithPrefix())
	if err != nil {
		return "", fmt.Errorf("read leases: %w", err)
	}
	for _, kv := range resp.Kvs {
		var v struct{ PublicIP string }
		if json.Unmarshal(kv.Value, &v) == nil && v.PublicIP == publicIP {
			k := strings.TrimPrefix(string(kv.Key), "/coreos.com/network/subnets/")
			return strings.Replace(k, "-", "/", 1), nil
		}
	}
	return "", nil
}
