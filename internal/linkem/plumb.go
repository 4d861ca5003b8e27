package linkem

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Putting a relay on a host's link, inside the bridge's namespace, without
// the host seeing any change (its eth0, MAC and addresses stay as they are):
//
//	before: host eth0 ══ port ── bridge
//	after:  host eth0 ══ port ⇄ relay ⇄ bridgeIf ══ bridgePort ── bridge
//
// Insert takes the port off the bridge and enslaves a new veth pair's end
// (bridgePort) in its place, with the port's bridge flags and MAC; the relay
// (Run, a separate process) carries frames between the port and the pair's
// free end (bridgeIf). Remove puts the port back with the same flags and
// deletes the pair. Between Insert and the relay's start the host's link
// carries nothing.

// Link names the pieces of an inserted relay.
type Link struct {
	Netns      string `json:"netns"`
	Bridge     string `json:"bridge"`
	Port       string `json:"port"`       // the host's port: the relay's HostIf
	BridgeIf   string `json:"bridgeIf"`   // the relay's bridge side
	BridgePort string `json:"bridgePort"` // on the bridge in the port's place
}

// Config returns a relay Config for l with no impairment.
func (l Link) Config() Config {
	return Config{Netns: l.Netns, HostIf: l.Port, BridgeIf: l.BridgeIf}
}

// PairNames are the names Insert gives the pair for port: derived from the
// port's name (a hash, so any name fits the kernel's 15 characters), the
// same on every call, so Insert and Remove find a pair left by a crash.
func PairNames(port string) (bridgePort, bridgeIf string) {
	h := fnv.New32a()
	h.Write([]byte(port))
	s := fmt.Sprintf("lkm%08x", h.Sum32())
	return s + "p", s + "r"
}

// pairAlias marks the pair's bridge end, for whoever lists links.
func pairAlias(port string) string { return "linkem:" + port }

// plumbing is a netlink handle in the bridge's namespace and the links
// Insert and Remove work on.
type plumbing struct {
	nsName string
	ns     netns.NsHandle
	h      *netlink.Handle
	link   Link
	br     netlink.Link
	// afterStep, when set, runs after each step of insert; an error it
	// returns fails the insert there (tests prove each failure is undone).
	afterStep func(step string) error
}

func (pl *plumbing) stepDone(step string) error {
	if pl.afterStep == nil {
		return nil
	}
	return pl.afterStep(step)
}

// insertSteps names the steps of insert, in order.
var insertSteps = []string{"create pair", "disable IPv6", "alias", "enslave", "bridge flags", "up", "take port off"}

func openPlumbing(ctx context.Context, nsName, bridge, port string) (*plumbing, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if nsName == "" || bridge == "" || port == "" {
		return nil, fmt.Errorf("linkem: namespace, bridge and port are all required (got %q, %q, %q)", nsName, bridge, port)
	}
	ns, err := nsutil.Handle(nsName)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", nsName, err)
	}
	pl := &plumbing{nsName: nsName, ns: ns, h: h}
	pl.link = Link{Netns: nsName, Bridge: bridge, Port: port}
	pl.link.BridgePort, pl.link.BridgeIf = PairNames(port)
	br, err := h.LinkByName(bridge)
	if err != nil {
		pl.close()
		return nil, fmt.Errorf("%s: find bridge %s: %w", nsName, bridge, err)
	}
	if br.Type() != "bridge" {
		pl.close()
		return nil, fmt.Errorf("%s: %s is a %s, not a bridge", nsName, bridge, br.Type())
	}
	pl.br = br
	return pl, nil
}

func (pl *plumbing) close() {
	pl.h.Close()
	pl.ns.Close()
}

// lookup returns the named link, nil if there is none.
func (pl *plumbing) lookup(name string) (netlink.Link, error) {
	l, err := pl.h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: find %s: %w", pl.nsName, name, err)
	}
	return l, nil
}

// Insert puts a relay's plumbing on port, a port of bridge in namespace
// nsName, and returns its names. Calling it again on an inserted port
// returns the same Link; a pair left half-made by a crash is rebuilt. On
// error nothing it made is left and the port is back on the bridge.
func Insert(ctx context.Context, nsName, bridge, port string) (Link, error) {
	return insertWith(ctx, nsName, bridge, port, nil)
}

