package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/internal/nsutil"
	"github.com/overlaylab/overlaylab/overlay/subnet"
	"github.com/overlaylab/overlaylab/overlay/subnetenv"
	"github.com/overlaylab/overlaylab/topo"
)

// HostOptions describe a host added to a running lab.
type HostOptions struct {
	Containers int
	AgentArgs  []string // extra flags for overlaylab agent
	// Command, when set, runs instead of `overlaylab agent` (argv; the
	// placeholders {etcd}, {subnet-file} and {iface} are filled in). It lets
	// another flannel implementation, such as upstream flanneld, join.
	Command []string
}

// AddHost adds host h<N+1> to a running lab: its namespace on the underlay,
// its agent, and its containers once the agent has written subnet.env.
func AddHost(ctx context.Context, st *State, bin string, o HostOptions) (*HostState, error) {
	l, err := st.layout()
	if err != nil {
		return nil, err
	}
	i := 1
	for _, h := range st.Hosts {
		if n, err := h.Index(); err == nil && n >= i {
			i = n + 1
		}
	}
	if i >= etcdHostOffset {
		return nil, fmt.Errorf("lab %q: no underlay address left for host h%d", st.Name, i)
	}
	if err := l.names.Check(i, o.Containers); err != nil {
		return nil, err
	}
	h := l.newHost(st.StateDir, i)
	ok := false
	defer func() {
		if !ok {
			_ = stop(h.AgentPID, st.Name, syscall.SIGKILL, time.Second)
			_ = deleteHostNamespaces(&h)
		}
	}()
	if err := l.buildHost(i, &h); err != nil {
		return nil, err
	}
	if o.Command != nil {
		if err := startForeignAgent(st, &h, o.Command); err != nil {
			return nil, err
		}
	} else if err := StartAgent(st, &h, bin, o.AgentArgs); err != nil {
		return nil, err
	}
	st.Hosts = append(st.Hosts, h)
	hp := &st.Hosts[len(st.Hosts)-1]
	if err := wireUnderlay(st, []string{h.Netns}); err != nil {
		st.Hosts = st.Hosts[:len(st.Hosts)-1]
		return nil, err
	}
	if err := st.Save(); err != nil {
		return nil, err
	}
	if err := WaitAgents(ctx, st, 30*time.Second, []string{hp.Name}); err != nil {
		st.Hosts = st.Hosts[:len(st.Hosts)-1]
		_ = st.Save()
		return nil, err
	}
	if err := l.buildContainers(i, o.Containers, hp); err != nil {
		st.Hosts = st.Hosts[:len(st.Hosts)-1]
		_ = st.Save()
		return nil, err
	}
	ok = true
	return hp, st.Save()
}

// startForeignAgent runs another agent implementation on a host.
func startForeignAgent(st *State, h *HostState, argv []string) error {
	r := strings.NewReplacer("{etcd}", strings.Join(st.Etcd.Endpoints, ","), "{subnet-file}", h.SubnetFile, "{iface}", "eth0")
	args := make([]string, 0, len(argv)-1)
	for _, a := range argv[1:] {
		args = append(args, r.Replace(a))
	}
	if err := os.MkdirAll(filepath.Dir(h.SubnetFile), 0o755); err != nil {
		return err
	}
	pid, err := spawn(argv[0], h.Netns, st.Name, "agent-"+h.Name, args, h.AgentLog)
	if err != nil {
		return err
	}
	h.AgentPID = pid
	h.Foreign = argv[0]
	return nil
}

// RemoveHost stops a host's agent, optionally deletes its lease (a host
// leaving for good), and removes its namespaces.
func RemoveHost(ctx context.Context, st *State, host string, deleteLease bool) error {
	idx := -1
	for i := range st.Hosts {
		if st.Hosts[i].Name == host {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("no host %q in lab %q", host, st.Name)
	}
	h := st.Hosts[idx]
	if err := stop(h.AgentPID, st.Name, syscall.SIGTERM, 3*time.Second); err != nil {
		return err
	}
	if deleteLease && h.Subnet != "" {
		if err := DeleteLease(ctx, st, h.Subnet); err != nil {
			return err
		}
	}
	if err := deleteHostNamespaces(&h); err != nil {
		return err
	}
	st.Hosts = append(st.Hosts[:idx], st.Hosts[idx+1:]...)
	gone := []netip.Addr{netip.MustParseAddr(h.UnderlayIP)}
	for _, o := range st.Hosts {
		if err := topo.DelNeighbors(o.Netns, "eth0", gone); err != nil {
			return err
		}
	}
	for _, m := range st.Etcd.Members {
		if err := topo.DelNeighbors(m.Netns, "eth0", gone); err != nil {
			return err
		}
	}
	return st.Save()
}

// DeleteLease removes a subnet's lease key from the lab's etcd.
func DeleteLease(ctx context.Context, st *State, sub string) error {
	p, err := netip.ParsePrefix(sub)
	if err != nil {
		return fmt.Errorf("subnet %q: %w", sub, err)
	}
	return st.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		if _, err := cli.Delete(ctx, subnet.DefaultPrefix+"/subnets/"+subnet.SubnetKey(p)); err != nil {
			return fmt.Errorf("delete lease %s: %w", sub, err)
		}
		return nil
	})
}

// subnetFileReady is the readiness test for an agent without /readyz.
func subnetFileReady(h *HostState) bool {
	_, err := subnetenv.Read(h.SubnetFile)
	return err == nil
}

// deleteHostNamespaces removes a host's namespace and its containers'
// ("ol-lab-h1" and "ol-lab-h1-…", but not "ol-lab-h10").
func deleteHostNamespaces(h *HostState) error {
	_, err := topo.DeleteNamespaces(h.Netns + "-")
	return errors.Join(err, nsutil.Delete(h.Netns))
}
