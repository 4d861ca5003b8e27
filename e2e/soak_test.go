package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/overlaylab/overlaylab/lab"
)

// gauge reads one agent gauge from /metrics, or -1.
func gauge(ns, name string) int64 {
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(metrics(ns))
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// Soak bounds, per long-lived agent over the whole run.
const (
	soakMaxFDGrowth        = 10
	soakMaxGoroutineGrowth = 20
	soakMaxRSSGrowth       = 20 << 20
)

// The soak runs only with `make soak` (label "soak"); SOAK_DURATION shortens
// or lengthens it (default 5m).
var _ = Describe("soak", Label("soak"), Ordered, func() {
	const name = "e2esoak"
	It("keeps every lease, and the long-lived agent's fds, goroutines and RSS flat, through agent restarts and an etcd restart", func() {
		dur := 5 * time.Minute
		if v := os.Getenv("SOAK_DURATION"); v != "" {
			d, err := time.ParseDuration(v)
			Expect(err).NotTo(HaveOccurred())
			dur = d
		}
		r := run(labArgs(name, "up", "--hosts", "3", "--containers", "2")...)
		Expect(r.code).To(Equal(0), r.String())
		DeferCleanup(func() { run(labArgs(name, "down")...) })
		st := status(name)
		subnets := map[string]string{}
		for _, h := range st.Hosts {
			subnets[h.Name] = h.Subnet
		}
		steady := st.Hosts[2] // never restarted: the leak probe
		type sample struct{ fds, gor, rss int64 }
		read := func() sample {
			return sample{gauge(steady.Netns, "overlaylab_open_fds"), gauge(steady.Netns, "overlaylab_goroutines"), gauge(steady.Netns, "overlaylab_resident_memory_bytes")}
		}
		time.Sleep(2 * time.Second)
		first := read()
		Expect(first.fds).To(BeNumerically(">", 0))

		// Continuous pings over the whole run.
		ctx, cancel := context.WithTimeout(context.Background(), dur)
		defer cancel()
		eps := st.Endpoints("")
		done := make(chan *lab.Counts, 1)
		go func() {
			c, _ := lab.Probe(ctx, eps, func(i, j int) bool { return i != j }, lab.ProbeOptions{Interval: 500 * time.Millisecond})
			done <- c
		}()

		start := time.Now()
		restarts, etcdRestarted := 0, false
		peak := first
		for time.Since(start) < dur-5*time.Second {
			time.Sleep(30 * time.Second)
			h := st.Hosts[restarts%2].Name // h1, h2 alternately
			Expect(run(labArgs(name, "kill", h, "--signal", "KILL")...).code).To(Equal(0))
			r := run(labArgs(name, "start", h)...)
			Expect(r.code).To(Equal(0), r.String())
			restarts++
			if !etcdRestarted && time.Since(start) > dur/2 {
				Expect(run(labArgs(name, "etcd", "stop")...).code).To(Equal(0))
				time.Sleep(10 * time.Second)
				r := run(labArgs(name, "etcd", "start")...)
				Expect(r.code).To(Equal(0), r.String())
				etcdRestarted = true
			}
			s := read()
			peak = sample{max(peak.fds, s.fds), max(peak.gor, s.gor), max(peak.rss, s.rss)}
		}
		counts := <-done
		last := read()
		sent, recv := 0, 0
		for i := range counts.Sent {
			for j := range counts.Sent[i] {
				sent += counts.Sent[i][j]
				recv += counts.Received[i][j]
			}
		}
		cur, err := lab.Load(stateRoot, name)
		Expect(err).NotTo(HaveOccurred())
		keys := etcdKeys(cur)
		leases := 0
		seen := map[string]bool{}
		for k := range keys {
			if k != "/coreos.com/network/config" {
				leases++
				seen[k] = true
			}
		}
		report := fmt.Sprintf("soak %s: %d agent restarts, etcd restarted: %v\n"+
			"  pings: %d/%d answered (%.2f%% lost; probes to a restarting host are lost while it starts)\n"+
			"  leases: %d keys for %d hosts\n"+
			"  %s agent: open fds %d -> %d (peak %d, bound +%d); goroutines %d -> %d (peak %d, bound +%d); RSS %.1f -> %.1f MiB (peak %.1f, bound +%d MiB)\n",
			dur, restarts, etcdRestarted, recv, sent, 100*float64(sent-recv)/float64(max(sent, 1)), leases, len(cur.Hosts),
			steady.Name, first.fds, last.fds, peak.fds, soakMaxFDGrowth, first.gor, last.gor, peak.gor, soakMaxGoroutineGrowth,
			float64(first.rss)/(1<<20), float64(last.rss)/(1<<20), float64(peak.rss)/(1<<20), soakMaxRSSGrowth>>20)
		GinkgoWriter.Print(report)
		fmt.Fprint(os.Stderr, report)

		Expect(etcdRestarted || dur < time.Minute).To(BeTrue())
		Expect(leases).To(Equal(len(cur.Hosts)), "leases lost or duplicated")
		for _, h := range cur.Hosts {
			Expect(h.Subnet).To(Equal(subnets[h.Name]), "%s changed subnet", h.Name)
		}
		Expect(last.fds - first.fds).To(BeNumerically("<=", soakMaxFDGrowth))
		Expect(last.gor - first.gor).To(BeNumerically("<=", soakMaxGoroutineGrowth))
		Expect(last.rss - first.rss).To(BeNumerically("<=", soakMaxRSSGrowth))
		Expect(recv).To(BeNumerically(">", 0))
	})
})
