package vxlan

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nstest"
	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// unitNetns equips a namespace of the test's own (nstest.Netns) with a veth
// pair standing in for the underlay (this kernel has no dummy links); fn runs
// inside it.
func unitNetns(t *testing.T, name string) func(fn func() error) {
	t.Helper()
	in := func(fn func() error) {
		t.Helper()
		if err := nsutil.DoNamed(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	in(func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "ext0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ext1"}); err != nil {
			return err
		}
		for _, n := range []string{"ext0", "ext1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("ext0")
		addr, _ := netlink.ParseAddr("192.168.90.1/24")
		return netlink.AddrAdd(l, addr)
	})
	return in
}

func vxlanLease(i byte) subnet.Lease {
	pub := netip.AddrFrom4([4]byte{192, 168, 90, i})
	data, _ := json.Marshal(Data{VNI: 1, VtepMAC: vtepMAC(pub).String()})
	return subnet.Lease{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, i, 0}), 24),
		Attrs:  subnet.LeaseAttrs{PublicIP: pub, BackendType: config.BackendVXLAN, BackendData: data},
	}
}

// TestReconcileAfterRestart programs two peers, then plays a restarted
// agent that sees only one of them: Reconcile must remove the other's
// route, neighbour and FDB entry from the adopted device, and leave the
// current peer's entries and a route the agent does not own.
func TestReconcileAfterRestart(t *testing.T) {
	in := unitNetns(t, nstest.Netns(t, "vxlan"))
	cfg, err := config.Parse([]byte(`{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	own, h2, h3 := vxlanLease(1), vxlanLease(2), vxlanLease(3)
	start := func(peers ...subnet.Lease) backend.Backend {
		var be backend.Backend
		in(func() error {
			ifc, err := net.InterfaceByName("ext0")
			if err != nil {
				return err
			}
			ip := netip.MustParseAddr("192.168.90.1")
			if be, err = New(cfg, backend.External{Iface: ifc, PublicIP: ip, LocalIP: ip}, &backend.Metrics{}, backend.Options{}); err != nil {
				return err
			}
			if _, err := be.Prepare(ctx); err != nil {
				return err
			}
			if err := be.Configure(ctx, own); err != nil {
				return err
			}
			for _, p := range peers {
				if err := be.AddPeer(ctx, p); err != nil {
					return err
				}
			}
			return nil
		})
		return be
	}
	start(h2, h3)
	// An administrator's route on the device: not the agent's to remove.
	in(func() error {
		l, err := netlink.LinkByName("flannel.1")
		if err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("10.10.250.0/24")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.10.250.0"), Flags: int(netlink.FLAG_ONLINK), Protocol: unix.RTPROT_STATIC})
	})
	if got := kernelView(t, in); !strings.Contains(got, "10.10.3.0/24") || !strings.Contains(got, "192.168.90.3") {
		t.Fatalf("h3 not programmed before the restart:\n%s", got)
	}

	be := start(h2) // the restarted agent: h3 left meanwhile
	in(func() error { return be.Reconcile(ctx) })
	got := kernelView(t, in)
	for _, gone := range []string{"route 10.10.3.0/24", "neigh 10.10.3.0", "fdb 192.168.90.3"} {
		if strings.Contains(got, gone) {
			t.Errorf("%s is still there after Reconcile:\n%s", gone, got)
		}
	}
	for _, kept := range []string{"route 10.10.2.0/24 proto 77", "neigh 10.10.2.0 " + vtepMAC(h2.Attrs.PublicIP).String(), "fdb 192.168.90.2 " + vtepMAC(h2.Attrs.PublicIP).String(), "route 10.10.250.0/24 proto 4"} {
		if !strings.Contains(got, kept) {
			t.Errorf("%q is gone after Reconcile:\n%s", kept, got)
		}
	}
}

// kernelView lists flannel.1's routes, permanent neighbours and FDB
// entries, one per line ("route DST proto N", "neigh IP MAC", "fdb DST MAC").
func kernelView(t *testing.T, in func(func() error)) string {
	t.Helper()
	var b strings.Builder
	in(func() error {
		l, err := netlink.LinkByName("flannel.1")
		if err != nil {
			return err
		}
		idx := l.Attrs().Index
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil {
				b.WriteString(fmt.Sprintf("route %s proto %d\n", r.Dst, int(r.Protocol)))
			}
		}
		for fam, what := range map[int]string{unix.AF_INET: "neigh", unix.AF_BRIDGE: "fdb"} {
			ns, err := netlink.NeighList(idx, fam)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.State&netlink.NUD_PERMANENT != 0 && n.IP != nil {
					b.WriteString(what + " " + n.IP.String() + " " + n.HardwareAddr.String() + "\n")
				}
			}
		}
		return nil
	})
	return b.String()
}
