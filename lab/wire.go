package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/overlaylab/overlaylab/lab/plan"
	"github.com/overlaylab/overlaylab/overlay/config"
	"github.com/overlaylab/overlaylab/pcapcheck"
)

// The one wire check: capture on a host's underlay interface while traffic
// runs, decode with gopacket, and judge against the backend's encapsulation.
// up's verification and every scenario encap check call it.

// WireCheck says what to capture and which traffic to judge.
type WireCheck struct {
	Host string
	// Traffic runs while the capture does. It returns the endpoints and the
	// judged matrix of the echoes it sent; every answered echo from Host's
	// containers to another host's must be seen on the wire in the
	// backend's format. A nil matrix means "no echoes required" (a window:
	// only that nothing crossed bare and something crossed encapsulated).
	Traffic func(ctx context.Context) ([]Endpoint, *Matrix, error)
	// CheckMACs also pins each echo's destination MAC (the peer's VTEP for
	// vxlan, its eth0 for host-gw).
	CheckMACs bool
	// Pcap, when set, is where the capture is written.
	Pcap string
	// Port and VNI, when set, replace the backend's in what is expected on
	// the wire (a scenario may state them).
	Port, VNI int
	// Network names the tenant network whose encapsulation is expected
	// ("": the first).
	Network string
}

// WireResult is the verdict.
type WireResult struct {
	OK           bool
	Summary      string
	Frames       int
	Encapsulated int // overlay packets seen in the backend's format
	Echoes       int // required echoes
	Pcap         string
	Matrix       *Matrix // the traffic's, when it had one
}

// CheckWire runs a wire check.
func (l *Lab) CheckWire(ctx context.Context, w WireCheck) (*WireResult, error) {
	st := l.Snapshot()
	h, err := st.host(w.Host)
	if err != nil {
		return nil, err
	}
	encap, err := st.encap(w.Network)
	if err != nil {
		return nil, err
	}
	if w.Port != 0 {
		encap.Port = uint16(w.Port)
	}
	if w.VNI != 0 {
		encap.VNI = uint32(w.VNI)
	}
	capt, err := pcapcheck.Start(ctx, h.Netns, plan.HostIf)
	if err != nil {
		return nil, fmt.Errorf("capture on %s %s: %w", h.Name, plan.HostIf, err)
	}
	eps, m, terr := w.Traffic(ctx)
	// Replies may still be in flight for the last probes.
	time.Sleep(50 * time.Millisecond)
	frames, cerr := capt.Stop()
	res := &WireResult{Frames: len(frames), Matrix: m}
	if w.Pcap != "" {
		if err := os.MkdirAll(filepath.Dir(w.Pcap), 0o755); err == nil && pcapcheck.WritePcap(w.Pcap, frames) == nil {
			res.Pcap = w.Pcap
		}
	}
	if terr != nil {
		return res, terr
	}
	if cerr != nil {
		return res, fmt.Errorf("capture on %s: %w", h.Name, cerr)
	}
	x := pcapcheck.Expect{Encap: encap}
	if m != nil {
		var macs map[string]net.HardwareAddr
		if w.CheckMACs {
			if macs, err = st.WireMACs(ctx, w.Network); err != nil {
				return res, err
			}
		}
		x.Echoes = st.echoFlows(w.Host, eps, func(i, j int) bool { return m.Cells[i][j].Received > 0 }, macs)
	}
	pkts := pcapcheck.Decode(frames, x.Encap)
	rep := pcapcheck.Check(pkts, x)
	res.Echoes = len(x.Echoes)
	for _, p := range pkts {
		if p.Encapsulated != "" || (encap.Kind == pcapcheck.KindHostGW && encap.Network.Contains(p.OuterSrc)) {
			res.Encapsulated++
		}
	}
	b, err := st.backendOf(w.Network)
	if err != nil {
		return res, err
	}
	switch {
	case !rep.OK:
		res.Summary = fmt.Sprintf("wire check on %s %s failed:\n%s", h.Name, plan.HostIf, rep.Summary)
	case m != nil && len(x.Echoes) == 0:
		res.Summary = fmt.Sprintf("no echo from %s's containers to another host was answered, so nothing could be checked on the wire", h.Name)
	case m == nil && res.Encapsulated == 0:
		res.Summary = fmt.Sprintf("no overlay traffic crossed %s's %s", h.Name, plan.HostIf)
	default:
		res.OK = true
		if m != nil {
			res.Summary = fmt.Sprintf("%d cross-host echoes from %s seen %s, no bare container traffic", len(x.Echoes), h.Name, b.Describe)
		} else {
			res.Summary = fmt.Sprintf("%d frames on %s %s: %d overlay packets, all %s, none bare", len(frames), h.Name, plan.HostIf, res.Encapsulated, b.Describe)
		}
	}
	return res, nil
}

// backend is the lab's backend (every network of a lab shares one type).
func (s *State) backend() (plan.Backend, error) { return s.backendOf("") }

// backendOf is one network's backend, with its port and VNI.
func (s *State) backendOf(network string) (plan.Backend, error) {
	_, b, err := s.networkBackend(network)
	return b, err
}

// networkBackend is one network's config and backend.
func (s *State) networkBackend(network string) (*config.Config, plan.Backend, error) {
	n, err := s.network(network)
	if err != nil {
		return nil, plan.Backend{}, err
	}
	cfg, err := n.config()
	if err != nil {
		return nil, plan.Backend{}, err
	}
	b, err := plan.BackendOf(cfg)
	return cfg, b, err
}

