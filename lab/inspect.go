package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/topo"
)

// Promisc puts a device into promiscuous mode, so a capture on a bridge
// sees the frames it forwards between its ports.
func Promisc(ns, dev string) error {
	return topo.WithHandle(ns, func(h *netlink.Handle) error {
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
	_ = topo.WithNft(ns, func(c *nftables.Conn) error {
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
	var b strings.Builder
	err := st.withEtcd(context.Background(), func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, defaultPrefix+"/", clientv3.WithPrefix())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			ttl := ""
			if kv.Lease != 0 {
				if t, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
					ttl = fmt.Sprintf(" (lease %x, ttl %ds)", kv.Lease, t.TTL)
				}
			}
			fmt.Fprintf(&b, "%s = %s%s\n", kv.Key, kv.Value, ttl)
		}
		return nil
	})
	if err != nil {
		return "etcd: " + err.Error()
	}
	return b.String()
}

// Leases reads a network's current leases through the agent's own subnet
// manager, so keys and values are parsed exactly as the agents parse them.
func (s *State) Leases(ctx context.Context, network string) ([]subnet.Lease, error) {
	n, err := s.network(network)
	if err != nil {
		return nil, err
	}
	var leases []subnet.Lease
	err = s.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		var err error
		leases, _, err = subnet.NewManager(cli, subnet.Options{Prefix: n.Prefix, Logger: slog.New(slog.DiscardHandler)}).Leases(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	return leases, nil
}

// LeaseOf returns the subnet a network leases to publicIP, or "".
func (s *State) LeaseOf(ctx context.Context, network, publicIP string) (string, error) {
	leases, err := s.Leases(ctx, network)
	if err != nil {
		return "", err
	}
	for _, ls := range leases {
		if ls.Attrs.PublicIP.String() == publicIP {
			return ls.Subnet.String(), nil
		}
	}
	return "", nil
}
