package topo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TenantBridge is the container side of one tenant network in a host (the
// container runtime's part; the agent does the overlay's): a bridge whose
// address adds no route to main, its subnet routed in the tenant's table, a
// policy rule sending what arrives on the bridge to that table, and a
// conntrack zone for it.
type TenantBridge struct {
	Name    string       // bridge, e.g. br-red
	Addr    netip.Prefix // FLANNEL_SUBNET: the gateway address and the subnet's length
	MTU     int
	MAC     net.HardwareAddr
	Table   uint32 // FLANNEL_ROUTE_TABLE
	Zone    uint16 // FLANNEL_CT_ZONE
	NftName string // the nftables table of the runtime's zone rules
}

// tenantRulePriority places the bridge's rule with the agent's (both below
// main's 32766).
const tenantRulePriority = 1000

// CreateTenantBridge builds a tenant's bridge in a host namespace.
func CreateTenantBridge(nsName string, b TenantBridge) error {
	if b.Table == 0 || b.Zone == 0 {
		return fmt.Errorf("%s: bridge %s: a tenant network needs its routing table and conntrack zone (FLANNEL_ROUTE_TABLE, FLANNEL_CT_ZONE)", nsName, b.Name)
	}
	if !b.Addr.IsValid() {
		return fmt.Errorf("%s: bridge %s: a tenant network needs its subnet (FLANNEL_SUBNET)", nsName, b.Name)
	}
	if err := CheckIfName(b.Name); err != nil {
		return err
	}
	err := WithHandle(nsName, func(h *netlink.Handle) error {
		// The subnet goes to the tenant's table only: another tenant may
		// have the very same one.
		br, err := addBridge(h, nsName, b.Name, b.Addr, unix.IFA_F_NOPREFIXROUTE, b.MTU, b.MAC)
		if err != nil {
			return err
		}
		src := b.Addr.Addr().AsSlice()
		r := &netlink.Route{LinkIndex: br.Index, Dst: ipNet(b.Addr.Masked()), Src: src, Scope: netlink.SCOPE_LINK, Table: int(b.Table)}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("%s: route %s dev %s table %d: %w", nsName, b.Addr.Masked(), b.Name, b.Table, err)
		}
		rule := netlink.NewRule()
		rule.IifName, rule.Table, rule.Priority = b.Name, int(b.Table), tenantRulePriority
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: rule iif %s lookup %d: %w", nsName, b.Name, b.Table, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return WithNft(nsName, func(c *nftables.Conn) error { return zoneRule(c, nsName, b) })
}

// zoneRule puts what arrives on the bridge in the tenant's conntrack zone,
// before conntrack sees it (raw priority).
func zoneRule(c *nftables.Conn, nsName string, b TenantBridge) error {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: b.NftName})
	ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, b.Name)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(b.Zone)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s: ct zone %d for %s: %w", nsName, b.Zone, b.Name, err)
	}
	return nil
}

// AddAddress adds an address to a device (a probe target); DelAddress
// removes it again.
func AddAddress(nsName, dev string, addr netip.Prefix) error {
	return withLink(nsName, dev, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
			return fmt.Errorf("%s: address %s on %s: %w", nsName, addr, dev, err)
		}
		return nil
	})
}

// DelAddress removes an address; a missing one is fine.
func DelAddress(nsName, dev string, addr netip.Prefix) error {
	return WithHandle(nsName, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return nil
		}
		if err := h.AddrDel(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("%s: delete %s from %s: %w", nsName, addr, dev, err)
		}
		return nil
	})
}
