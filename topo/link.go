package topo

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// SetLinkUp sets a link up or down.
func SetLinkUp(nsName, dev string, up bool) error {
	return withLink(nsName, dev, func(h *netlink.Handle, l netlink.Link) error {
		var err error
		if up {
			err = h.LinkSetUp(l)
		} else {
			err = h.LinkSetDown(l)
		}
		if err != nil {
			return fmt.Errorf("%s: set %s up=%v: %w", nsName, dev, up, err)
		}
		return nil
	})
}

// withLink runs fn with a netlink handle in the named namespace and the
// device dev there.
func withLink(nsName, dev string, fn func(*netlink.Handle, netlink.Link) error) error {
	return WithHandle(nsName, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", nsName, dev, err)
		}
		return fn(h, l)
	})
}

// SetMTU sets a link's MTU.
func SetMTU(nsName, dev string, mtu int) error {
	if mtu < 68 || mtu > 65535 {
		return fmt.Errorf("MTU %d on %s: must be 68..65535", mtu, dev)
	}
	return withLink(nsName, dev, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("%s: MTU %d on %s: %w", nsName, mtu, dev, err)
		}
		return nil
	})
}

// LinkMTU reads a link's MTU.
func LinkMTU(nsName, dev string) (int, error) {
	var mtu int
	err := withLink(nsName, dev, func(_ *netlink.Handle, l netlink.Link) error {
		mtu = l.Attrs().MTU
		return nil
	})
	return mtu, err
}

// check validates an attachment before anything is created.
func (a Attachment) check() error {
	for _, n := range []string{a.NodeIf, a.Port, a.Bridge} {
		if err := CheckIfName(n); err != nil {
			return fmt.Errorf("attach %s to %s: %w", a.NodeNS, a.BridgeNS, err)
		}
	}
	if a.NodeNS == "" || a.BridgeNS == "" {
		return fmt.Errorf("attach %q to bridge %q: both namespaces are needed", a.NodeIf, a.Bridge)
	}
	if a.MTU != 0 && (a.MTU < 68 || a.MTU > 65535) {
		return fmt.Errorf("attach %s/%s: MTU %d must be 68..65535", a.NodeNS, a.NodeIf, a.MTU)
	}
	if a.Gateway.IsValid() && !a.Addr.IsValid() {
		return fmt.Errorf("attach %s/%s: a gateway needs an address", a.NodeNS, a.NodeIf)
	}
	if a.Gateway.IsValid() && !a.Addr.Masked().Contains(a.Gateway) {
		return fmt.Errorf("attach %s/%s: gateway %s is outside %s", a.NodeNS, a.NodeIf, a.Gateway, a.Addr)
	}
	return nil
}
