package overlay

// Several networks in one agent (--networks red,blue). Upstream flannel's
// old multi-network mode only kept subnet allocation apart; here the
// networks may even share a CIDR, so their traffic must never meet in one
// routing table or one conntrack zone. This machine's kernel has no VRF
// device, so each network gets what the kernel does have:
//
//   - a routing table of its own (tenantBase+i for the i-th name of
//     --networks, counted from 1: red → 1001, blue → 1002), holding the
//     routes to its peers, the route of its whole Network through its
//     device, and an unreachable default, so that a lookup never falls
//     through to main or another network's table;
//   - a policy rule `iif <its device> lookup <its table>` (host-gw, which
//     has no device, `iif <external> to <its Network> lookup <its table>`);
//   - a conntrack zone of its own (the same number as the table), set by
//     nftables (table inet overlaylab-tenants, chain prerouting at raw
//     priority, before conntrack) for packets arriving on its device;
//   - its own datapath: vxlan device flannel.<VNI> with its own VNI, udp
//     TUN device fl-NAME on its own port.
//
// The container runtime does the same on the bridge side: bridge br-NAME
// with FLANNEL_SUBNET's first address (noprefixroute), the bridge's
// connected route in the network's table, `iif br-NAME lookup <table>` and
// `ct zone set <zone>` for packets arriving on br-NAME; the table and zone
// are FLANNEL_ROUTE_TABLE and FLANNEL_CT_ZONE in DIR/NAME.env.
//
// A packet of network red from a red container on host A to a red
// container on host B:
//
//	A: container eth0 → br-red (ct zone red, set by the runtime's rule)
//	   → rule iif br-red → table red: B's subnet via flannel.<VNI red>
//	     (or the Network via fl-red for udp)
//	   → encapsulated with red's VNI (udp: red's port) to B's PublicIP
//	B: decapsulated by the device of that VNI (udp: the agent writes it
//	   into fl-red) → arrives on flannel.<VNI red> (fl-red): ct zone red
//	   (the agent's nftables rule) → rule iif flannel.<VNI red> → table red:
//	   the connected route of br-red → the red container.
//
// Blue's packets take blue's bridge, table, zone, VNI (port) and device
// the same way; nothing of blue is in red's table, so a red packet to an
// address that exists only in blue finds no route to it, and one to an
// address in both reaches red's container only.

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/overlaylab/overlaylab/overlay/backend/vxlan"
	"github.com/overlaylab/overlaylab/overlay/config"
)

// tenantBase numbers the networks' routing tables and conntrack zones:
// the i-th network of --networks (from 1) gets tenantBase+i for both. The
// numbers depend only on the list, so a restart with the same list keeps
// them, and appending a network keeps those of the others.
const tenantBase = 1000

// tenant is where one network of a multi-network agent lives in the kernel.
type tenant struct {
	name  string
	table int
	zone  uint16
}

// assignTenants numbers the networks of --networks in their order.
func assignTenants(names []string) []tenant {
	ts := make([]tenant, len(names))
	for i, n := range names {
		ts[i] = tenant{name: n, table: tenantBase + 1 + i, zone: uint16(tenantBase + 1 + i)}
	}
	return ts
}

// envPath is a network's subnet env file in dir.
func envPath(dir, name string) string { return filepath.Join(dir, name+".env") }

// udpDeviceName is the udp backend's TUN device of network name.
func udpDeviceName(name string) string { return "fl-" + name }

// deviceName is the device a network's traffic from peers arrives on,
// which its policy rule and conntrack zone match: the vxlan device of its
// VNI, the udp TUN device fl-NAME; "" for host-gw, whose traffic arrives on
// the external interface.
func deviceName(name string, cfg *config.Config) string {
	switch cfg.Backend.Type {
	case config.BackendVXLAN:
		return vxlan.DeviceName(cfg.Backend.VNI)
	case config.BackendUDP:
		return udpDeviceName(name)
	}
	return ""
}

// namedConfig is a network's config and where it was read from.
type namedConfig struct {
	name string
	key  string // etcd key, for messages
	cfg  *config.Config
}

// checkNetworks refuses configs that cannot be served together by one
// agent: different backend types, two vxlan networks with one VNI (one
// device name, one VNI on the wire), two udp networks on one port, two
// host-gw networks whose CIDRs overlap (host-gw routes by destination
// alone and cannot tell them apart). Every clash is reported, naming both
// networks and their keys.
func checkNetworks(ncs []namedConfig) error {
	var errs []error
	for i, x := range ncs {
		for _, y := range ncs[i+1:] {
			if err := clash(x, y); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func clash(x, y namedConfig) error {
	xb, yb := x.cfg.Backend, y.cfg.Backend
	switch {
	case xb.Type != yb.Type:
		return fmt.Errorf("networks %s (%s, %s) and %s (%s, %s) use different backends: one agent serves all its networks with one backend type",
			x.name, xb.Type, x.key, y.name, yb.Type, y.key)
	case xb.Type == config.BackendVXLAN && xb.VNI == yb.VNI:
		return fmt.Errorf("networks %s and %s both use VNI %d (Backend.VNI in %s and %s): each network needs its own VNI",
			x.name, y.name, xb.VNI, x.key, y.key)
	case xb.Type == config.BackendUDP && xb.Port == yb.Port:
		return fmt.Errorf("networks %s and %s both use udp port %d (Backend.Port in %s and %s): each network needs its own port",
			x.name, y.name, xb.Port, x.key, y.key)
	case xb.Type == config.BackendHostGW && x.cfg.Network.Overlaps(y.cfg.Network):
		return fmt.Errorf("host-gw networks %s (%s) and %s (%s) overlap: host-gw routes by destination alone and cannot keep overlapping networks apart; use vxlan or udp, or disjoint Networks",
			x.name, x.cfg.Network, y.name, y.cfg.Network)
	}
	return nil
}
