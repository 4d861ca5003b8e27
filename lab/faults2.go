package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/topo"
)

// SetOffloads switches offloads of a device in a host's namespace (eth0,
// flannel.1, flannel0, a bridge) by their ethtool names (tx-checksum, tso,
// gro) and returns the kernel features changed.
func (l *Lab) SetOffloads(host, dev string, switches map[string]bool) ([]string, error) {
	want := map[topo.Offload]bool{}
	for name, on := range switches {
		want[topo.Offload(name)] = on
	}
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return nil, err
	}
	if err := topo.CheckIfName(dev); err != nil {
		return nil, err
	}
	return topo.SetOffloads(h.Netns, dev, want)
}

// EtcdCompact compacts the lab's etcd at its current revision, so a watcher
// behind it must re-list (the agents' resync path).
func (l *Lab) EtcdCompact(ctx context.Context) (int64, error) {
	var rev int64
	err := l.withEtcd(ctx, func(ctx context.Context, cli *clientv3.Client) error {
		resp, err := cli.Get(ctx, "compact-probe")
		if err != nil {
			return fmt.Errorf("read the current revision: %w", err)
		}
		rev = resp.Header.Revision
		if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			return fmt.Errorf("compact at revision %d: %w", rev, err)
		}
		return nil
	})
	return rev, err
}

// EtcdWipe stops every etcd member, deletes its data and starts it empty;
// with keepConfig the lab writes the network configs again (the leases are
// gone either way).
func (l *Lab) EtcdWipe(ctx context.Context, keepConfig bool) error {
	st := l.Snapshot()
	if len(st.Etcd.External) > 0 {
		return errors.New("etcd-wipe needs the lab's embedded etcd (this lab proxies an external one)")
	}
	for k, m := range st.Etcd.Members {
		if alive(m.PID, l.name) {
			if err := stop(m.PID, l.name, syscall.SIGKILL, 5*time.Second); err != nil {
				return fmt.Errorf("stop etcd member %d: %w", k+1, err)
			}
		}
	}
	for _, m := range st.Etcd.Members {
		if m.DataDir == "" {
			return fmt.Errorf("etcd member %s: no data dir recorded", m.Name)
		}
		if err := os.RemoveAll(m.DataDir); err != nil {
			return fmt.Errorf("wipe %s: %w", m.DataDir, err)
		}
	}
	// Members start together: a fresh cluster needs its quorum to form.
	for k := range st.Etcd.Members {
		if err := l.spawnMember(k + 1); err != nil {
			return err
		}
	}
	cli, err := l.Snapshot().EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitEtcd(wctx, cli); err != nil {
		return fmt.Errorf("etcd after the wipe: %w", err)
	}
	if keepConfig {
		return l.writeConfigs(ctx)
	}
	return nil
}

// UpgradeAgent stops a host's agent (TERM) and starts the same host's
// agent from another binary, with the flags it had, waiting until ready.
func (l *Lab) UpgradeAgent(ctx context.Context, host, binary string, noWait bool) error {
	st := l.Snapshot()
	h, err := st.host(host)
	if err != nil {
		return err
	}
	if alive(h.AgentPID, l.name) {
		if err := stop(h.AgentPID, l.name, syscall.SIGTERM, 5*time.Second); err != nil {
			return err
		}
	}
	return l.StartAgent(ctx, host, StartAgentOptions{NoWait: noWait, Agent: &plan.Agent{Path: binary}})
}
