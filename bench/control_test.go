package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRunControlSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd and 50 agents")
	}
	var progress bytes.Buffer
	rep, err := RunControl(t.Context(), ControlOptions{Agents: 50, AgentsPerClient: 10, Network: "10.0.0.0/16", SubnetLen: 24, Timeout: time.Minute, Command: "test", Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("%+v", *rep)
	if !rep.OK || rep.DuplicateSubnets != 0 || rep.OverlappingKeys != 0 || rep.AcquireFailed != 0 {
		t.Errorf("verification failed: %+v", *rep)
	}
	if rep.Keys != 50 || rep.DistinctSubnets != 50 || rep.DistinctPublicIPs != 50 || rep.Converged != 50 || rep.Clients != 5 {
		t.Errorf("counts: keys %d, subnets %d, publicIPs %d, converged %d, clients %d; want 50 ×4 and 5 clients",
			rep.Keys, rep.DistinctSubnets, rep.DistinctPublicIPs, rep.Converged, rep.Clients)
	}
	if !(rep.AcquireP50Ms > 0 && rep.AcquireP50Ms <= rep.AcquireP99Ms && rep.AcquireP99Ms <= rep.AcquireMaxMs) {
		t.Errorf("acquire percentiles not ordered: p50 %v, p99 %v, max %v", rep.AcquireP50Ms, rep.AcquireP99Ms, rep.AcquireMaxMs)
	}
	// Nobody can have seen every lease before the slowest acquire ended,
	// and on loopback it should not take anywhere near the timeout.
	if rep.AllSeenMs < rep.AcquireMaxMs || rep.AllSeenMs > 30000 || rep.SeenP50Ms > rep.AllSeenMs {
		t.Errorf("all seen after %v ms (median %v ms), slowest acquire %v ms", rep.AllSeenMs, rep.SeenP50Ms, rep.AcquireMaxMs)
	}
	if !strings.Contains(rep.Etcd, "127.0.0.1") {
		t.Errorf("etcd: %q", rep.Etcd)
	}
	md := ControlMarkdown(rep)
	if !strings.Contains(md, "| lease keys in etcd | 50 |") || !strings.Contains(md, "| verified (N keys, N subnets, each PublicIP once, all converged) | yes |") {
		t.Errorf("markdown:\n%s", md)
	}
}

func TestRunControlTooManyAgents(t *testing.T) {
	_, err := RunControl(t.Context(), ControlOptions{Agents: 300, Network: "10.0.0.0/16", SubnetLen: 24})
	if err == nil || !strings.Contains(err.Error(), "leasable subnets") {
		t.Errorf("want a refusal naming the leasable subnets, got %v", err)
	}
}
