package overlay

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// masqTable is the nftables table that holds the agent's NAT rules. Owning a
// whole table lets the agent remove exactly its rules and nothing else.
const masqTable = "overlaylab-masq"

// ipMasq holds the installed rules.
type ipMasq struct{ conn *nftables.Conn }

// setupIPMasq installs flannel's masquerade policy through netlink (there is
// no iptables binary to rely on):
//
//	ip saddr Network ip daddr Network        return      (overlay to overlay untouched)
//	ip saddr Network ip daddr != 224.0.0.0/4 masquerade  (leaving the overlay)
//	ip saddr != Network ip daddr Network     masquerade  (entering it from outside, as flannel does)
//
// Multicast is never masqueraded. The rules live in their own table, which
// is replaced if a previous run left one.
func setupIPMasq(network, own netip.Prefix) (*ipMasq, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("ip-masq: nftables: %w", err)
	}
	// A table left by a killed agent is replaced, not duplicated.
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable})
	_ = c.Flush()

	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable})
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	mcast := netip.MustParsePrefix("224.0.0.0/4")
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
		matchPrefix(12, network, true), matchPrefix(16, network, true), []expr.Any{ret})})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
		matchPrefix(12, network, true), matchPrefix(16, mcast, false), []expr.Any{&expr.Masq{FullyRandom: true}})})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: concat(
		matchPrefix(12, network, false), matchPrefix(16, network, true), []expr.Any{&expr.Masq{FullyRandom: true}})})
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("ip-masq: install rules for %s: %w", network, err)
	}
	return &ipMasq{conn: c}, nil
}

// Close removes the table and with it every rule.
func (m *ipMasq) Close() error {
	m.conn.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable})
	if err := m.conn.Flush(); err != nil {
		return fmt.Errorf("ip-masq: remove table %s: %w", masqTable, err)
	}
	return nil
}

// matchPrefix compares the IPv4 address at header offset off (12 source,
// 16 destination) against p; eq=false negates the match.
func matchPrefix(off uint32, p netip.Prefix, eq bool) []expr.Any {
	mask := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	addr := p.Masked().Addr().As4()
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: addr[:]},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
