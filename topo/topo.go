// Package topo builds the lab's kernel objects: network namespaces, veth
// pairs, bridges, addresses and routes, all through netlink and all inside
// namespaces the lab made. Nothing here starts processes, and nothing is ever
// created in the caller's (root) namespace: every veth is created directly
// with its two ends in their target namespaces.
package topo

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// MaxIfName is the kernel's limit on interface names (IFNAMSIZ-1).
const MaxIfName = 15

// CheckIfName says whether name can name a network interface: 1 to 15
// bytes, no '/', ':' or whitespace, not "." or "..".
func CheckIfName(name string) error {
	switch {
	case name == "" || len(name) > MaxIfName:
		return fmt.Errorf("interface name %q: must be 1 to %d characters", name, MaxIfName)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("interface name %q: no '/', ':' or whitespace", name)
	}
	return nil
}

// handleAt opens a netlink handle bound to a named namespace.
func handleAt(nsName string) (*netlink.Handle, netns.NsHandle, error) {
	ns, err := nsutil.Handle(nsName)
	if err != nil {
		return nil, ns, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, ns, fmt.Errorf("netlink handle in %s: %w", nsName, err)
	}
	return h, ns, nil
}

// WithHandle runs fn with a netlink handle bound to the named namespace.
func WithHandle(nsName string, fn func(*netlink.Handle) error) error {
	h, ns, err := handleAt(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	return fn(h)
}

// WithNft runs fn with an nftables connection bound to the named namespace.
func WithNft(nsName string, fn func(*nftables.Conn) error) error {
	ns, err := nsutil.Handle(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables in %s: %w", nsName, err)
	}
	defer c.CloseLasting()
	return fn(c)
}

// CreateNS creates a namespace and brings its loopback up.
func CreateNS(name string) error {
	if nsutil.Exists(name) {
		return fmt.Errorf("netns %s already exists", name)
	}
	if err := nsutil.Create(name); err != nil {
		return err
	}
	return WithHandle(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("%s: find lo: %w", name, err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("%s: set lo up: %w", name, err)
		}
		return nil
	})
}

// CreateBridge makes an up bridge in nsName, optionally with an address,
// MTU and MAC.
func CreateBridge(nsName, name string, addr netip.Prefix, mtu int, mac net.HardwareAddr) error {
	return WithHandle(nsName, func(h *netlink.Handle) error {
		_, err := addBridge(h, nsName, name, addr, 0, mtu, mac)
		return err
	})
}

// addBridge makes an up bridge, with addr (when valid) added with
// addrFlags, and returns it with its index filled in (LinkAdd does that).
func addBridge(h *netlink.Handle, nsName, name string, addr netip.Prefix, addrFlags, mtu int, mac net.HardwareAddr) (*netlink.Bridge, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.HardwareAddr = mac
	if mtu > 0 {
		attrs.MTU = mtu
	}
	br := &netlink.Bridge{LinkAttrs: attrs}
	if err := h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("%s: create bridge %s: %w", nsName, name, err)
	}
	if addr.IsValid() {
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: ipNet(addr), Flags: addrFlags}); err != nil {
			return nil, fmt.Errorf("%s: address %s on %s: %w", nsName, addr, name, err)
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("%s: set %s up: %w", nsName, name, err)
	}
	return br, nil
}

// Attachment is one veth between a node namespace and a bridge.
type Attachment struct {
	NodeNS   string           // namespace of the node end
	NodeIf   string           // node end's name, e.g. eth0
	NodeMAC  net.HardwareAddr // may be nil
	Addr     netip.Prefix     // address on the node end (optional)
	Gateway  netip.Addr       // default route via this (optional)
	MTU      int              // 0 = kernel default
	BridgeNS string           // namespace of the bridge
	Bridge   string           // bridge name
	Port     string           // bridge end's name
	PortMAC  net.HardwareAddr // may be nil
}

