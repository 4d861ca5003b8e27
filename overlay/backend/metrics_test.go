package backend

import (
	"strings"
	"testing"
)

// TestWritePrometheusSingle: a single-network agent's counters carry no
// network label, byte for byte as before networks existed.
func TestWritePrometheusSingle(t *testing.T) {
	var m Metrics
	m.EncapPackets.Add(3)
	m.Drop(DropSpoofed)
	var b strings.Builder
	m.WritePrometheus(&b)
	const want = "# HELP overlaylab_encap_packets_total Packets encapsulated towards peers.\n# TYPE overlaylab_encap_packets_total counter\noverlaylab_encap_packets_total 3\n" +
		"# HELP overlaylab_encap_bytes_total Inner bytes encapsulated towards peers.\n# TYPE overlaylab_encap_bytes_total counter\noverlaylab_encap_bytes_total 0\n" +
		"# HELP overlaylab_decap_packets_total Packets decapsulated from peers.\n# TYPE overlaylab_decap_packets_total counter\noverlaylab_decap_packets_total 0\n" +
		"# HELP overlaylab_decap_bytes_total Inner bytes decapsulated from peers.\n# TYPE overlaylab_decap_bytes_total counter\noverlaylab_decap_bytes_total 0\n" +
		"# HELP overlaylab_udp_gro_stray_packets_total Datagrams an underlay GRO batch gave to another udp worker than their flow's (several workers only; such flows can be reordered).\n" +
		"# TYPE overlaylab_udp_gro_stray_packets_total counter\noverlaylab_udp_gro_stray_packets_total 0\n" +
		"# HELP overlaylab_dropped_packets_total Packets dropped by the datapath, by reason.\n# TYPE overlaylab_dropped_packets_total counter\n" +
		"overlaylab_dropped_packets_total{reason=\"no_route\"} 0\noverlaylab_dropped_packets_total{reason=\"malformed\"} 0\n" +
		"overlaylab_dropped_packets_total{reason=\"not_ipv4\"} 0\noverlaylab_dropped_packets_total{reason=\"not_peer\"} 0\n" +
		"overlaylab_dropped_packets_total{reason=\"spoofed\"} 1\noverlaylab_dropped_packets_total{reason=\"send_error\"} 0\n" +
		"overlaylab_dropped_packets_total{reason=\"write_error\"} 0\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestWritePrometheusNetworks: several networks share each metric's HELP
// and TYPE, and every sample names its network.
func TestWritePrometheusNetworks(t *testing.T) {
	var red, blue Metrics
	red.DecapPackets.Add(7)
	blue.Drop(DropNotPeer)
	var b strings.Builder
	WritePrometheusAll(&b, []Labeled{{`network="red"`, &red}, {`network="blue"`, &blue}})
	out := b.String()
	for _, want := range []string{
		"\noverlaylab_decap_packets_total{network=\"red\"} 7\noverlaylab_decap_packets_total{network=\"blue\"} 0\n",
		"\noverlaylab_dropped_packets_total{network=\"blue\",reason=\"not_peer\"} 1\n",
		"\noverlaylab_dropped_packets_total{network=\"red\",reason=\"not_peer\"} 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "# TYPE overlaylab_decap_packets_total counter\n"); n != 1 {
		t.Errorf("TYPE of decap_packets written %d times, want once", n)
	}
}
