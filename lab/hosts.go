package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// newHost names and addresses host i of the lab whose state is st.
func (l *Lab) newHost(st *State, a plan.Addressing, i int, agent AgentState) HostState {
	names := plan.Names{Lab: l.name}
	h := HostState{
		Name: names.Host(i), Index: i, Netns: names.HostNS(i),
		UnderlayIP: a.Host(i).String(),
		SubnetFile: filepath.Join(l.dir, names.Host(i), "subnet.env"),
		AgentLog:   filepath.Join(l.dir, "logs", names.Host(i)+"-agent.log"),
		Agent:      agent,
		Containers: []ContainerState{},
	}
	if st.multi() {
		h.SubnetDir = filepath.Join(l.dir, names.Host(i), "subnets")
		h.SubnetFile = filepath.Join(h.SubnetDir, st.Networks[0].Name+".env")
	}
	return h
}

// buildHost makes a host's namespace and plugs it into the underlay ul.
func (l *Lab) buildHost(ul UnderlayState, a plan.Addressing, h *HostState) error {
	if err := topo.CreateNS(h.Netns); err != nil {
		return err
	}
	ip := netip.MustParseAddr(h.UnderlayIP)
	err := topo.Attach(topo.Attachment{
		NodeNS: h.Netns, NodeIf: plan.HostIf, NodeMAC: plan.MAC(plan.MACHost, h.Index, 0),
		Addr: a.Prefix(ip), MTU: ul.MTU,
		BridgeNS: ul.Netns, Bridge: plan.UnderlayBridge, Port: plan.HostPort(h.Index), PortMAC: plan.MAC(plan.MACPort, h.Index, 0),
	})
	if err != nil {
		return err
	}
	// A host forwards between its containers' bridge and the overlay, as a
	// container runtime would set it up.
	return topo.Sysctl(h.Netns, "net/ipv4/ip_forward", "1")
}

// HostOptions describe a host added to a running lab.
type HostOptions struct {
	Containers int
	// Agent replaces the lab's default agent on the new host (a zero value:
	// the lab's, what `up --agent` gave every host, else overlaylab's own).
	// AgentArgs are extra flags for it (nil: the lab's, from --agent-arg).
	Agent     plan.Agent
	AgentArgs []string
}

// AddHost adds the next host to the running lab: its namespace on the
// underlay, its agent, and its containers once the agent is ready. Names
// and addresses are never reused: the new host is h<NextHost>.
func (l *Lab) AddHost(ctx context.Context, o HostOptions) (*HostState, error) {
	if o.Containers < 0 || o.Containers > plan.MaxContainers {
		return nil, fmt.Errorf("--containers %d: must be 0..%d", o.Containers, plan.MaxContainers)
	}
	st := l.Snapshot()
	a, err := st.addressing()
	if err != nil {
		return nil, err
	}
	i := st.NextHost
	if i > a.HostCapacity() {
		return nil, fmt.Errorf("lab %q: no underlay address left for host h%d (underlay %s holds %d hosts, and names are never reused)", l.name, i, a.Underlay, a.HostCapacity())
	}
	for _, n := range st.Networks {
		cfg, err := n.config()
		if err != nil {
			return nil, err
		}
		if per := plan.ContainersPerSubnet(cfg.SubnetLen); o.Containers > per {
			return nil, fmt.Errorf("--containers %d: a /%d subnet holds only %d containers besides the bridge", o.Containers, cfg.SubnetLen, per)
		}
	}
	if o.Agent.Path == "" && o.Agent.Args == nil {
		o.Agent = st.Defaults.Agent
	}
	if o.AgentArgs == nil {
		o.AgentArgs = st.Defaults.AgentArgs
	}
	agent, err := probeAgent(ctx, o.Agent, l.bin)
	if err != nil {
		return nil, err
	}
	if flag := plan.OurAgentOnlyFlag(o.AgentArgs); flag != "" && !agent.Ours {
		return nil, fmt.Errorf("agent %s is not overlaylab's: it does not take %s", agent.Path, flag)
	}
	h := l.newHost(st, a, i, agent)
	// The host is in the state before anything exists, so a crash from
	// here on leaves nothing `down` does not know of.
	if err := l.update(func(st *State) error { st.Hosts = append(st.Hosts, h); st.NextHost = i + 1; return nil }); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = l.RemoveHost(context.WithoutCancel(ctx), h.Name, true)
		}
	}()
	if err := l.buildHost(st.Underlay, a, &h); err != nil {
		return nil, err
	}
	if err := l.wireUnderlay([]string{h.Netns}); err != nil {
		return nil, err
	}
	if err := l.startAgent(h.Name, o.AgentArgs); err != nil {
		return nil, err
	}
	if err := l.waitAgents(ctx, []string{h.Name}, agentReadyTimeout(1)); err != nil {
		return nil, err
	}
	if err := l.attachContainers(ctx, h.Name, o.Containers); err != nil {
		return nil, err
	}
	ok = true
	var out *HostState
	err = l.view(func(st *State) error {
		hp, err := st.host(h.Name)
		c := *hp
		out = &c
		return err
	})
	return out, err
}

