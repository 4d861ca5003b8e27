package linkem

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// Which frames an impairment applies to. Header offsets are read by hand
// rather than with a packet-decoding library: this runs once per frame on
// the data path, where decoding every layer into objects would cost more
// than the relay's whole budget for a small packet.
//
// Link-layer housekeeping never matches, whatever the class: ARP, IGMP and
// the ICMPv6 neighbour-discovery and multicast-listener messages pass
// untouched.
// Their timing depends on kernel timers, not on the traffic under test, so
// if they drew from the seeded streams a rerun would not see the same
// decisions for the same data packets.

// classifier decides whether a frame belongs to the impaired class.
type classifier struct {
	match    Match
	udpPorts []uint16
	networks []netip.Prefix
	ctlPorts []uint16
	etcd     []netip.Addr
}

func newClassifier(m Match, o OverlayMatch, c ControlMatch) *classifier {
	cl := &classifier{match: m, udpPorts: o.UDPPorts, networks: o.Networks, ctlPorts: c.Ports, etcd: c.EtcdIPs}
	if len(cl.ctlPorts) == 0 {
		cl.ctlPorts = defaultEtcdPorts()
	}
	return cl
}

// ipInfo is what classification needs from a frame's IP layer.
type ipInfo struct {
	v4       bool
	src, dst netip.Addr
	proto    byte
	l4       []byte // transport header and on; nil for a non-first fragment
}

// parseIP reads the IP layer of frame f; ok is false for anything that is
// not an IPv4 or IPv6 packet.
func parseIP(f []byte) (ipInfo, bool) {
	l3, et, ok := l3Offset(f)
	if !ok {
		return ipInfo{}, false
	}
	switch et {
	case etherIPv4:
		ihl, end, ok := ipv4At(f, l3)
		if !ok {
			return ipInfo{}, false
		}
		ip := f[l3:]
		in := ipInfo{
			v4:    true,
			src:   netip.AddrFrom4([4]byte(ip[12:16])),
			dst:   netip.AddrFrom4([4]byte(ip[16:20])),
			proto: ip[9],
		}
		if binary.BigEndian.Uint16(ip[6:])&0x1fff == 0 { // fragment offset 0
			in.l4 = f[l3+ihl : end]
		}
		return in, true
	case etherIPv6:
		if len(f) < l3+40 || f[l3]>>4 != 6 {
			return ipInfo{}, false
		}
		ip := f[l3:]
		in := ipInfo{src: netip.AddrFrom16([16]byte(ip[8:24])), dst: netip.AddrFrom16([16]byte(ip[24:40]))}
		next, off := ip[6], 40
		// Walk the extension headers that come before a transport header.
		for {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(ip) < off+8 {
					return in, true
				}
				next, off = ip[off], off+8+int(ip[off+1])*8
				continue
			case 44: // fragment
				if len(ip) < off+8 {
					return in, true
				}
				first := binary.BigEndian.Uint16(ip[off+2:])&0xfff8 == 0
				next, off = ip[off], off+8
				if !first {
					in.proto = next
					return in, true
				}
				continue
			}
			break
		}
		in.proto = next
		if off <= len(ip) {
			in.l4 = ip[off:]
		}
		return in, true
	}
	return ipInfo{}, false
}

// housekeeping reports IGMP and ICMPv6 neighbour discovery and
// multicast-listener messages (types 130-137 and 143). A bridge sends IGMP
// reports of its own when its ports change, for instance.
func (in ipInfo) housekeeping() bool {
	if in.v4 {
		return in.proto == protoIGMP
	}
	if in.proto != protoICMPv6 || len(in.l4) < 1 {
		return false
	}
	t := in.l4[0]
	return (t >= 130 && t <= 137) || t == 143
}

// ports returns the transport ports of a TCP or UDP packet.
func (in ipInfo) ports() (src, dst uint16, ok bool) {
	if (in.proto != protoTCP && in.proto != protoUDP) || len(in.l4) < 4 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(in.l4), binary.BigEndian.Uint16(in.l4[2:]), true
}

// matches reports whether frame f is in the class.
func (c *classifier) matches(f []byte) bool {
	in, ok := parseIP(f)
	if !ok || in.housekeeping() {
		return false
	}
	switch c.match {
	case MatchOverlay:
		return c.overlay(in)
	case MatchControl:
		return c.control(in)
	default:
		return true
	}
}

// overlay: the backend's encapsulated packets (udp and vxlan: UDP to or from
// one of the ports) or, for host-gw, IPv4 packets to or from the overlay
// network.
func (c *classifier) overlay(in ipInfo) bool {
	if !in.v4 {
		return false
	}
	if sp, dp, ok := in.ports(); ok && in.proto == protoUDP {
		if slices.Contains(c.udpPorts, sp) || slices.Contains(c.udpPorts, dp) {
			return true
		}
	}
	for _, n := range c.networks {
		if n.Contains(in.src) || n.Contains(in.dst) {
			return true
		}
	}
	return false
}

// control: etcd's client and peer traffic, TCP to or from an etcd port on one
// of the etcd addresses (any address when none are given).
func (c *classifier) control(in ipInfo) bool {
	sp, dp, ok := in.ports()
	if !ok || in.proto != protoTCP {
		return false
	}
	isEtcd := func(a netip.Addr) bool { return len(c.etcd) == 0 || slices.Contains(c.etcd, a.Unmap()) }
	return (slices.Contains(c.ctlPorts, dp) && isEtcd(in.dst)) || (slices.Contains(c.ctlPorts, sp) && isEtcd(in.src))
}
