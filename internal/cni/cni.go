// Package cni attaches a container namespace to a lab host the way a
// Kubernetes node does: by running the real CNI flannel meta-plugin, which
// reads the host's subnet.env and delegates to the bridge and host-local
// plugins.
//
// The plugins run through libcni (github.com/containernetworking/cni), which
// builds each plugin's stdin and environment, caches results for DEL and
// converts results between spec versions. What libcni cannot know is that
// the "node" is a network namespace: a plugin must run *inside* the host's
// namespace, so that the flannel plugin's bridge cni0, its host-side veths and
// its NAT rules land there and not in the namespace of the process that calls
// us. hostExec does that (see its comment).
//
// Every file the plugins write goes under Runner.DataDir, never /var/lib/cni:
// libcni's result cache, the flannel plugin's saved delegate configs and
// host-local's address reservations. One Runner (one DataDir) per lab host.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/overlaylab/overlaylab/internal/nsutil"
)

// PluginNames are the plugin binaries a Runner needs in its PluginDir.
func PluginNames() []string { return []string{"flannel", "bridge", "host-local", "loopback"} }

// Defaults of FlannelConf, as in kube-flannel's cni-conf.json.
const (
	DefaultNetwork = "cbr0"
	DefaultBridge  = "cni0"
)

// Spec version of the configs we hand the plugins. The flannel meta-plugin of
// containernetworking/plugins v0.9.1 speaks up to 0.4.0; 0.3.1 is what
// kube-flannel's own config uses.
const confVersion = "0.3.1"

// Runner runs the CNI plugins for the containers of one host.
type Runner struct {
	// PluginDir holds the plugin binaries (PluginNames), e.g. bin/cni.
	PluginDir string
	// DataDir is the root of all CNI state for this host: cache/ (libcni's
	// results), flannel/ (the meta-plugin's delegate configs, read back at
	// DEL) and networks/ (host-local's reservations). It must not be shared
	// by two hosts: host-local keeps one reservation directory per network
	// name.
	DataDir string
}

// FlannelConf is the flannel meta-plugin's network config for one host.
// MTU and masquerading are not in it: the plugin reads them from SubnetFile
// (FLANNEL_MTU for the bridge and veths; FLANNEL_IPMASQ, and the bridge
// masquerades only when the agent does not).
type FlannelConf struct {
	// Network is the CNI network name; DefaultNetwork if empty.
	Network string
	// SubnetFile is the host's subnet.env as its agent wrote it (absolute).
	SubnetFile string
	// Bridge is the host bridge the delegate creates; DefaultBridge if empty.
	Bridge string
}

// Result is what CNI returned for one container.
type Result struct {
	// Address is the container's address with its prefix length.
	Address netip.Prefix
	// Gateway is the container's gateway (the bridge's address).
	Gateway netip.Addr
	// ContainerIf is the interface inside the container, MAC its address.
	ContainerIf string
	MAC         string
	// Bridge and HostVeth are the host-side interfaces.
	Bridge   string
	HostVeth string
}

func (c FlannelConf) withDefaults() FlannelConf {
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	return c
}

func (c FlannelConf) validate() error {
	if !filepath.IsAbs(c.SubnetFile) {
		return fmt.Errorf("cni: flannel conf: subnet file %q is not an absolute path", c.SubnetFile)
	}
	if e := utils.ValidateNetworkName(c.Network); e != nil {
		return fmt.Errorf("cni: flannel conf: network name %q: %w", c.Network, e)
	}
	if e := utils.ValidateInterfaceName(c.Bridge); e != nil {
		return fmt.Errorf("cni: flannel conf: bridge name %q: %w", c.Bridge, e)
	}
	return nil
}

// flannelJSON renders the meta-plugin's config for a host whose CNI state
// lives under dataDir.
//
// The v0.9.1 plugin builds its delegate's ipam from the config's own "ipam"
// map: it keeps every key there and only sets "type" (when missing),
// "ranges" (FLANNEL_SUBNET) and "routes" (FLANNEL_NETWORK). So host-local's
// "dataDir" passes straight through that map; no wrapper plugin is needed.
// The delegate map may not carry "ipam" (the plugin refuses it).
func (c FlannelConf) flannelJSON(dataDir string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": confVersion,
		"name":       c.Network,
		"type":       "flannel",
		"subnetFile": c.SubnetFile,
		"dataDir":    filepath.Join(dataDir, "flannel"),
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": filepath.Join(dataDir, "networks"),
		},
		// As kube-flannel's config: containers default-route via the
		// bridge, and may reach themselves through a service address.
		"delegate": map[string]any{
			"bridge":           c.Bridge,
			"isDefaultGateway": true,
			"hairpinMode":      true,
		},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("cni: render flannel conf: %w", err)
	}
	return b, nil
}