func insertWith(ctx context.Context, nsName, bridge, port string, afterStep func(string) error) (Link, error) {
	pl, err := openPlumbing(ctx, nsName, bridge, port)
	if err != nil {
		return Link{}, err
	}
	defer pl.close()
	pl.afterStep = afterStep
	p, err := pl.lookup(port)
	if err != nil {
		return Link{}, err
	}
	if p == nil {
		return Link{}, fmt.Errorf("%s: no port %s", nsName, port)
	}
	a, err := pl.lookup(pl.link.BridgePort)
	if err != nil {
		return Link{}, err
	}
	onBridge := p.Attrs().MasterIndex == pl.br.Attrs().Index
	switch {
	case a != nil && !onBridge && p.Attrs().MasterIndex == 0 && a.Attrs().MasterIndex == pl.br.Attrs().Index:
		return pl.link, pl.ensureUp() // already inserted
	case a != nil:
		// Left by an Insert that did not finish: start over.
		if err := pl.h.LinkDel(a); err != nil {
			return Link{}, fmt.Errorf("%s: delete stale %s: %w", nsName, pl.link.BridgePort, err)
		}
		if !onBridge && p.Attrs().MasterIndex == 0 {
			if err := pl.h.LinkSetMaster(p, pl.br); err != nil {
				return Link{}, fmt.Errorf("%s: put %s back on %s: %w", nsName, port, bridge, err)
			}
			onBridge = true
		}
	}
	if !onBridge {
		return Link{}, fmt.Errorf("%s: %s is not a port of bridge %s", nsName, port, bridge)
	}
	return pl.link, pl.insert(p)
}

func (pl *plumbing) insert(p netlink.Link) (err error) {
	flags, err := pl.h.LinkGetProtinfo(p)
	if err != nil {
		return fmt.Errorf("%s: bridge flags of %s: %w", pl.nsName, pl.link.Port, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = pl.link.BridgePort
	attrs.MTU = p.Attrs().MTU
	// The port's MAC: a bridge without a MAC of its own takes its lowest
	// port's, which must not change because a port was swapped.
	attrs.HardwareAddr = p.Attrs().HardwareAddr
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: pl.link.BridgeIf}
	if err := pl.h.LinkAdd(veth); err != nil {
		return fmt.Errorf("%s: create veth %s <-> %s: %w", pl.nsName, pl.link.BridgePort, pl.link.BridgeIf, err)
	}
	defer func() {
		if err != nil {
			pl.undoInsert(p, flags)
		}
	}()
	if err := pl.stepDone("create pair"); err != nil {
		return err
	}
	a, err := pl.h.LinkByName(pl.link.BridgePort)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", pl.nsName, pl.link.BridgePort, err)
	}
	b, err := pl.h.LinkByName(pl.link.BridgeIf)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", pl.nsName, pl.link.BridgeIf, err)
	}
	// The pair only carries the host's frames: no addresses of its own,
	// no IPv6 router solicitations or DAD of its own either.
	if err := pl.disableIPv6(pl.link.BridgePort, pl.link.BridgeIf); err != nil {
		return err
	}
	if err := pl.stepDone("disable IPv6"); err != nil {
		return err
	}
	if b.Attrs().MTU != p.Attrs().MTU {
		if err := pl.h.LinkSetMTU(b, p.Attrs().MTU); err != nil {
			return fmt.Errorf("%s: MTU of %s: %w", pl.nsName, pl.link.BridgeIf, err)
		}
	}
	if err := pl.h.LinkSetAlias(a, pairAlias(pl.link.Port)); err != nil {
		return fmt.Errorf("%s: alias of %s: %w", pl.nsName, pl.link.BridgePort, err)
	}
	if err := pl.stepDone("alias"); err != nil {
		return err
	}
	if err := pl.h.LinkSetMaster(a, pl.br); err != nil {
		return fmt.Errorf("%s: enslave %s to %s: %w", pl.nsName, pl.link.BridgePort, pl.link.Bridge, err)
	}
	if err := pl.stepDone("enslave"); err != nil {
		return err
	}
	if err := pl.setFlags(a, flags); err != nil {
		return err
	}
	if err := pl.stepDone("bridge flags"); err != nil {
		return err
	}
	for _, l := range []netlink.Link{a, b} {
		if err := pl.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: set %s up: %w", pl.nsName, l.Attrs().Name, err)
		}
	}
	if err := pl.stepDone("up"); err != nil {
		return err
	}
	if err := pl.h.LinkSetNoMaster(p); err != nil {
		return fmt.Errorf("%s: take %s off %s: %w", pl.nsName, pl.link.Port, pl.link.Bridge, err)
	}
	return pl.stepDone("take port off")
}

// undoInsert deletes the pair and makes sure the port is back on the bridge
// with its flags (best effort: it runs after another error).
func (pl *plumbing) undoInsert(p netlink.Link, flags netlink.Protinfo) {
	if a, _ := pl.lookup(pl.link.BridgePort); a != nil {
		_ = pl.h.LinkDel(a)
	}
	if cur, _ := pl.lookup(pl.link.Port); cur != nil && cur.Attrs().MasterIndex != pl.br.Attrs().Index {
		if pl.h.LinkSetMaster(p, pl.br) == nil {
			_ = pl.setFlags(p, flags)
		}
	}
}

