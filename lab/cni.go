package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/overlaylab/overlaylab/internal/cni"
	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// The CNI runtime attaches each container the way a Kubernetes node does:
// the CNI flannel meta-plugin runs inside the host namespace with that
// host's subnet.env and delegates to the bridge (cni0) and host-local
// plugins. Every bit of CNI state lives under the host's dir in the lab's
// state dir (cni/), never in /var/lib/cni.

// cniPluginDir finds the plugins: the spec's dir, else bin/cni beside the
// overlaylab binary (where `make cni-plugins` puts them), else /opt/cni/bin.
func cniPluginDir(specDir, self string) (string, error) {
	cands := []string{specDir}
	if specDir == "" {
		cands = []string{filepath.Join(filepath.Dir(self), "cni"), "/opt/cni/bin"}
	}
	var firstErr error
	for _, d := range cands {
		abs, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		err = (&cni.Runner{PluginDir: abs}).CheckPlugins()
		if err == nil {
			return abs, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return "", fmt.Errorf("--runtime cni: %w", firstErr)
}

func (l *Lab) cniRunner(st *State, h *HostState) *cni.Runner {
	return &cni.Runner{PluginDir: st.CNIDir, DataDir: filepath.Join(l.dir, h.Name, "cni")}
}

func cniConf(h *HostState, network string) cni.FlannelConf {
	c := cni.FlannelConf{SubnetFile: h.subnetFileOf(network)}
	if network != "" {
		c.Network, c.Bridge = "ol-"+network, "cni-"+network
	}
	return c
}

// attachCNI makes container j's namespace and runs CNI ADD for it.
func (l *Lab) attachCNI(ctx context.Context, st *State, h *HostState, network string, j int) (ContainerState, error) {
	names := plan.Names{Lab: l.name}
	c := ContainerState{Name: names.Container(network, j), Netns: names.ContainerNS(h.Index, network, j), Network: network}
	c.CNI = c.Netns // unique on the machine, stable for DEL
	if err := topo.CreateNS(c.Netns); err != nil {
		return c, err
	}
	res, err := l.cniRunner(st, h).Add(ctx, nsPath(h.Netns), nsPath(c.Netns), c.CNI, plan.HostIf, cniConf(h, network))
	if err != nil {
		return c, fmt.Errorf("CNI ADD for %s/%s: %w", h.Name, c.Name, err)
	}
	c.IP, c.Prefix, c.Gateway = res.Address.Addr().String(), res.Address.String(), res.Gateway.String()
	return c, nil
}

// detachCNI runs CNI DEL for a container (it frees host-local's address
// even when the namespace is gone already).
func (l *Lab) detachCNI(ctx context.Context, st *State, h *HostState, c ContainerState) error {
	if c.CNI == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(l.dir, h.Name, "cni")); err != nil {
		return nil // nothing of CNI was ever made for this host
	}
	if err := l.cniRunner(st, h).Del(ctx, nsPath(h.Netns), nsPath(c.Netns), c.CNI, plan.HostIf, cniConf(h, c.Network)); err != nil {
		return fmt.Errorf("CNI DEL for %s/%s: %w", h.Name, c.Name, err)
	}
	return nil
}

func nsPath(name string) string { return filepath.Join(nsutil.RunDir, name) }
