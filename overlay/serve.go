package overlay

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/overlaylab/overlaylab/overlay/backend"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/overlay/subnet"
)

// running is what the running phase works with, set up by runNetwork.
type running struct {
	mgr    *subnet.Manager
	cfg    *config.Config
	be     backend.Backend
	mtu    int
	lease  *subnet.Lease
	rev    int64          // revision of the lease listing the peers were programmed from
	leases []subnet.Lease // that listing
	peers  *peerState
	env    *envFile
}

// errDatapathStopped ends the agent when a datapath returns on its own.
var errDatapathStopped = errors.New("datapath: stopped on its own")

// serve runs the datapath, the lease watch, the lease keeper and the config
// watch, each on a goroutine of one errgroup, with the event loop that owns
// every backend call. It returns when ctx ends or any of them fails, and
// only after all of them have returned.
func (n *network) serve(ctx context.Context, r running) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	updates := make(chan peerUpdate, 16)
	leases := make(chan subnet.Lease, 1)
	send := func(ch chan<- peerUpdate, u peerUpdate) {
		select {
		case ch <- u:
		case <-ctx.Done():
		}
	}
	g.Go(func() error {
		// A datapath that returns ends the agent, with or without an error.
		defer cancel()
		if err := r.be.Run(ctx); err != nil {
			return fmt.Errorf("datapath: %w", err)
		}
		if ctx.Err() == nil {
			return errDatapathStopped
		}
		return nil
	})
	g.Go(func() error {
		return ended(ctx, r.mgr.WatchLeasesFrom(ctx, r.leases, r.rev,
			func(evs []subnet.Event) { send(updates, peerUpdate{events: evs}) },
			func(current []subnet.Lease) { send(updates, peerUpdate{resync: true, current: current}) }))
	})
	g.Go(func() error {
		return ended(ctx, r.mgr.KeepLease(ctx, r.cfg, r.lease, func(l subnet.Lease) {
			select {
			case leases <- l:
			case <-ctx.Done():
			}
		}))
	})
	g.Go(func() error { return ended(ctx, r.mgr.WatchConfig(ctx, n.reportConfig(r.cfg))) })
	g.Go(func() error { return n.loop(ctx, r, updates, leases) })
	return g.Wait()
}

// ended turns the ctx.Err() a loop returns when its context ends into nil:
// stopping is not a failure, and the errgroup keeps the error that caused it.
func ended(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// loop is the one goroutine that calls the backend while it runs.
func (n *network) loop(ctx context.Context, r running, updates <-chan peerUpdate, leases <-chan subnet.Lease) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			if u.resync {
				n.resync(ctx, r.be, r.peers, u.current)
			} else {
				n.apply(ctx, r.be, r.peers, u.events)
			}
		case l := <-leases:
			if err := n.leaseChanged(ctx, r, l); err != nil {
				return err
			}
		case <-r.env.retryC():
			r.env.retry()
		}
	}
}

// leaseChanged follows a re-acquired lease: the backend moves to a new
// subnet, and subnet.env is rewritten if its content changes. A failed
// write is retried by the loop and never stops the datapath.
func (n *network) leaseChanged(ctx context.Context, r running, l subnet.Lease) error {
	if l.Subnet != r.peers.own {
		n.log.Warn("lease re-acquired with a different subnet", "old", r.peers.own, "new", l.Subnet)
		r.peers.own = l.Subnet
		if err := r.be.Configure(ctx, l); err != nil {
			return err
		}
	} else {
		n.log.Info("lease re-acquired", "subnet", l.Subnet)
	}
	_ = r.env.set(n.subnetEnv(r.cfg, l, r.mtu)) // logged and counted by set
	return nil
}

// reportConfig logs config changes in etcd; they take effect on restart.
func (n *network) reportConfig(cur *config.Config) func(*config.Config, error) {
	return func(c *config.Config, err error) {
		switch {
		case err != nil:
			n.log.Error("network config in etcd is now invalid; keeping the running network", "err", err)
		case c.Network != cur.Network || c.SubnetLen != cur.SubnetLen || c.Backend.Type != cur.Backend.Type || c.Backend.Port != cur.Backend.Port || c.Backend.VNI != cur.Backend.VNI:
			n.log.Warn("network config in etcd changed; restart the agent to apply it",
				"network", c.Network, "subnet_len", c.SubnetLen, "backend", c.Backend.Type)
		default:
			n.log.Info("network config in etcd rewritten without a change that matters to this agent")
		}
	}
}
