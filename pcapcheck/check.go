package pcapcheck

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Flow is one container-to-container ICMP echo request that must be seen on
// the wire.
//
// For udp and vxlan, OuterSrc/OuterDst are the underlay addresses of the
// sending and receiving hosts; a zero address matches any. For host-gw there
// is no outer header: the packet on the wire carries InnerSrc→InnerDst
// itself, OuterSrc/OuterDst are ignored, and the hop is pinned down by DstMAC
// instead.
type Flow struct {
	OuterSrc, OuterDst netip.Addr
	InnerSrc, InnerDst netip.Addr // container addresses; required
	// DstMAC, when set, must be the destination MAC of the echo: for vxlan the
	// inner Ethernet destination (the peer's VtepMAC), otherwise the
	// Ethernet destination on the wire (for host-gw the next-hop host's
	// underlay MAC).
	DstMAC net.HardwareAddr
}

func (f Flow) String() string {
	s := fmt.Sprintf("%v→%v", f.InnerSrc, f.InnerDst)
	if f.OuterSrc.IsValid() || f.OuterDst.IsValid() {
		s += fmt.Sprintf(" via %v→%v", anyAddr(f.OuterSrc), anyAddr(f.OuterDst))
	}
	if f.DstMAC != nil {
		s += fmt.Sprintf(" to %v", f.DstMAC)
	}
	return s
}

func anyAddr(a netip.Addr) string {
	if !a.IsValid() {
		return "*"
	}
	return a.String()
}

// Expect is what a capture must show.
type Expect struct {
	Encap Encap
	// Echoes are the echo requests that must appear, each in Encap's format.
	Echoes []Flow
}

// Report is the verdict of Check.
type Report struct {
	OK      bool
	Missing []Flow // expected echoes not found
	// Bare are packets whose outer IPv4 source or destination is inside the
	// overlay network: container traffic on the wire unencapsulated (udp and
	// vxlan only; for host-gw that is the expected shape).
	Bare []Packet
	// WrongEncap lists distinct problems with encapsulated traffic (wrong
	// VNI, wrong port or backend, inner addresses outside the network,
	// undecodable payloads), each with its count.
	WrongEncap []string
	Summary    string // multiline, human readable
}

// maxListed bounds how many packets per problem the Summary spells out.
const maxListed = 10

// Check judges decoded packets against x.
//
// udp/vxlan: every expected echo must appear as outer IPv4 OuterSrc→OuterDst,
// UDP destination port Encap.Port, (vxlan: VNI Encap.VNI,) inner IPv4
// InnerSrc→InnerDst, ICMP echo request. No packet may carry an overlay
// address in its outer header (Bare). Packets to Encap.Port with a wrong VNI,
// an undecodable payload or inner addresses outside the network, and overlay
// packets encapsulated in another backend's format or port, are WrongEncap.
//
// host-gw: every expected echo must appear as a plain IPv4 ICMP echo request
// InnerSrc→InnerDst with no UDP around it; overlay packets found inside
// udp/vxlan encapsulation are WrongEncap. Non-IPv4 frames were already
// skipped by Decode.
func Check(pkts []Packet, x Expect) Report {
	var r Report
	if err := x.Encap.Validate(); err != nil {
		r.Missing = append(r.Missing, x.Echoes...)
		r.Summary = "pcapcheck: invalid expectation: " + err.Error()
		return r
	}
	e := x.Encap.normalized()
	inNet := func(a netip.Addr) bool { return a.IsValid() && e.Network.Contains(a) }

	wrong := &problemCounter{}
	var encapsulated, echoes int
	for _, p := range pkts {
		if p.Encapsulated != "" {
			encapsulated++
		}
		if p.IsEchoRequest() {
			echoes++
		}
		overlayInside := inNet(p.InnerSrc) || inNet(p.InnerDst)
		switch e.Kind {
		case KindUDP, KindVXLAN:
			if inNet(p.OuterSrc) || inNet(p.OuterDst) {
				r.Bare = append(r.Bare, p)
				continue
			}
			if p.UDPDst == e.Port {
				checkOnPort(p, e, inNet, wrong)
			} else if p.Encapsulated != "" && overlayInside {
				wrong.add(fmt.Sprintf("%s-encapsulated overlay packet on udp port %d, want %s on port %d",
					p.Encapsulated, p.UDPDst, e.Kind, e.Port), p)
			}
		case KindHostGW:
			if p.Encapsulated != "" && overlayInside {
				wrong.add(fmt.Sprintf("%s-encapsulated overlay packet on udp port %d, host-gw must route it unencapsulated",
					p.Encapsulated, p.UDPDst), p)
			}
		}
	}
	r.WrongEncap = wrong.lines()

	found := 0
	var missingNotes []string
	for _, f := range x.Echoes {
		if hasMatch(pkts, f, e) {
			found++
			continue
		}
		r.Missing = append(r.Missing, f)
		missingNotes = append(missingNotes, describeMissing(pkts, f))
	}

	r.OK = len(r.Missing) == 0 && len(r.Bare) == 0 && len(r.WrongEncap) == 0
	r.Summary = summarize(r, e, len(pkts), encapsulated, echoes, found, len(x.Echoes), missingNotes, wrong)
	return r
}