func loopbackJSON() []byte {
	return []byte(`{"cniVersion":"` + confVersion + `","name":"cni-loopback","type":"loopback"}`)
}

// CheckPlugins reports the plugins missing from PluginDir (or not
// executable) in one error that says how to get them.
func (r *Runner) CheckPlugins() error {
	var missing []string
	for _, p := range PluginNames() {
		fi, err := os.Stat(filepath.Join(r.PluginDir, p))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("cni: plugins %v missing from %s (run make cni-plugins)", missing, r.PluginDir)
	}
	return nil
}

// attachment is one validated call: where things are and what to say.
type attachment struct {
	cfg      *libcni.CNIConfig
	flannel  *libcni.NetworkConfig
	loopback *libcni.NetworkConfig
	rt, loRt *libcni.RuntimeConf
	conf     FlannelConf
	who      string // names the container and host in errors
}

// prepare validates a call and builds libcni's inputs.
func (r *Runner) prepare(hostNetns, containerNetns, containerID, ifName string, conf FlannelConf) (*attachment, error) {
	conf = conf.withDefaults()
	if err := conf.validate(); err != nil {
		return nil, err
	}
	if e := utils.ValidateContainerID(containerID); e != nil {
		return nil, fmt.Errorf("cni: container ID %q: %w", containerID, e)
	}
	if e := utils.ValidateInterfaceName(ifName); e != nil {
		return nil, fmt.Errorf("cni: interface name %q: %w", ifName, e)
	}
	for _, ns := range [][2]string{{"host netns", hostNetns}, {"container netns", containerNetns}} {
		if !filepath.IsAbs(ns[1]) {
			return nil, fmt.Errorf("cni: %s %q is not an absolute path", ns[0], ns[1])
		}
	}
	if r.PluginDir == "" || r.DataDir == "" {
		return nil, errors.New("cni: runner needs both PluginDir and DataDir")
	}
	// Plugins resolve delegates through CNI_PATH from their own working
	// directory: hand them absolute paths.
	pluginDir, err := filepath.Abs(r.PluginDir)
	if err != nil {
		return nil, fmt.Errorf("cni: plugin dir: %w", err)
	}
	dataDir, err := filepath.Abs(r.DataDir)
	if err != nil {
		return nil, fmt.Errorf("cni: data dir: %w", err)
	}
	fb, err := conf.flannelJSON(dataDir)
	if err != nil {
		return nil, err
	}
	flannel, err := libcni.ConfFromBytes(fb)
	if err != nil {
		return nil, fmt.Errorf("cni: flannel conf: %w", err)
	}
	loopback, err := libcni.ConfFromBytes(loopbackJSON())
	if err != nil {
		return nil, fmt.Errorf("cni: loopback conf: %w", err)
	}
	exec := &hostExec{
		Exec:    &invoke.DefaultExec{RawExec: &invoke.RawExec{}, PluginDecoder: version.PluginDecoder{}},
		hostNet: hostNetns,
	}
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: containerNetns, IfName: ifName}
	loRt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: containerNetns, IfName: "lo"}
	return &attachment{
		cfg:      libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(dataDir, "cache"), exec),
		flannel:  flannel,
		loopback: loopback,
		rt:       rt,
		loRt:     loRt,
		conf:     conf,
		who:      fmt.Sprintf("container %s (%s) on host netns %s", containerID, containerNetns, hostNetns),
	}, nil
}

