package topo

import (
	"fmt"
	"sort"
	"strings"

	"github.com/safchain/ethtool"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// Offload names the switches `ethtool -K` calls tx, tso and gro: each is a
// group of the kernel's features (by name prefix).
type Offload string

// Offloads.
const (
	OffloadTxChecksum Offload = "tx-checksum" // tx-checksum-ipv4, -ip-generic, -ipv6, -sctp, ...
	OffloadTSO        Offload = "tso"         // tx-tcp-segmentation, tx-tcp6-segmentation, ...
	OffloadGRO        Offload = "gro"         // rx-gro
)

// features is each switch's feature-name prefixes.
var features = map[Offload][]string{
	OffloadTxChecksum: {"tx-checksum-"},
	OffloadTSO:        {"tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation"},
	OffloadGRO:        {"rx-gro"},
}

// SetOffloads switches offloads of a device inside a namespace through the
// kernel's ethtool interface (no ethtool binary needed) and returns the
// features of the asked switches that are now as wanted (also those that
// already were). A device may fix some features of a group (veth fixes a
// few tx-checksum ones): only when none could be set as wanted is it an
// error, naming the stuck ones.
func SetOffloads(nsName, dev string, want map[Offload]bool) ([]string, error) {
	e, err := ethtoolIn(nsName)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	have, err := e.Features(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: features of %s: %w", nsName, dev, err)
	}
	change := map[string]bool{}
	for o, on := range want {
		prefixes, ok := features[o]
		if !ok {
			return nil, fmt.Errorf("offload %q: use %s, %s or %s", o, OffloadTxChecksum, OffloadTSO, OffloadGRO)
		}
		found := false
		for name := range have {
			for _, p := range prefixes {
				if name == p || (strings.HasSuffix(p, "-") && strings.HasPrefix(name, p)) {
					change[name] = on
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: %s has no %s features", nsName, dev, o)
		}
	}
	if err := e.Change(dev, change); err != nil {
		return nil, fmt.Errorf("%s: set offloads of %s: %w", nsName, dev, err)
	}
	now, err := e.Features(dev)
	if err != nil {
		return nil, fmt.Errorf("%s: features of %s: %w", nsName, dev, err)
	}
	var changed, stuck []string
	for name, on := range change {
		if now[name] == on {
			changed = append(changed, name)
		} else if have[name] != on {
			stuck = append(stuck, name)
		}
	}
	sort.Strings(changed)
	if len(stuck) > 0 && len(changed) == 0 {
		sort.Strings(stuck)
		return nil, fmt.Errorf("%s: %s: the kernel does not let these change: %s", nsName, dev, strings.Join(stuck, ", "))
	}
	return changed, nil
}

// Offloads reads a device's features.
func Offloads(nsName, dev string) (map[string]bool, error) {
	e, err := ethtoolIn(nsName)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return e.Features(dev)
}

// ethtoolIn opens an ethtool socket inside the named namespace; the socket
// keeps that namespace after the thread switches back.
func ethtoolIn(nsName string) (*ethtool.Ethtool, error) {
	var e *ethtool.Ethtool
	err := nsutil.DoNamed(nsName, func() error {
		var err error
		e, err = ethtool.NewEthtool()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: ethtool: %w", nsName, err)
	}
	return e, nil
}