// checkOnPort inspects a packet sent to the backend's own port.
func checkOnPort(p Packet, e Encap, inNet func(netip.Addr) bool, wrong *problemCounter) {
	switch {
	case e.Kind == KindVXLAN && !p.HasVXLAN:
		wrong.add(fmt.Sprintf("udp port %d payload too short for a VXLAN header", e.Port), p)
	case e.Kind == KindVXLAN && p.VNI != e.VNI:
		wrong.add(fmt.Sprintf("VXLAN VNI %d on port %d, want VNI %d", p.VNI, e.Port, e.VNI), p)
	case e.Kind == KindUDP && p.Encapsulated == "":
		wrong.add(fmt.Sprintf("udp port %d payload is not an IPv4 packet", e.Port), p)
	case p.Encapsulated == "":
		// vxlan carrying something other than IPv4 (say ARP): not our concern.
	case !inNet(p.InnerSrc) || !inNet(p.InnerDst):
		wrong.add(fmt.Sprintf("%s-encapsulated inner packet %v→%v outside network %v",
			p.Encapsulated, p.InnerSrc, p.InnerDst, e.Network), p)
	}
}

func hasMatch(pkts []Packet, f Flow, e Encap) bool {
	for _, p := range pkts {
		if matches(p, f, e) {
			return true
		}
	}
	return false
}

func matches(p Packet, f Flow, e Encap) bool {
	if !p.IsEchoRequest() {
		return false
	}
	switch e.Kind {
	case KindUDP, KindVXLAN:
		if p.Encapsulated != e.Kind || p.UDPDst != e.Port {
			return false
		}
		if e.Kind == KindVXLAN && p.VNI != e.VNI {
			return false
		}
		if !addrMatches(f.OuterSrc, p.OuterSrc) || !addrMatches(f.OuterDst, p.OuterDst) {
			return false
		}
		if p.InnerSrc != f.InnerSrc || p.InnerDst != f.InnerDst {
			return false
		}
		dstMAC := p.OuterDstMAC
		if e.Kind == KindVXLAN {
			dstMAC = p.InnerDstMAC
		}
		return macMatches(f.DstMAC, dstMAC)
	case KindHostGW:
		return p.Encapsulated == "" && p.UDPDst == 0 &&
			p.OuterSrc == f.InnerSrc && p.OuterDst == f.InnerDst &&
			macMatches(f.DstMAC, p.OuterDstMAC)
	}
	return false
}

func addrMatches(want, got netip.Addr) bool { return !want.IsValid() || want == got }

func macMatches(want, got net.HardwareAddr) bool {
	return want == nil || bytes.Equal(want, got)
}

// describeMissing explains a missing flow by listing echo requests between the
// same containers seen in any shape: these are usually the answer to "why".
func describeMissing(pkts []Packet, f Flow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "missing: %v", f)
	n := 0
	for _, p := range pkts {
		if !p.IsEchoRequest() {
			continue
		}
		if src, dst := p.Addrs(); src != f.InnerSrc || dst != f.InnerDst {
			continue
		}
		if n == 0 {
			b.WriteString("\n      seen instead:")
		}
		if n == maxListed {
			b.WriteString("\n        …")
			break
		}
		fmt.Fprintf(&b, "\n        %v", p)
		n++
	}
	if n == 0 {
		b.WriteString(" (no echo request between these containers in any form)")
	}
	return b.String()
}

func summarize(r Report, e Encap, total, encapsulated, echoes, found, expected int, missingNotes []string, wrong *problemCounter) string {
	var b strings.Builder
	verdict := "OK"
	if !r.OK {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "pcapcheck %v: %s\n", e, verdict)
	fmt.Fprintf(&b, "  packets: %d IPv4, %d encapsulated, %d echo requests\n", total, encapsulated, echoes)
	fmt.Fprintf(&b, "  expected echoes found: %d/%d\n", found, expected)
	for _, note := range missingNotes {
		fmt.Fprintf(&b, "    %s\n", note)
	}
	if e.Kind != KindHostGW {
		fmt.Fprintf(&b, "  bare overlay packets on the wire: %d\n", len(r.Bare))
		for i, p := range r.Bare {
			if i == maxListed {
				fmt.Fprintf(&b, "    … and %d more\n", len(r.Bare)-maxListed)
				break
			}
			fmt.Fprintf(&b, "    %v\n", p)
		}
	}
	fmt.Fprintf(&b, "  wrong encapsulation: %d kinds\n", len(r.WrongEncap))
	for _, k := range wrong.order {
		fmt.Fprintf(&b, "    %s (×%d), first: %v\n", k, wrong.count[k], wrong.first[k])
	}
	return strings.TrimRight(b.String(), "\n")
}

// problemCounter collapses repeated problems into one line each, in order of
// first appearance, keeping the first packet as an example.
type problemCounter struct {
	order []string
	count map[string]int
	first map[string]Packet
}

func (c *problemCounter) add(msg string, p Packet) {
	if c.count == nil {
		c.count, c.first = map[string]int{}, map[string]Packet{}
	}
	if c.count[msg] == 0 {
		c.order = append(c.order, msg)
		c.first[msg] = p
	}
	c.count[msg]++
}

func (c *problemCounter) lines() []string {
	var out []string
	for _, k := range c.order {
		out = append(out, fmt.Sprintf("%s (×%d)", k, c.count[k]))
	}
	return out
}
