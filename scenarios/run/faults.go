package run

import (
	"context"
	"fmt"
	"strings"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
)

// doMore plays the actions of the second vocabulary.
func (r *runner) doMore(ctx context.Context, s *scenarios.Step) error {
	l := r.lab
	switch s.Action {
	case scenarios.ActionImpair:
		im := s.Impair
		seed := im.Seed
		if seed == 0 {
			seed = r.sc.Seed // a run is a reproduction: the scenario's seed by default
		}
		return l.Impair(ctx, s.Host, lab.Impairment{Delay: im.Delay, Jitter: im.Jitter, Loss: im.Loss, Reorder: im.Reorder,
			Duplicate: im.Duplicate, Corrupt: im.Corrupt, RateBps: im.RateBps, Direction: im.Direction, Match: im.Match, Seed: seed})
	case scenarios.ActionImpairClear:
		return l.ImpairClear(ctx, s.Host)
	case scenarios.ActionLinkMTU:
		return l.SetLinkMTU(ctx, s.Host, s.MTU)
	case scenarios.ActionEtcdCompact:
		rev, err := l.EtcdCompact(ctx)
		if err == nil {
			r.logf("  compacted etcd at revision %d", rev)
		}
		return err
	case scenarios.ActionEtcdWipe:
		return l.EtcdWipe(ctx, s.KeepConfig)
	case scenarios.ActionOffload:
		changed, err := l.SetOffloads(s.Host, s.Offload.Dev, offloadMap(s.Offload))
		if err == nil {
			r.logf("  %s %s: %s", s.Host, s.Offload.Dev, strings.Join(changed, ", "))
		}
		return err
	case scenarios.ActionAgentUpgrade:
		return l.UpgradeAgent(ctx, s.Host, s.Binary, false)
	}
	return fmt.Errorf("unknown action %q", s.Action)
}

func offloadMap(o *scenarios.Offload) map[string]bool {
	m := map[string]bool{}
	for _, x := range []struct {
		name string
		v    *bool
	}{{"tx-checksum", o.TxChecksum}, {"tso", o.TSO}, {"gro", o.GRO}} {
		if x.v != nil {
			m[x.name] = *x.v
		}
	}
	return m
}

func offloadDetail(o *scenarios.Offload) string {
	var parts []string
	for name, on := range offloadMap(o) {
		parts = append(parts, fmt.Sprintf("%s %s", name, map[bool]string{true: "on", false: "off"}[on]))
	}
	return o.Dev + ": " + strings.Join(parts, ", ")
}