// RemoveHost stops a host's agent and every process in its namespaces,
// optionally deletes its lease (a host leaving for good), detaches its
// containers and removes its namespaces.
func (l *Lab) RemoveHost(ctx context.Context, host string, deleteLease bool) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if err := stop(h.AgentPID, l.name, syscall.SIGTERM, 3*time.Second); err != nil {
		return err
	}
	var errs []error
	if deleteLease {
		for _, n := range st.Networks {
			if sub := h.subnetOf(n.Name); sub != "" {
				errs = append(errs, l.deleteLease(ctx, n.Name, sub))
			}
		}
	}
	errs = append(errs, l.detachContainers(ctx, st, h))
	nss := hostNamespaces(st, h)
	if _, err := stopInNamespaces(nss, 3*time.Second); err != nil {
		errs = append(errs, err)
	}
	if _, err := topo.DeleteNamespaces(nss); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	gone := []netip.Addr{netip.MustParseAddr(h.UnderlayIP)}
	for _, o := range st.Hosts {
		if o.Name != host {
			if err := topo.DelNeighbors(o.Netns, plan.HostIf, gone); err != nil {
				return err
			}
		}
	}
	for _, m := range st.Etcd.Members {
		if err := topo.DelNeighbors(m.Netns, plan.HostIf, gone); err != nil {
			return err
		}
	}
	return l.update(func(st *State) error {
		st.Hosts = slices.DeleteFunc(st.Hosts, func(x HostState) bool { return x.Name == host })
		return nil
	})
}

// hostNamespaces lists a host's namespace and its containers'.
func hostNamespaces(st *State, h *HostState) []string {
	out := []string{h.Netns}
	for _, c := range h.Containers {
		out = append(out, c.Netns)
	}
	// Containers being attached when a crash hit are not in the state yet:
	// take every namespace of the lab that is this host's.
	for _, ns := range labNamespaces(st.Name) {
		if strings.HasPrefix(ns, h.Netns+"-") && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// underlayNeighbors lists every node on the underlay with its MAC.
func (s *State) underlayNeighbors() []topo.Neighbor {
	var ns []topo.Neighbor
	for _, h := range s.Hosts {
		ns = append(ns, topo.Neighbor{IP: netip.MustParseAddr(h.UnderlayIP), MAC: plan.MAC(plan.MACHost, h.Index, 0)})
	}
	for k, m := range s.Etcd.Members {
		ns = append(ns, topo.Neighbor{IP: netip.MustParseAddr(m.IP), MAC: plan.MAC(plan.MACEtcd, 0, k+1)})
	}
	return ns
}

// wireUnderlay writes static ARP entries for the underlay (see
// topo.SetNeighbors for why): in every node's namespace an entry for every
// other node, or, with only set, just entries for those nodes everywhere and
// all entries in those nodes.
func (l *Lab) wireUnderlay(only []string) error {
	st := l.Snapshot()
	all := st.underlayNeighbors()
	nodes := map[string]netip.Addr{} // netns -> its own address
	for _, h := range st.Hosts {
		nodes[h.Netns] = netip.MustParseAddr(h.UnderlayIP)
	}
	for _, m := range st.Etcd.Members {
		nodes[m.Netns] = netip.MustParseAddr(m.IP)
	}
	var onlyIPs []netip.Addr
	for _, ns := range only {
		onlyIPs = append(onlyIPs, nodes[ns])
	}
	g := new(errgroup.Group)
	g.SetLimit(buildParallelism)
	for ns, self := range nodes {
		g.Go(func() error {
			var want []topo.Neighbor
			for _, n := range all {
				if n.IP == self {
					continue
				}
				if only == nil || slices.Contains(only, ns) || slices.Contains(onlyIPs, n.IP) {
					want = append(want, n)
				}
			}
			return topo.SetNeighbors(ns, plan.HostIf, want)
		})
	}
	return g.Wait()
}
