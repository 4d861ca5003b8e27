package lab

import (
	"context"
	"errors"
	"net/netip"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
	"github.com/overlaylab/overlaylab/topo"
)

// Containers are namespaces attached to their host by one of two runtimes:
// the lab's own bridge configured from subnet.env (what `docker --bip
// --mtu` does), or real CNI plugins (the flannel meta-plugin delegating to
// bridge and host-local, the Kubernetes node path).

// attachContainers creates n containers per network on a host whose agent
// is ready (its subnet.env exists), recording each in the state.
func (l *Lab) attachContainers(ctx context.Context, host string, n int) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	_, err = l.makeContainers(ctx, st, h, n, func(c ContainerState) error {
		return l.update(func(st *State) error {
			h, err := st.host(host)
			if err == nil {
				h.Containers = append(h.Containers, c)
			}
			return err
		})
	})
	return err
}

// makeContainers creates n containers per network on h (of st, a snapshot
// taken once its agent was ready), calling made after each, and returns
// them.
func (l *Lab) makeContainers(ctx context.Context, st *State, h *HostState, n int, made func(ContainerState) error) ([]ContainerState, error) {
	var out []ContainerState
	for k, nw := range st.Networks {
		env, err := subnetenv.Read(h.subnetFileOf(nw.Name))
		if err != nil {
			return out, err
		}
		for j := 1; j <= n; j++ {
			var c ContainerState
			var err error
			switch st.Runtime {
			case plan.RuntimeCNI:
				c, err = l.attachCNI(ctx, st, h, nw.Name, j)
			default:
				c, err = l.attachBridge(h, k, nw.Name, env, j)
			}
			if err != nil {
				return out, err
			}
			out = append(out, c)
			if made != nil {
				if err := made(c); err != nil {
					return out, err
				}
			}
		}
	}
	return out, nil
}

// bridgeName is the bridge runtime's bridge for a network on a host.
func bridgeName(network string) string {
	if network == "" {
		return plan.ContainerBridge
	}
	return "br-" + network
}

// attachBridge attaches container j of a network with the next address of
// the host's subnet, creating the network's bridge (FLANNEL_SUBNET's first
// address, FLANNEL_MTU) with the first container.
func (l *Lab) attachBridge(h *HostState, netIdx int, network string, env subnetenv.Env, j int) (ContainerState, error) {
	names := plan.Names{Lab: l.name}
	gw := env.Subnet // e.g. 10.10.3.1/24
	br := bridgeName(network)
	brMAC := plan.MAC(plan.MACBridge|byte(netIdx<<4), h.Index, 0)
	if j == 1 {
		var err error
		if env.RouteTable != 0 {
			// A tenant network: its subnet may be another tenant's too,
			// so the bridge routes in the tenant's table and zone.
			err = topo.CreateTenantBridge(h.Netns, topo.TenantBridge{Name: br, Addr: gw, MTU: env.MTU, MAC: brMAC,
				Table: env.RouteTable, Zone: env.CTZone, NftName: "overlaylab-bridges"})
		} else {
			err = topo.CreateBridge(h.Netns, br, gw, env.MTU, brMAC)
		}
		if err != nil {
			return ContainerState{}, err
		}
	}
	ip := gw.Addr()
	for range j {
		ip = ip.Next()
	}
	c := ContainerState{Name: names.Container(network, j), Netns: names.ContainerNS(h.Index, network, j), IP: ip.String(),
		Network: network, Prefix: netip.PrefixFrom(ip, gw.Bits()).String(), Gateway: gw.Addr().String()}
	if err := topo.CreateNS(c.Netns); err != nil {
		return c, err
	}
	mac := plan.MAC(plan.MACContainer|byte(netIdx<<4), h.Index, j)
	err := topo.Attach(topo.Attachment{
		NodeNS: c.Netns, NodeIf: plan.HostIf, NodeMAC: mac,
		Addr: netip.PrefixFrom(ip, gw.Bits()), Gateway: gw.Addr(), MTU: env.MTU,
		BridgeNS: h.Netns, Bridge: br, Port: plan.ContainerPort(network, j),
	})
	if err != nil {
		return c, err
	}
	// Static ARP both ways (see topo.SetNeighbors for why).
	if err := topo.SetNeighbors(c.Netns, plan.HostIf, []topo.Neighbor{{IP: gw.Addr(), MAC: brMAC}}); err != nil {
		return c, err
	}
	if err := topo.SetNeighbors(h.Netns, br, []topo.Neighbor{{IP: ip, MAC: mac}}); err != nil {
		return c, err
	}
	return c, nil
}

// detachContainers undoes what the runtime did for a host's containers
// (CNI DEL); the namespaces themselves go with the host. st is the caller's
// snapshot: teardown calls it per host, and a snapshot per call would be
// quadratic in a large lab.
func (l *Lab) detachContainers(ctx context.Context, st *State, h *HostState) error {
	if st.Runtime != plan.RuntimeCNI {
		return nil
	}
	var errs []error
	for _, c := range h.Containers {
		errs = append(errs, l.detachCNI(ctx, st, h, c))
	}
	return errors.Join(errs...)
}
