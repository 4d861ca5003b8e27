package plan

import (
	"fmt"
	"strconv"

	"github.com/overlaylab/overlaylab/overlay/config"
)

// WireMAC says which destination MAC a frame to a peer host carries on the
// underlay for a backend.
type WireMAC int

// Wire MAC sources.
const (
	WireMACNone     WireMAC = iota // the frame goes to the peer's IP stack (udp): not checked
	WireMACVtep                    // the peer's VTEP MAC from its lease (vxlan)
	WireMACHostEth0                // the peer host's eth0 (host-gw routes bare)
)

// Backend is what the lab knows of one backend: the one table of
// backend-specific knowledge (preflight, encapsulation, wire MACs, rules).
type Backend struct {
	Type string // a config.Backend* constant
	Port int    // udp/vxlan: the UDP port on the wire (after defaults)
	VNI  int    // vxlan
	// Encapsulated: overlay packets cross the underlay inside UDP; host-gw
	// routes them bare between hosts on one L2 segment.
	Encapsulated bool
	// NeedsTUN: the agent opens /dev/net/tun.
	NeedsTUN bool
	WireMAC  WireMAC
	// Describe says in a line how overlay traffic looks on the wire.
	Describe string
}

var backends = map[string]Backend{
	config.BackendUDP:    {Type: config.BackendUDP, Encapsulated: true, NeedsTUN: true, WireMAC: WireMACNone},
	config.BackendVXLAN:  {Type: config.BackendVXLAN, Encapsulated: true, WireMAC: WireMACVtep},
	config.BackendHostGW: {Type: config.BackendHostGW, WireMAC: WireMACHostEth0},
}

// BackendOf looks up a (defaulted) config's backend.
func BackendOf(c *config.Config) (Backend, error) {
	b, ok := backends[c.Backend.Type]
	if !ok {
		return Backend{}, ferr("backend", strconv.Quote(c.Backend.Type), "use %s, %s or %s", config.BackendUDP, config.BackendVXLAN, config.BackendHostGW)
	}
	b.Port, b.VNI = c.Backend.Port, c.Backend.VNI
	switch {
	case b.Type == config.BackendVXLAN:
		b.Describe = fmt.Sprintf("encapsulated (vxlan port %d, VNI %d)", b.Port, b.VNI)
	case b.Encapsulated:
		b.Describe = fmt.Sprintf("encapsulated (%s port %d)", b.Type, b.Port)
	default:
		b.Describe = "routed bare between the hosts (host-gw), no encapsulation"
	}
	return b, nil
}
