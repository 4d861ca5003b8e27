package lab

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/pcapcheck"
)

// Endpoints lists every container of the lab.
func (s *State) Endpoints() []Endpoint {
	var eps []Endpoint
	for _, h := range s.Hosts {
		for _, c := range h.Containers {
			eps = append(eps, Endpoint{Name: h.Name + "/" + c.Name, Netns: c.Netns, IP: netip.MustParseAddr(c.IP)})
		}
	}
	return eps
}

// hostOf maps a container IP to its host.
func (s *State) hostOf(ip netip.Addr) *HostState {
	for i := range s.Hosts {
		for _, c := range s.Hosts[i].Containers {
			if c.IP == ip.String() {
				return &s.Hosts[i]
			}
		}
	}
	return nil
}

// EchoFlows is how every echo request from host's containers to another
// host's container among eps, for the pairs sel picks, must cross host's
// wire: between the two hosts' underlay addresses (host-gw has no outer
// header) and, when macs names the peer, to that peer's MAC.
func (s *State) EchoFlows(host string, eps []Endpoint, sel func(i, j int) bool, macs map[string]net.HardwareAddr) []pcapcheck.Flow {
	var flows []pcapcheck.Flow
	for i, src := range eps {
		from := s.hostOf(src.IP)
		if from == nil || from.Name != host {
			continue
		}
		for j, dst := range eps {
			to := s.hostOf(dst.IP)
			if to == nil || to.Name == host || !sel(i, j) {
				continue
			}
			f := pcapcheck.Flow{InnerSrc: src.IP, InnerDst: dst.IP, DstMAC: macs[to.Name]}
			if s.Backend != "host-gw" {
				f.OuterSrc, f.OuterDst = netip.MustParseAddr(from.UnderlayIP), netip.MustParseAddr(to.UnderlayIP)
			}
			flows = append(flows, f)
		}
	}
	return flows
}

// fullMatrixLimit is the most containers whose every pair `up` probes; a
// larger lab probes a sample that still covers every ordered host pair.
const fullMatrixLimit = 40

// sample returns nil (probe everything) for small labs; otherwise it picks,
// for every ordered pair of hosts, one container on each (rotating, so the
// sample spreads over containers), plus every pair on the same host.
func (s *State) sample(eps []Endpoint) func(i, j int) bool {
	if len(eps) <= fullMatrixLimit {
		return nil
	}
	host := make([]int, len(eps))  // endpoint -> host index
	index := make([]int, len(eps)) // endpoint -> container index on its host
	count := map[int]int{}
	for k, e := range eps {
		for hi := range s.Hosts {
			if strings.HasPrefix(e.Name, s.Hosts[hi].Name+"/") {
				host[k] = hi
				index[k] = count[hi]
				count[hi]++
			}
		}
	}
	return func(i, j int) bool {
		a, b := host[i], host[j]
		if a == b {
			return true
		}
		return index[i] == (a+b)%count[a] && index[j] == (a*7+b)%count[b]
	}
}

// Encap is how the lab's backend should look on the wire.
func (s *State) Encap() pcapcheck.Encap {
	e := pcapcheck.Encap{Kind: s.Backend, Network: netip.MustParsePrefix(s.Network)}
	switch s.Backend {
	case "udp":
		e.Port = uint16(cmp.Or(s.BackendPort, 8285))
	case "vxlan":
		e.Port, e.VNI = uint16(cmp.Or(s.BackendPort, 8472)), uint32(cmp.Or(s.BackendVNI, 1))
	}
	return e
}

// Verify runs the full container ping matrix while capturing on the first
// host's underlay interface, then checks that every cross-host echo from that
// host crossed the wire encapsulated and that no bare container traffic did.
// The capture is saved in the state dir either way.
func Verify(ctx context.Context, st *State, pr *progress) error {
	eps := st.Endpoints()
	if len(eps) < 2 {
		pr.printf("  (fewer than 2 containers: no ping matrix to check)\n")
		return nil
	}
	pr.phase("verify")
	h1 := st.Hosts[0]
	capt, err := pcapcheck.Start(ctx, h1.Netns, "eth0")
	if err != nil {
		return fmt.Errorf("capture on %s eth0: %w", h1.Name, err)
	}
	probe := st.sample(eps)
	pairs := 0
	for i := range eps {
		for j := range eps {
			if i != j && (probe == nil || probe(i, j)) {
				pairs++
			}
		}
	}
	// Enough time for several passes at the probe rate, and never less
	// than 20 s.
	deadline := max(20*time.Second, time.Duration(pairs)*4*time.Second/probeRate)
	pctx, cancel := context.WithTimeout(ctx, deadline)
	var m *Matrix
	var perr error
	if probe == nil {
		m, perr = PingMatrix(pctx, eps, nil, 250*time.Millisecond)
	} else {
		m, perr = PingSample(pctx, eps, probe, 250*time.Millisecond)
	}
	cancel()
	// Replies may still be in flight for the last probes.
	time.Sleep(50 * time.Millisecond)
	frames, cerr := capt.Stop()
	st.Capture = filepath.Join(st.StateDir, "capture-"+h1.Name+".pcap")
	if werr := pcapcheck.WritePcap(st.Capture, frames); werr != nil {
		return werr
	}
	_ = st.Save()
	if perr != nil {
		return perr
	}
	what := "pairs"
	if probe != nil {
		what = "sampled pairs (every host pair and every same-host pair)"
	}
	if !m.OK() {
		return fmt.Errorf("ping matrix: %d of %d %s wrong (the lab stays up for inspection; `overlaylab down --name %s` removes it)\n%s",
			m.Failures(), m.Pairs(), what, st.Name, m)
	}
	pr.printf("  ping matrix: %d/%d %s answered\n", m.Pairs(), m.Pairs(), what)
	if cerr != nil {
		return fmt.Errorf("capture: %w", cerr)
	}
	macs, err := st.WireMACs(ctx)
	if err != nil {
		return err
	}
	x := pcapcheck.Expect{Encap: st.Encap(), Echoes: st.EchoFlows(h1.Name, eps, func(i, j int) bool { return m.Probed[i][j] }, macs)}
	rep := pcapcheck.Check(pcapcheck.Decode(frames, x.Encap), x)
	if !rep.OK {
		return fmt.Errorf("wire check on %s eth0 failed (capture %s):\n%s", h1.Name, st.Capture, rep.Summary)
	}
	how := fmt.Sprintf("encapsulated (%s port %d), no bare container traffic", st.Backend, x.Encap.Port)
	if st.Backend == "host-gw" {
		how = "routed bare between the hosts (host-gw), no encapsulation"
	}
	pr.printf("  wire: %d cross-host echoes from %s seen %s; %d frames saved to %s\n", len(x.Echoes), h1.Name, how, len(frames), st.Capture)
	return nil
}
