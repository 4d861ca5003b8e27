package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// What the agent installs for each network of several (see tenant.go for
// why and for the packet's path):
//
//	ip rule add iif <dev> lookup <table> priority 1000 proto 77
//	    (host-gw: ip rule add iif <external> to <Network> lookup <table> ...)
//	ip route replace unreachable default table <table> proto 77
//	table inet overlaylab-tenants {
//	  chain prerouting { type filter hook prerouting priority raw
//	    iifname "<dev>" ct zone set <zone>
//	    (host-gw: iifname "<external>" ip daddr <Network> ct zone set <zone>) } }
//
// The backend adds the peers' routes and the Network's route in the table.
// Everything is marked as the agent's: rules and routes with protocol 77,
// the nftables table by its name.

// TenantRulePriority is the priority of the agent's policy rules: after
// the local table (0), before main (32766).
const TenantRulePriority = 1000

// zoneTable is the nftables table of the networks' conntrack zones.
const zoneTable = "overlaylab-tenants"

// tenancy is one network's share of the kernel's isolation.
type tenancy struct {
	tenant
	backend string       // the config's Backend.Type
	dev     string       // the device its peers' traffic arrives on; "" for host-gw
	ext     string       // host-gw: the external interface, shared by every network
	network netip.Prefix // the config's Network
}

// newTenancy describes network t with config cfg on the external
// interface ext.
func newTenancy(t tenant, cfg *config.Config, ext string) tenancy {
	return tenancy{tenant: t, backend: cfg.Backend.Type, dev: deviceName(t.name, cfg), ext: ext, network: cfg.Network.Masked()}
}

// rule is the network's policy rule: what arrives on its device is routed
// in its table. host-gw has no device: its peers' traffic arrives on the
// external interface, told apart by destination (host-gw networks never
// overlap, checkNetworks sees to it).
func (t tenancy) rule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = TenantRulePriority
	r.Table = t.table
	r.Protocol = uint8(backend.RouteProtocol)
	r.IifName = t.dev
	if t.dev == "" {
		r.IifName = t.ext
		r.Dst = ipNet(t.network)
	}
	return r
}

// unreachable is the table's default route: a destination none of the
// network's routes covers gets "network unreachable" instead of a lookup
// in main or in another network's table.
func (t tenancy) unreachable() *netlink.Route {
	return &netlink.Route{
		Dst:      ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)),
		Type:     unix.RTN_UNREACHABLE,
		Table:    t.table,
		Protocol: backend.RouteProtocol,
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// zoneDef is the conntrack zone table, built without touching the kernel
// so that its rules can be checked in a test.
type zoneDef struct {
	table *nftables.Table
	chain *nftables.Chain
	rules []*nftables.Rule
}

// zoneObjects builds the table that puts what arrives on each network's
// device into the network's conntrack zone, at raw priority: before
// conntrack looks the packet up, so the network's connections never meet
// another's with the same addresses.
func zoneObjects(ts []tenancy) zoneDef {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: zoneTable}
	ch := &nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
	}
	d := zoneDef{table: t, chain: ch}
	for _, x := range ts {
		exprs := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}}
		if x.dev != "" {
			exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(x.dev)})
		} else {
			exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(x.ext)})
			exprs = append(exprs, matchDst(x.network)...)
		}
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(x.zone)},
			&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true})
		d.rules = append(d.rules, &nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	return d
}

// matchDst is `meta nfproto ipv4 ip daddr <p>` (the table is inet).
func matchDst(p netip.Prefix) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}, matchPrefix(16, p, true)...)
}

// ifname is an interface name as nftables compares it: IFNAMSIZ bytes,
// zero-padded.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// tenancyKernel applies the networks' isolation to the kernel; the
// agent-level tests replace it, since they run in the machine's own
// namespace.
type tenancyKernel interface {
	// reset runs once at start, before any datapath: it installs the
	// conntrack zone table for plan (replacing any earlier one) and
	// removes what the agent left for networks that are not in plan (rules,
	// routes in their tables, admission tables) and, with a plan, the
	// agent's routes in main (a single-network run's). A nil plan is the
	// single-network agent, which only removes a multi-network run's
	// leftovers, and only when there are any.
	reset(plan []tenancy) error
	// ensure makes one network's rule and unreachable default exist; it
	// runs at start and at every reconcile.
	ensure(t tenancy) error
}

// netlinkTenancy is the tenancyKernel of the namespace its handle and
// nftables connections are bound to.
type netlinkTenancy struct {
	h   *netlink.Handle
	nft func() (*nftables.Conn, error)
	log *slog.Logger
}

// hostTenancy works in the namespace of the calling thread, the agent's.
func hostTenancy(log *slog.Logger) *netlinkTenancy {
	return &netlinkTenancy{h: &netlink.Handle{}, nft: func() (*nftables.Conn, error) { return nftables.New() }, log: log}
}