// Add attaches the container at containerNetns (a namespace path) to the host
// at hostNetns (a namespace path) as interface ifName: the loopback plugin
// brings up lo, then the flannel meta-plugin adds ifName on the host's bridge
// with an address from the host's subnet. On failure it runs DEL for what it
// added, so a failed Add leaves no reservation behind.
func (r *Runner) Add(ctx context.Context, hostNetns, containerNetns, containerID, ifName string, conf FlannelConf) (*Result, error) {
	a, err := r.prepare(hostNetns, containerNetns, containerID, ifName, conf)
	if err != nil {
		return nil, err
	}
	if err := r.CheckPlugins(); err != nil {
		return nil, err
	}
	if _, err := a.cfg.AddNetwork(ctx, a.loopback, a.loRt); err != nil {
		return nil, a.undo(ctx, fmt.Errorf("cni add loopback for %s: %w", a.who, err))
	}
	raw, err := a.cfg.AddNetwork(ctx, a.flannel, a.rt)
	if err != nil {
		return nil, a.undo(ctx, fmt.Errorf("cni add %s for %s: %w", a.conf.Network, a.who, err))
	}
	res, err := parseResult(raw, a.conf.Bridge)
	if err != nil {
		return nil, a.undo(ctx, fmt.Errorf("cni add %s for %s: %w", a.conf.Network, a.who, err))
	}
	return res, nil
}

// undo runs DEL after a failed ADD (as the CNI spec asks of a runtime) and
// returns the ADD's error, with the DEL's if that failed too.
func (a *attachment) undo(ctx context.Context, addErr error) error {
	if err := a.del(ctx); err != nil {
		return errors.Join(addErr, fmt.Errorf("cleanup after failed add: %w", err))
	}
	return addErr
}

// Del detaches a container that Add attached, with the same arguments. It
// releases the container's address even when its namespace is already gone,
// and deleting twice is not an error (the CNI spec's DEL semantics).
func (r *Runner) Del(ctx context.Context, hostNetns, containerNetns, containerID, ifName string, conf FlannelConf) error {
	a, err := r.prepare(hostNetns, containerNetns, containerID, ifName, conf)
	if err != nil {
		return err
	}
	if err := r.CheckPlugins(); err != nil {
		return err
	}
	return a.del(ctx)
}

func (a *attachment) del(ctx context.Context) error {
	var errs []error
	if err := a.cfg.DelNetwork(ctx, a.flannel, a.rt); err != nil {
		errs = append(errs, fmt.Errorf("cni del %s for %s: %w", a.conf.Network, a.who, err))
	}
	if err := a.cfg.DelNetwork(ctx, a.loopback, a.loRt); err != nil {
		errs = append(errs, fmt.Errorf("cni del loopback for %s: %w", a.who, err))
	}
	return errors.Join(errs...)
}

// parseResult picks the container's address and the interface names out of
// the bridge plugin's result (relayed by the flannel plugin): interfaces with
// a sandbox are in the container; of the others, one is the bridge and the
// other the host end of the veth.
func parseResult(raw types.Result, bridge string) (*Result, error) {
	cur, err := current.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("convert result: %w", err)
	}
	res := &Result{}
	for _, itf := range cur.Interfaces {
		switch {
		case itf.Sandbox != "":
			res.ContainerIf, res.MAC = itf.Name, itf.Mac
		case itf.Name == bridge:
			res.Bridge = itf.Name
		default:
			res.HostVeth = itf.Name
		}
	}
	for _, ip := range cur.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(cur.Interfaces) ||
			cur.Interfaces[*ip.Interface].Sandbox == "" {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			return nil, fmt.Errorf("result address %v is no IP address", ip.Address.IP)
		}
		ones, _ := ip.Address.Mask.Size()
		res.Address = netip.PrefixFrom(addr.Unmap(), ones)
		if gw, ok := netip.AddrFromSlice(ip.Gateway); ok {
			res.Gateway = gw.Unmap()
		}
		break
	}
	if !res.Address.IsValid() || res.ContainerIf == "" {
		b, _ := json.Marshal(cur)
		return nil, fmt.Errorf("result has no container interface with an address: %s", b)
	}
	return res, nil
}

// hostExec runs each plugin as a process that starts inside the host's
// network namespace. libcni execs plugins itself, so the namespace switch
// goes around its exec: nsutil.Do locks a fresh goroutine to its OS thread,
// moves that thread into the host netns, runs the library's own exec (fork
// and wait happen on that thread, and a child inherits the network
// namespace of the thread that forked it), then moves the thread back, and
// lets it die if that fails. No other goroutine ever runs in the host netns.
// The flannel plugin starts bridge and host-local itself, so they inherit the
// host netns from it; the bridge plugin enters the container's netns (from
// CNI_NETNS) on its own.
type hostExec struct {
	invoke.Exec
	hostNet string
}

func (e *hostExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var out []byte
	err := nsutil.Do(e.hostNet, func() error {
		var err error
		out, err = e.Exec.ExecPlugin(ctx, pluginPath, stdin, environ)
		return err
	})
	return out, err
}
