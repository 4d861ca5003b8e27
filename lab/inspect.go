package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/topo"
)

// HostOfIP finds the host whose container has ip.
func (s *State) HostOfIP(ip netip.Addr) *HostState { return s.hostOf(ip) }

// Routes lists a namespace's IPv4 routes as "dst [via gw] dev name".
func Routes(ns string) ([]string, error) {
	var out []string
	err := topo.WithHandle(ns, func(h *netlink.Handle) error {
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

// withEtcd runs one short operation against the lab's etcd, with its own
// client and a deadline.
func (s *State) withEtcd(ctx context.Context, fn func(context.Context, *clientv3.Client) error) error {
	cli, err := s.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return fn(ctx, cli)
}

// DumpEtcd lists every key under /coreos.com/network with its lease TTL.
func DumpEtcd(st *State) string {
	var b strings.Builder
	err := st.withEtcd(context.Background(), func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, subnet.DefaultPrefix+"/", clientv3.WithPrefix())
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

// Leases reads the lab's current leases through the agent's own subnet
// manager, so keys and values are parsed exactly as the agents parse them.
func (s *State) Leases(ctx context.Context) ([]subnet.Lease, error) {
	var leases []subnet.Lease
	err := s.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		var err error
		leases, _, err = subnet.NewManager(cli, subnet.Options{Logger: slog.New(slog.DiscardHandler)}).Leases(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	return leases, nil
}

// LeaseOf returns the subnet leased to publicIP in the lab's etcd, or "".
func LeaseOf(ctx context.Context, st *State, publicIP string) (string, error) {
	leases, err := st.Leases(ctx)
	if err != nil {
		return "", err
	}
	for _, l := range leases {
		if l.Attrs.PublicIP.String() == publicIP {
			return l.Subnet.String(), nil
		}
	}
	return "", nil
}

// WireMACs is the destination MAC a frame to each host carries on the
// underlay: the VTEP MAC from its lease for vxlan, its eth0 MAC for
// host-gw; nothing for udp (the frame goes to the peer's IP stack).
func (s *State) WireMACs(ctx context.Context) (map[string]net.HardwareAddr, error) {
	out := map[string]net.HardwareAddr{}
	switch s.Backend {
	case "host-gw":
		for i := range s.Hosts {
			if n, err := s.Hosts[i].Index(); err == nil {
				out[s.Hosts[i].Name] = topo.MAC(topo.MACHost, n, 0)
			}
		}
	case "vxlan":
		leases, err := s.Leases(ctx)
		if err != nil {
			return nil, err
		}
		for _, l := range leases {
			var d vxlan.Data
			if json.Unmarshal(l.Attrs.BackendData, &d) != nil {
				continue
			}
			mac, err := net.ParseMAC(d.VtepMAC)
			if err != nil {
				return nil, fmt.Errorf("lease %s: VtepMAC %q: %w", l.Subnet, d.VtepMAC, err)
			}
			for _, h := range s.Hosts {
				if h.UnderlayIP == l.Attrs.PublicIP.String() {
					out[h.Name] = mac
				}
			}
		}
	}
	return out, nil
}
