package run

import (
	"os"
	"path/filepath"

	"github.com/overlaylab/overlaylab/lab"
	"github.com/overlaylab/overlaylab/scenarios"
)

// collect writes dumps (routes, neighbours, FDB, links, nftables, etcd keys)
// and copies of the logs into the output dir.
func (r *runner) collect(all bool) {
	if !all || r.lab == nil {
		return
	}
	st := r.lab.Snapshot()
	dir := filepath.Join(r.o.Out, "dumps")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	add := func(p string) {
		rel, _ := filepath.Rel(r.o.Out, p)
		r.mu.Lock()
		r.res.Artifacts = append(r.res.Artifacts, rel)
		r.mu.Unlock()
	}
	for _, h := range st.Hosts {
		p := filepath.Join(dir, h.Name+".txt")
		if err := os.WriteFile(p, []byte(lab.Dump(h.Netns)), 0o644); err == nil {
			add(p)
		}
	}
	p := filepath.Join(dir, "etcd-keys.txt")
	if err := os.WriteFile(p, []byte(lab.DumpEtcd(st)), 0o644); err == nil {
		add(p)
	}
	logs, _ := filepath.Glob(filepath.Join(st.StateDir, "logs", "*.log"))
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		p := filepath.Join(dir, filepath.Base(l))
		if os.WriteFile(p, data, 0o644) == nil {
			add(p)
		}
	}
}

// keepPcaps deletes captures the policy does not keep.
func (r *runner) keepPcaps() {
	for i := range r.res.Expectations {
		e := &r.res.Expectations[i]
		if e.Pcap == "" {
			continue
		}
		keep := r.sc.Artifacts.Pcap == scenarios.PcapAlways || (r.sc.Artifacts.Pcap == scenarios.PcapFailing && !e.Passed)
		if !keep {
			_ = os.Remove(filepath.Join(r.o.Out, e.Pcap))
			e.Pcap = ""
			continue
		}
		r.res.Artifacts = append(r.res.Artifacts, e.Pcap)
	}
}
