package backend

import (
	"fmt"
	"io"
	"sync/atomic"
)

// DropReason says why the datapath discarded a packet.
type DropReason int

const (
	DropNoRoute    DropReason = iota // destination in the Network but no peer holds its subnet
	DropMalformed                    // an IPv4 packet with a broken header
	DropNotIPv4                      // another protocol (IPv6 on the TUN device, say)
	DropNotPeer                      // datagram from an address that is not a current peer
	DropSpoofed                      // inner addresses do not match the sending peer and us
	DropSendError                    // the kernel refused to send
	DropWriteError                   // the TUN device refused the packet
	dropReasons
)

var dropNames = [dropReasons]string{"no_route", "malformed", "not_ipv4", "not_peer", "spoofed", "send_error", "write_error"}

func (r DropReason) String() string { return dropNames[r] }

// Metrics are the datapath counters exported on /metrics. The hot path only
// does atomic adds; no locks, no allocation.
type Metrics struct {
	EncapPackets atomic.Uint64
	EncapBytes   atomic.Uint64
	DecapPackets atomic.Uint64
	DecapBytes   atomic.Uint64
	// GROStrays counts datagrams that a UDP GRO batch of the underlay
	// delivered to another udp worker than the flow steering chooses
	// (several workers only): such flows can be reordered.
	GROStrays atomic.Uint64
	drops     [dropReasons]atomic.Uint64
}

// Drop counts one discarded packet.
func (m *Metrics) Drop(r DropReason) { m.drops[r].Add(1) }

// Dropped returns the count for one reason.
func (m *Metrics) Dropped(r DropReason) uint64 { return m.drops[r].Load() }

// WritePrometheus writes the counters in Prometheus text format.
func (m *Metrics) WritePrometheus(w io.Writer) { WritePrometheusAll(w, []Labeled{{M: m}}) }

// Labeled is one network's counters and the label pair that names the
// network on every sample (`network="red"`); "" for the only network of a
// single-network agent, whose samples carry no label.
type Labeled struct {
	Label string
	M     *Metrics
}

// WritePrometheusAll writes the counters of several networks, each metric's
// HELP and TYPE once and then one sample per network.
func WritePrometheusAll(w io.Writer, ms []Labeled) {
	family := func(name, help string, v func(*Metrics) uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		for _, l := range ms {
			fmt.Fprintf(w, "%s%s %d\n", name, Braces(l.Label), v(l.M))
		}
	}
	family("overlaylab_encap_packets_total", "Packets encapsulated towards peers.", func(m *Metrics) uint64 { return m.EncapPackets.Load() })
	family("overlaylab_encap_bytes_total", "Inner bytes encapsulated towards peers.", func(m *Metrics) uint64 { return m.EncapBytes.Load() })
	family("overlaylab_decap_packets_total", "Packets decapsulated from peers.", func(m *Metrics) uint64 { return m.DecapPackets.Load() })
	family("overlaylab_decap_bytes_total", "Inner bytes decapsulated from peers.", func(m *Metrics) uint64 { return m.DecapBytes.Load() })
	family("overlaylab_udp_gro_stray_packets_total", "Datagrams an underlay GRO batch gave to another udp worker than their flow's (several workers only; such flows can be reordered).",
		func(m *Metrics) uint64 { return m.GROStrays.Load() })
	fmt.Fprintf(w, "# HELP overlaylab_dropped_packets_total Packets dropped by the datapath, by reason.\n# TYPE overlaylab_dropped_packets_total counter\n")
	for _, l := range ms {
		sep := ""
		if l.Label != "" {
			sep = l.Label + ","
		}
		for r := DropReason(0); r < dropReasons; r++ {
			fmt.Fprintf(w, "overlaylab_dropped_packets_total{%sreason=%q} %d\n", sep, r.String(), l.M.drops[r].Load())
		}
	}
}

// Braces wraps a non-empty label list for a sample line (name{labels}).
func Braces(labels string) string {
	if labels == "" {
		return ""
	}
	return "{" + labels + "}"
}
