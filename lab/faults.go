package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/lab/plan"
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

// SetLink takes a host's underlay link down or up (its port on the
// underlay bridge, so the host sees its carrier go).
func (l *Lab) SetLink(host string, up bool) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	return topo.SetLinkUp(st.Underlay.Netns, plan.HostPort(h.Index), up)
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
func (l *Lab) SetLoss(host string, percent float64) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss %v%%: must be 0..100", percent)
	}
	return topo.WithNft(h.Netns, func(c *nftables.Conn) error {
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
		// Drop at random what enters (key iifname) or leaves (oifname) eth0.
		drop := func(ch *nftables.Chain, key expr.MetaKey) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: key, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(plan.HostIf)},
				&expr.Numgen{Register: 1, Modulus: 10000, Type: unix.NFT_NG_RANDOM},
				&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
				&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: threshold},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		for _, ch := range filterChains(c, t) {
			key := expr.MetaKeyIIFNAME
			if ch.Name == "output" || ch.Name == "forward" {
				key = expr.MetaKeyOIFNAME
			}
			drop(ch, key)
			if ch.Name == "forward" {
				drop(ch, expr.MetaKeyIIFNAME) // forwarded traffic arriving on eth0 is lost as well
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
func (l *Lab) SetPartition(host string, on bool) error {
	st := l.Snapshot()
	h, err := st.host(host)
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
	return topo.WithNft(h.Netns, func(c *nftables.Conn) error {
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
func (l *Lab) SetRate(host string, bps uint64) error {
	st := l.Snapshot()
	h, err := st.host(host)
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
	if err := apply(h.Netns, plan.HostIf); err != nil {
		return err
	}
	return apply(st.Underlay.Netns, plan.HostPort(h.Index))
}

// SetOffloads switches offloads of a device in a host's namespace (eth0,
// flannel.1, flannel0, a bridge) by their ethtool names (tx-checksum, tso,
// gro) and returns the kernel features changed.
func (l *Lab) SetOffloads(host, dev string, switches map[string]bool) ([]string, error) {
	want := map[topo.Offload]bool{}
	for name, on := range switches {
		want[topo.Offload(name)] = on
	}
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return nil, err
	}
	if err := topo.CheckIfName(dev); err != nil {
		return nil, err
	}
	return topo.SetOffloads(h.Netns, dev, want)
}