// ownRules lists the agent's policy rules (protocol 77).
func (k *netlinkTenancy) ownRules() ([]netlink.Rule, error) {
	rs, err := k.h.RuleList(unix.AF_INET)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list policy rules: %w", err)
	}
	var own []netlink.Rule
	for _, r := range rs {
		if r.Protocol == uint8(backend.RouteProtocol) {
			own = append(own, r)
		}
	}
	return own, nil
}

// sameRule compares what tells two of the agent's rules apart.
func sameRule(a, b netlink.Rule) bool {
	return a.IifName == b.IifName && a.Table == b.Table && a.Priority == b.Priority && a.Invert == b.Invert &&
		prefixString(a.Dst) == prefixString(b.Dst) && prefixString(a.Src) == prefixString(b.Src)
}

func prefixString(n *net.IPNet) string {
	if n == nil {
		return ""
	}
	return n.String()
}

func (k *netlinkTenancy) reset(plan []tenancy) error {
	rules, err := k.ownRules()
	if err != nil {
		return err
	}
	if plan == nil && len(rules) == 0 {
		return nil // never a multi-network agent here: nothing to clean
	}
	var errs []error
	for i := range rules {
		if !ruleWanted(rules[i], plan) {
			k.log.Info("removing a policy rule no network of this agent uses", "rule", rules[i].String(), "iif", rules[i].IifName)
			if err := k.h.RuleDel(&rules[i]); err != nil && !backend.NotFound(err) {
				errs = append(errs, fmt.Errorf("delete rule iif %s table %d: %w", rules[i].IifName, rules[i].Table, err))
			}
		}
	}
	errs = append(errs, k.resetRoutes(plan), k.resetNFT(plan))
	return errors.Join(errs...)
}

func ruleWanted(r netlink.Rule, plan []tenancy) bool {
	for _, t := range plan {
		if sameRule(r, *t.rule()) {
			return true
		}
	}
	return false
}

// resetRoutes removes the agent's routes in tables no network in plan
// uses, and with a plan those in main.
func (k *netlinkTenancy) resetRoutes(plan []tenancy) error {
	filter := &netlink.Route{Protocol: backend.RouteProtocol, Table: unix.RT_TABLE_UNSPEC}
	rs, err := k.h.RouteListFiltered(unix.AF_INET, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list the agent's routes: %w", err)
	}
	keep := map[int]bool{}
	for _, t := range plan {
		keep[t.table] = true
	}
	var stale []netlink.Route
	for _, r := range rs {
		main := r.Table == unix.RT_TABLE_MAIN
		if (main && plan != nil) || (!main && !keep[r.Table]) {
			stale = append(stale, r)
		}
	}
	var errs []error
	for i := range stale {
		k.log.Info("removing a route no network of this agent uses", "dst", prefixString(stale[i].Dst), "table", stale[i].Table)
		if err := k.h.RouteDel(&stale[i]); err != nil && !backend.NotFound(err) {
			errs = append(errs, fmt.Errorf("delete route %s table %d: %w", prefixString(stale[i].Dst), stale[i].Table, err))
		}
	}
	return errors.Join(errs...)
}

// resetNFT replaces the zone table and removes admission tables of
// networks not in plan (a single-network run's overlaylab-vxlan too, when
// there is a plan).
func (k *netlinkTenancy) resetNFT(plan []tenancy) error {
	c, err := k.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	keep := map[string]bool{}
	for _, t := range plan {
		if t.backend == config.BackendVXLAN {
			keep[vxlan.FilterTable(t.name)] = true
		}
	}
	if plan == nil {
		keep[vxlan.FilterTable("")] = true
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		ours := t.Name == zoneTable || strings.HasPrefix(t.Name, vxlan.FilterTable(""))
		if ours && !keep[t.Name] {
			c.DelTable(t)
		}
	}
	if len(plan) > 0 {
		d := zoneObjects(plan)
		c.AddTable(d.table)
		c.AddChain(d.chain)
		for _, r := range d.rules {
			c.AddRule(r)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: install table %s: %w", zoneTable, err)
	}
	return nil
}

func (k *netlinkTenancy) ensure(t tenancy) error {
	rules, err := k.ownRules()
	if err != nil {
		return err
	}
	want := t.rule()
	if !slices.ContainsFunc(rules, func(r netlink.Rule) bool { return sameRule(r, *want) }) {
		if err := k.h.RuleAdd(want); err != nil {
			return fmt.Errorf("network %s: rule iif %s lookup %d: %w", t.name, want.IifName, t.table, err)
		}
	}
	if err := k.h.RouteReplace(t.unreachable()); err != nil {
		return fmt.Errorf("network %s: unreachable default in table %d: %w", t.name, t.table, err)
	}
	return nil
}
