package lab

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
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
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	m, perr := PingMatrix(pctx, eps, nil, 250*time.Millisecond)
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
	if !m.OK() {
		return fmt.Errorf("ping matrix: %d of %d pairs wrong (the lab stays up for inspection; `overlaylab down --name %s` removes it)\n%s",
			m.Failures(), len(eps)*(len(eps)-1), st.Name, m)
	}
	pr.printf("  ping matrix: %d/%d pairs answered\n", len(eps)*(len(eps)-1), len(eps)*(len(eps)-1))
	if cerr != nil {
		return fmt.Errorf("capture: %w", cerr)
	}
	x := pcapcheck.Expect{Encap: st.Encap()}
	for _, src := range eps {
		if st.hostOf(src.IP).Name != h1.Name {
			continue
		}
		for _, dst := range eps {
			peer := st.hostOf(dst.IP)
			if peer.Name == h1.Name {
				continue
			}
			x.Echoes = append(x.Echoes, pcapcheck.Flow{
				OuterSrc: netip.MustParseAddr(h1.UnderlayIP), OuterDst: netip.MustParseAddr(peer.UnderlayIP),
				InnerSrc: src.IP, InnerDst: dst.IP,
			})
		}
	}
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
