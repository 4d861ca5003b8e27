package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// findExternal picks the interface and addresses the agent publishes, as
// flanneld does: --iface by name or address, else the default route's device.
func findExternal(iface, publicIP string) (backend.External, error) {
	var ifc *net.Interface
	var err error
	switch {
	case iface == "":
		ifc, err = defaultRouteIface()
	default:
		if ip, perr := netip.ParseAddr(iface); perr == nil {
			ifc, err = ifaceWithAddr(ip)
		} else {
			ifc, err = net.InterfaceByName(iface)
			if err != nil {
				err = fmt.Errorf("--iface %q: %w", iface, err)
			}
		}
	}
	if err != nil {
		return backend.External{}, err
	}
	local, err := firstIPv4(ifc)
	if err != nil {
		return backend.External{}, err
	}
	ext := backend.External{Iface: ifc, LocalIP: local, PublicIP: local}
	if publicIP != "" {
		ip, err := netip.ParseAddr(publicIP)
		if err != nil || !ip.Is4() {
			return backend.External{}, fmt.Errorf("--public-ip %q: not an IPv4 address", publicIP)
		}
		ext.PublicIP = ip
	}
	return ext, nil
}

func firstIPv4(ifc *net.Interface) (netip.Addr, error) {
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && !ip.IsLinkLocalUnicast() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", ifc.Name)
}

func ifaceWithAddr(ip netip.Addr) (*net.Interface, error) {
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifcs {
		addrs, _ := ifcs[i].Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if x, ok := netip.AddrFromSlice(ipn.IP); ok && x.Unmap() == ip {
					return &ifcs[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("--iface %s: no interface has that address", ip)
}

// defaultRouteIface returns the device of the IPv4 default route.
func defaultRouteIface() (*net.Interface, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.LinkIndex > 0 {
			ifc, err := net.InterfaceByIndex(r.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("default route device %d: %w", r.LinkIndex, err)
			}
			return ifc, nil
		}
	}
	// Without a default route, a host with one non-loopback interface is unambiguous.
	ifcs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var cand []net.Interface
	for _, i := range ifcs {
		if i.Flags&net.FlagLoopback == 0 && i.Flags&net.FlagUp != 0 {
			if _, err := firstIPv4(&i); err == nil {
				cand = append(cand, i)
			}
		}
	}
	if len(cand) == 1 {
		return &cand[0], nil
	}
	return nil, errors.New("no default route and no single up interface with an IPv4 address: pass --iface")
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