// Attach creates the veth with each end already in its namespace, enslaves
// the port to the bridge and configures the node end. If any step fails the
// pair is deleted again, so a failure leaves nothing half-built.
func Attach(a Attachment) (err error) {
	if err := a.check(); err != nil {
		return err
	}
	hb, nsb, err := handleAt(a.BridgeNS)
	if err != nil {
		return err
	}
	defer nsb.Close()
	defer hb.Close()
	hn, nsn, err := handleAt(a.NodeNS)
	if err != nil {
		return err
	}
	defer nsn.Close()
	defer hn.Close()

	br, err := hb.LinkByName(a.Bridge)
	if err != nil {
		return fmt.Errorf("%s: find bridge %s: %w", a.BridgeNS, a.Bridge, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.Port
	attrs.HardwareAddr = a.PortMAC
	if a.MTU > 0 {
		attrs.MTU = a.MTU
	}
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: a.NodeIf, PeerHardwareAddr: a.NodeMAC, PeerNamespace: netlink.NsFd(int(nsn))}
	if err := hb.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s (%s) <-> %s (%s): %w", a.Port, a.BridgeNS, a.NodeIf, a.NodeNS, err)
	}
	defer func() {
		if err != nil {
			if port, lerr := hb.LinkByName(a.Port); lerr == nil {
				_ = hb.LinkDel(port)
			}
		}
	}()
	port, err := hb.LinkByName(a.Port)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", a.BridgeNS, a.Port, err)
	}
	if err := hb.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("%s: enslave %s to %s: %w", a.BridgeNS, a.Port, a.Bridge, err)
	}
	if err := hb.LinkSetUp(port); err != nil {
		return fmt.Errorf("%s: set %s up: %w", a.BridgeNS, a.Port, err)
	}
	node, err := hn.LinkByName(a.NodeIf)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", a.NodeNS, a.NodeIf, err)
	}
	if a.Addr.IsValid() {
		if err := hn.AddrAdd(node, &netlink.Addr{IPNet: ipNet(a.Addr)}); err != nil {
			return fmt.Errorf("%s: address %s on %s: %w", a.NodeNS, a.Addr, a.NodeIf, err)
		}
	}
	if err := hn.LinkSetUp(node); err != nil {
		return fmt.Errorf("%s: set %s up: %w", a.NodeNS, a.NodeIf, err)
	}
	if a.Gateway.IsValid() {
		r := &netlink.Route{LinkIndex: node.Attrs().Index, Gw: a.Gateway.AsSlice()}
		if err := hn.RouteAdd(r); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", a.NodeNS, a.Gateway, err)
		}
	}
	return nil
}

// Sysctl writes a value under /proc/sys/net inside nsName (the net sysctls
// are per namespace and resolve against the opening thread's namespace).
func Sysctl(nsName, key, value string) error {
	return nsutil.DoNamed(nsName, func() error {
		p := filepath.Join("/proc/sys", filepath.FromSlash(key))
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("%s: sysctl %s=%s: %w", nsName, key, value, err)
		}
		return nil
	})
}

// DeleteNamespaces removes the named namespaces (links inside go with
// them) and returns those now gone. Missing ones are fine (nsutil.Delete
// says so): teardown is idempotent.
func DeleteNamespaces(names []string) ([]string, error) {
	var errs []error
	var gone []string
	for _, n := range names {
		if err := nsutil.Delete(n); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, n)
	}
	return gone, errors.Join(errs...)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Neighbor is one static IPv4 neighbour entry.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// SetNeighbors installs permanent neighbour entries on dev in nsName.
//
// The lab knows every MAC in advance, so it writes the underlay's and the
// container bridges' ARP tables itself: the kernel's neighbour table limit
// (gc_thresh3) is shared by every namespace on the machine, and a large lab
// resolving dynamically would overflow it and lose packets. Permanent
// entries are exempt from that limit.
func SetNeighbors(nsName, dev string, ns []Neighbor) error {
	if len(ns) == 0 {
		return nil
	}
	return withLink(nsName, dev, func(h *netlink.Handle, l netlink.Link) error {
		for _, n := range ns {
			err := h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: n.IP.AsSlice(), HardwareAddr: n.MAC})
			if err != nil {
				return fmt.Errorf("%s: neighbour %s lladdr %s on %s: %w", nsName, n.IP, n.MAC, dev, err)
			}
		}
		return nil
	})
}

// DelNeighbors removes neighbour entries for the given addresses; missing
// ones are fine.
func DelNeighbors(nsName, dev string, ips []netip.Addr) error {
	return WithHandle(nsName, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return nil // the link is gone, and its entries with it
		}
		for _, ip := range ips {
			err := h.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET, IP: ip.AsSlice()})
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("%s: delete neighbour %s: %w", nsName, ip, err)
			}
		}
		return nil
	})
}