// ensureUp brings an inserted pair up (a no-op when it is).
func (pl *plumbing) ensureUp() error {
	for _, name := range []string{pl.link.BridgePort, pl.link.BridgeIf} {
		l, err := pl.h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: find %s: %w", pl.nsName, name, err)
		}
		if err := pl.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: set %s up: %w", pl.nsName, name, err)
		}
	}
	return nil
}

// setFlags gives a bridge port the flags another one had.
func (pl *plumbing) setFlags(l netlink.Link, f netlink.Protinfo) error {
	set := []struct {
		name string
		fn   func(netlink.Link, bool) error
		v    bool
	}{
		{"hairpin", pl.h.LinkSetHairpin, f.Hairpin},
		{"guard", pl.h.LinkSetGuard, f.Guard},
		{"fastleave", pl.h.LinkSetFastLeave, f.FastLeave},
		{"root_block", pl.h.LinkSetRootBlock, f.RootBlock},
		{"learning", pl.h.LinkSetLearning, f.Learning},
		{"flood", pl.h.LinkSetFlood, f.Flood},
		{"proxy_arp", pl.h.LinkSetBrProxyArp, f.ProxyArp},
		{"proxy_arp_wifi", pl.h.LinkSetBrProxyArpWiFi, f.ProxyArpWiFi},
		{"isolated", pl.h.LinkSetIsolated, f.Isolated},
		{"neigh_suppress", pl.h.LinkSetBrNeighSuppress, f.NeighSuppress},
	}
	for _, s := range set {
		if err := s.fn(l, s.v); err != nil {
			return fmt.Errorf("%s: bridge flag %s on %s: %w", pl.nsName, s.name, l.Attrs().Name, err)
		}
	}
	return nil
}

func (pl *plumbing) disableIPv6(names ...string) error {
	return nsutil.DoHandle(pl.ns, func() error {
		for _, n := range names {
			p := filepath.Join("/proc/sys/net/ipv6/conf", n, "disable_ipv6")
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("%s: disable IPv6 on %s: %w", pl.nsName, n, err)
			}
		}
		return nil
	})
}

// Remove undoes Insert: the port goes back on the bridge with the flags it
// had there, and the pair is deleted. Stop the relay first. Removing a port
// that has no relay is a no-op; a port that is gone leaves only the pair to
// delete.
func Remove(ctx context.Context, nsName, bridge, port string) error {
	pl, err := openPlumbing(ctx, nsName, bridge, port)
	if err != nil {
		return err
	}
	defer pl.close()
	p, err := pl.lookup(port)
	if err != nil {
		return err
	}
	a, err := pl.lookup(pl.link.BridgePort)
	if err != nil {
		return err
	}
	if p != nil && p.Attrs().MasterIndex != pl.br.Attrs().Index {
		if p.Attrs().MasterIndex != 0 {
			return fmt.Errorf("%s: %s is enslaved to another master (index %d), not %s", nsName, port, p.Attrs().MasterIndex, bridge)
		}
		// The flags it had are on the pair's end (Insert copied them).
		var flags *netlink.Protinfo
		if a != nil && a.Attrs().MasterIndex == pl.br.Attrs().Index {
			f, err := pl.h.LinkGetProtinfo(a)
			if err != nil {
				return fmt.Errorf("%s: bridge flags of %s: %w", nsName, pl.link.BridgePort, err)
			}
			flags = &f
		}
		if err := pl.h.LinkSetMaster(p, pl.br); err != nil {
			return fmt.Errorf("%s: put %s back on %s: %w", nsName, port, bridge, err)
		}
		if flags != nil {
			if err := pl.setFlags(p, *flags); err != nil {
				return err
			}
		}
		if err := pl.h.LinkSetUp(p); err != nil {
			return fmt.Errorf("%s: set %s up: %w", nsName, port, err)
		}
	}
	if a != nil {
		if err := pl.h.LinkDel(a); err != nil {
			return fmt.Errorf("%s: delete %s: %w", nsName, pl.link.BridgePort, err)
		}
	}
	return nil
}

// Inserted reports whether port currently has a relay's plumbing.
func Inserted(ctx context.Context, nsName, bridge, port string) (bool, error) {
	pl, err := openPlumbing(ctx, nsName, bridge, port)
	if err != nil {
		return false, err
	}
	defer pl.close()
	a, err := pl.lookup(pl.link.BridgePort)
	return a != nil, err
}
