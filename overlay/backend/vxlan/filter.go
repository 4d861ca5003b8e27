package vxlan

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// filterTable holds the admission rule for the VXLAN port: only current
// peers' PublicIPs may send to it. The kernel decapsulates whatever reaches
// the port, so without this anyone on the underlay could inject frames
// into the overlay.
const filterTable = "overlaylab-vxlan"

// FilterTable is the admission table of a network: filterTable for the one
// network of a single-network agent, filterTable-NAME for each network of
// a multi-network agent. Several networks may share a port (their VNIs
// tell them apart), and each admits only its own peers on its own VNI.
func FilterTable(network string) string {
	if network == "" {
		return filterTable
	}
	return filterTable + "-" + network
}

// peerFilter keeps the nftables set of admitted peers in step with the
// leases.
type peerFilter struct {
	conn *nftables.Conn
	set  *nftables.Set
}

// newPeerFilter (re)creates the network's table with an empty set and the
// rule
//
//	udp dport <port> ip saddr != @peers drop                    (single network)
//	udp dport <port> vxlan vni <vni> ip saddr != @peers drop    (network of several)
//
// A table left by an earlier run is replaced, so the set never holds
// addresses of peers that left while the agent was down.
func newPeerFilter(port int, network string, vni int) (*peerFilter, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("vxlan filter: nftables: %w", err)
	}
	if tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err == nil {
		for _, t := range tables {
			if t.Name == FilterTable(network) {
				c.DelTable(t)
			}
		}
	}
	fo := filterObjects(port, network, vni)
	t := c.AddTable(fo.table)
	if err := c.AddSet(fo.set, nil); err != nil {
		return nil, fmt.Errorf("vxlan filter: set: %w", err)
	}
	c.AddChain(fo.chain)
	c.AddRule(fo.rule)
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("vxlan filter: install %s: %w", t.Name, err)
	}
	return &peerFilter{conn: c, set: fo.set}, nil
}

// filterDef is the admission filter's table, set, chain and rule, built
// without touching the kernel so that the rule can be checked in a test.
type filterDef struct {
	table *nftables.Table
	set   *nftables.Set
	chain *nftables.Chain
	rule  *nftables.Rule
}

// filterObjects builds
//
//	table inet overlaylab-vxlan {
//	  set peers { type ipv4_addr }
//	  chain input { type filter hook input priority filter
//	    meta nfproto ipv4 meta l4proto udp udp dport <port> ip saddr != @peers counter drop } }
//
// and for a network of a multi-network agent the same in its own table
// overlaylab-vxlan-NAME, the rule also matching the VXLAN header's VNI
// (@th,96,24: bytes 4..6 after the UDP header), so that a host that is a
// peer in one network cannot inject frames into another's VNI.
func filterObjects(port int, network string, vni int) filterDef {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: FilterTable(network)}
	set := &nftables.Set{Table: t, Name: "peers", KeyType: nftables.TypeIPAddr}
	ch := &nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	}
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, uint16(port))
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
	}
	if network != "" {
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8 + 4, Len: 3},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(vni >> 16), byte(vni >> 8), byte(vni)}})
	}
	exprs = append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop})
	rule := &nftables.Rule{Table: t, Chain: ch, Exprs: exprs}
	return filterDef{table: t, set: set, chain: ch, rule: rule}
}

func (f *peerFilter) add(ip netip.Addr) error {
	a := ip.As4()
	if err := f.conn.SetAddElements(f.set, []nftables.SetElement{{Key: a[:]}}); err != nil {
		return err
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("vxlan filter: admit %s: %w", ip, err)
	}
	return nil
}

func (f *peerFilter) remove(ip netip.Addr) error {
	a := ip.As4()
	if err := f.conn.SetDeleteElements(f.set, []nftables.SetElement{{Key: a[:]}}); err != nil {
		return err
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("vxlan filter: forget %s: %w", ip, err)
	}
	return nil
}