// encap is how a network of the lab ("": the first) should look on the
// wire.
func (s *State) encap(network string) (pcapcheck.Encap, error) {
	cfg, b, err := s.networkBackend(network)
	if err != nil {
		return pcapcheck.Encap{}, err
	}
	e := pcapcheck.Encap{Kind: b.Type, Network: cfg.Network, Port: uint16(b.Port), VNI: uint32(b.VNI)}
	return e, e.Validate()
}

// hostOf maps an endpoint ("h2/c1") to its host: by name, since tenant
// networks may give two containers one address.
func (s *State) hostOf(e Endpoint) *HostState {
	name, _, _ := strings.Cut(e.Name, "/")
	h, _ := s.Host(name)
	return h
}

// endpointHosts maps each endpoint to its host's position in s.Hosts (-1
// for none), by name as hostOf does, with one map rather than a search per
// endpoint: a large lab has thousands of endpoints.
func (s *State) endpointHosts(eps []Endpoint) []int {
	byName := make(map[string]int, len(s.Hosts))
	for k, h := range s.Hosts {
		byName[h.Name] = k
	}
	out := make([]int, len(eps))
	for k, e := range eps {
		name, _, _ := strings.Cut(e.Name, "/")
		if hi, ok := byName[name]; ok {
			out[k] = hi
		} else {
			out[k] = -1
		}
	}
	return out
}

// echoFlows is how every echo request from host's containers to another
// host's container among eps, for the pairs sel picks, must cross host's
// wire: between the two hosts' underlay addresses (host-gw has no outer
// header) and, when macs names the peer, to that peer's MAC.
func (s *State) echoFlows(host string, eps []Endpoint, sel func(i, j int) bool, macs map[string]net.HardwareAddr) []pcapcheck.Flow {
	b, _ := s.backend() // the state was checked when it was built
	hosts := s.endpointHosts(eps)
	var flows []pcapcheck.Flow
	for i, src := range eps {
		if hosts[i] < 0 || s.Hosts[hosts[i]].Name != host {
			continue
		}
		from := &s.Hosts[hosts[i]]
		for j, dst := range eps {
			if hosts[j] < 0 || s.Hosts[hosts[j]].Name == host || !sel(i, j) {
				continue
			}
			to := &s.Hosts[hosts[j]]
			f := pcapcheck.Flow{InnerSrc: src.IP, InnerDst: dst.IP, DstMAC: macs[to.Name]}
			if b.Encapsulated {
				f.OuterSrc, f.OuterDst = netip.MustParseAddr(from.UnderlayIP), netip.MustParseAddr(to.UnderlayIP)
			}
			flows = append(flows, f)
		}
	}
	return flows
}

// leaseData is the part of a lease's BackendData the lab reads: the VTEP
// MAC of a vxlan peer. The lab decodes it itself (flannel's JSON) rather
// than import the agent's backends.
type leaseData struct {
	VtepMAC string `json:"VtepMAC"`
}

// WireMACs is the destination MAC a frame to each host carries on the
// underlay, per the backend table: the VTEP MAC from its lease, its eth0
// MAC, or nothing (udp: the frame goes to the peer's IP stack).
func (st *State) WireMACs(ctx context.Context, network string) (map[string]net.HardwareAddr, error) {
	out := map[string]net.HardwareAddr{}
	b, err := st.backend()
	if err != nil {
		return nil, err
	}
	switch b.WireMAC {
	case plan.WireMACHostEth0:
		for _, h := range st.Hosts {
			out[h.Name] = plan.MAC(plan.MACHost, h.Index, 0)
		}
	case plan.WireMACVtep:
		leases, err := st.Leases(ctx, network)
		if err != nil {
			return nil, err
		}
		for _, ls := range leases {
			var d leaseData
			if json.Unmarshal(ls.Attrs.BackendData, &d) != nil {
				continue
			}
			mac, err := net.ParseMAC(d.VtepMAC)
			if err != nil {
				return nil, fmt.Errorf("lease %s: VtepMAC %q: %w", ls.Subnet, d.VtepMAC, err)
			}
			for _, h := range st.Hosts {
				if h.UnderlayIP == ls.Attrs.PublicIP.String() {
					out[h.Name] = mac
				}
			}
		}
	}
	return out, nil
}

// Endpoints lists every container of the lab (of one network, when network
// is not "" in a multi-network lab).
func (s *State) Endpoints(network string) []Endpoint {
	var eps []Endpoint
	for _, h := range s.Hosts {
		for _, c := range h.Containers {
			if network != "" && c.Network != network {
				continue
			}
			eps = append(eps, Endpoint{Name: h.Name + "/" + c.Name, Netns: c.Netns, IP: netip.MustParseAddr(c.IP)})
		}
	}
	return eps
}

// CaptureUnderlay captures every frame between the lab's nodes (on the
// underlay bridge, made promiscuous) until the returned func is called,
// which writes them to path.
func (l *Lab) CaptureUnderlay(ctx context.Context, path string) (func(), error) {
	st := l.Snapshot()
	if err := Promisc(st.Underlay.Netns, st.Underlay.Bridge); err != nil {
		return nil, err
	}
	capt, err := pcapcheck.Start(ctx, st.Underlay.Netns, st.Underlay.Bridge)
	if err != nil {
		return nil, err
	}
	return func() {
		frames, _ := capt.Stop()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			_ = pcapcheck.WritePcap(path, frames)
		}
	}, nil
}
