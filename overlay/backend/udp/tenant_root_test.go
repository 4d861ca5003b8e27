package udp

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// TestDeviceNameTooLong: a TUN name the kernel cannot hold is refused by
// New, naming it.
func TestDeviceNameTooLong(t *testing.T) {
	cfg := &config.Config{Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24, Backend: config.Backend{Type: config.BackendUDP, Port: 8285}}
	_, err := New(cfg, backend.External{}, &backend.Metrics{}, backend.Options{UDPMode: "simple", DeviceName: "fl-abcdefghijklm"})
	if err == nil || !strings.Contains(err.Error(), `"fl-abcdefghijklm"`) {
		t.Errorf("New with a 16-character name = %v, want it refused by name", err)
	}
}

// TestTwoNetworksOwnDevices runs two udp networks with the same CIDR in one
// namespace, as a multi-network agent does: each has its own TUN device
// (fl-red in the simple datapath, fl-blue in the fast one) on its own
// port, its Network route only in its own table, and its address adds no
// route to main.
func TestTwoNetworksOwnDevices(t *testing.T) {
	inThrowawayNetns(t, func(h *netlink.Handle) {
		ctx := context.Background()
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		if err != nil {
			t.Error(err)
			return
		}
		ifc, err := net.InterfaceByName("lo")
		if err != nil {
			t.Error(err)
			return
		}
		ext := backend.External{Iface: ifc, LocalIP: netip.MustParseAddr("127.0.0.1"), PublicIP: netip.MustParseAddr("127.0.0.1")}
		own := subnet.Lease{Subnet: netip.MustParsePrefix("10.10.5.0/24")}
		var bes []backend.Backend
		defer func() {
			for _, be := range bes {
				be.Close()
			}
		}()
		for _, n := range []struct {
			name, mode  string
			port, table int
		}{{"red", "simple", 8285, 1001}, {"blue", "fast", 8286, 1002}} {
			cfg := &config.Config{Network: netip.MustParsePrefix("10.10.0.0/16"), SubnetLen: 24, Backend: config.Backend{Type: config.BackendUDP, Port: n.port}}
			be, err := New(cfg, ext, &backend.Metrics{}, backend.Options{UDPMode: n.mode, Workers: 1, Network: n.name, Table: n.table, DeviceName: "fl-" + n.name})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := be.Prepare(ctx); err != nil {
				t.Errorf("%s: Prepare: %v", n.name, err)
				return
			}
			bes = append(bes, be)
			if err := be.Configure(ctx, own); err != nil {
				t.Errorf("%s: Configure: %v", n.name, err)
				return
			}
			if err := be.Reconcile(ctx); err != nil {
				t.Errorf("%s: Reconcile: %v", n.name, err)
			}
		}
		if _, err := h.LinkByName(TunName); err == nil {
			t.Errorf("%s exists: a network of a multi-network agent must use its own device name", TunName)
		}
		for _, n := range []struct {
			dev   string
			table int
		}{{"fl-red", 1001}, {"fl-blue", 1002}} {
			l, err := h.LinkByName(n.dev)
			if err != nil {
				t.Errorf("device %s: %v", n.dev, err)
				continue
			}
			addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IPNet.String() != "10.10.5.0/16" || addrs[0].Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
				t.Errorf("%s addresses = %v, want 10.10.5.0/16 noprefixroute", n.dev, addrs)
			}
			rs, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: n.table}, netlink.RT_FILTER_TABLE)
			if len(rs) != 1 || rs[0].Dst.String() != "10.10.0.0/16" || rs[0].LinkIndex != l.Attrs().Index || rs[0].Protocol != backend.RouteProtocol {
				t.Errorf("table %d = %v, want only 10.10.0.0/16 dev %s proto 77", n.table, rs, n.dev)
			}
		}
		main, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		for _, r := range main {
			if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.10.") {
				t.Errorf("main holds a network's route: %s", r)
			}
		}
		// Each network listens on its own port.
		for _, port := range []int{8285, 8286} {
			if c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port}); err == nil {
				c.Close()
				t.Errorf("port %d is free: its network does not listen on it", port)
			}
		}
	})
}
