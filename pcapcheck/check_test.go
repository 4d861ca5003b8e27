package pcapcheck

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	ctrC := netip.MustParseAddr("10.10.3.2")
	host3 := netip.MustParseAddr("192.168.77.3")
	outside := netip.MustParseAddr("172.16.0.9")
	ab := Flow{OuterSrc: host1, OuterDst: host2, InnerSrc: ctrA, InnerDst: ctrB}
	ba := Flow{OuterSrc: host2, OuterDst: host1, InnerSrc: ctrB, InnerDst: ctrA}
	hgwAB := Flow{InnerSrc: ctrA, InnerDst: ctrB}

	type want struct {
		ok         bool
		missing    int
		bare       int
		wrongEncap []string // substrings, one per expected WrongEncap line
		summary    []string // substrings of Summary
	}
	tests := []struct {
		name   string
		frames [][]byte
		expect Expect
		want   want
	}{
		{
			name: "udp good, both directions, ARP ignored",
			frames: [][]byte{
				arpFrame(t),
				flannelUDP(t, host1, host2, ctrA, ctrB, 8285),
				flannelUDP(t, host2, host1, ctrB, ctrA, 8285),
			},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab, ba}},
			want:   want{ok: true, summary: []string{"udp port 8285 network 10.10.0.0/16: OK", "found: 2/2"}},
		},
		{
			name:   "udp missing flow",
			frames: [][]byte{flannelUDP(t, host1, host2, ctrA, ctrB, 8285)},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab, ba}},
			want:   want{missing: 1, summary: []string{"FAIL", "found: 1/2", "missing: 10.10.2.2→10.10.1.2 via 192.168.77.2→192.168.77.1", "in any form"}},
		},
		{
			name:   "udp wrong outer destination",
			frames: [][]byte{flannelUDP(t, host1, host3, ctrA, ctrB, 8285)},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab}},
			want:   want{missing: 1, summary: []string{"seen instead:", "192.168.77.1→192.168.77.3 udp 8285→8285 inner 10.10.1.2→10.10.2.2"}},
		},
		{
			name:   "udp wildcard outer",
			frames: [][]byte{flannelUDP(t, host1, host3, ctrA, ctrB, 8285)},
			expect: Expect{Encap: encUDP, Echoes: []Flow{{InnerSrc: ctrA, InnerDst: ctrB}}},
			want:   want{ok: true},
		},
		{
			name: "udp bare container traffic",
			frames: [][]byte{
				flannelUDP(t, host1, host2, ctrA, ctrB, 8285),
				plainEcho(t, ctrA, ctrB),
				plainEcho(t, host1, ctrC),
			},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab}},
			want:   want{bare: 2, summary: []string{"bare overlay packets on the wire: 2", "frame 1 in 10.10.1.2→10.10.2.2 icmp echo-request"}},
		},
		{
			name:   "udp bare only: echo not counted as encapsulated",
			frames: [][]byte{plainEcho(t, ctrA, ctrB)},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab}},
			want:   want{missing: 1, bare: 1, summary: []string{"seen instead:"}},
		},
		{
			name:   "udp payload not IPv4",
			frames: [][]byte{udpFrame(t, host1, host2, 8285, 8285, []byte("hello, not a packet"))},
			expect: Expect{Encap: encUDP},
			want:   want{wrongEncap: []string{"udp port 8285 payload is not an IPv4 packet (×1)"}},
		},
		{
			name: "udp inner outside network",
			frames: [][]byte{
				flannelUDP(t, host1, host2, outside, ctrB, 8285),
				flannelUDP(t, host1, host2, outside, ctrB, 8285),
			},
			expect: Expect{Encap: encUDP},
			want:   want{wrongEncap: []string{"inner packet 172.16.0.9→10.10.2.2 outside network 10.10.0.0/16 (×2)"}},
		},
		{
			name:   "udp backend but vxlan on the wire",
			frames: [][]byte{flannelVXLAN(t, host1, host2, ctrA, ctrB, 8472, 1)},
			expect: Expect{Encap: encUDP, Echoes: []Flow{ab}},
			want:   want{missing: 1, wrongEncap: []string{"vxlan-encapsulated overlay packet on udp port 8472, want udp on port 8285"}},
		},
		{
			name: "vxlan good",
			frames: [][]byte{
				flannelVXLAN(t, host1, host2, ctrA, ctrB, 8472, 1),
				flannelVXLAN(t, host2, host1, ctrB, ctrA, 8472, 1),
			},
			expect: Expect{Encap: encVXLAN, Echoes: []Flow{{OuterSrc: host1, OuterDst: host2, InnerSrc: ctrA, InnerDst: ctrB, DstMAC: vtepH2}, ba}},
			want:   want{ok: true, summary: []string{"vxlan port 8472 vni 1"}},
		},
		{
			name:   "vxlan VNI mismatch",
			frames: [][]byte{flannelVXLAN(t, host1, host2, ctrA, ctrB, 8472, 2)},
			expect: Expect{Encap: encVXLAN, Echoes: []Flow{ab}},
			want: want{missing: 1, wrongEncap: []string{"VXLAN VNI 2 on port 8472, want VNI 1 (×1)"},
				summary: []string{"vxlan vni 2 inner-eth-dst 0a:00:00:00:02:02 inner 10.10.1.2→10.10.2.2"}},
		},
		{
			name:   "vxlan wrong inner destination MAC",
			frames: [][]byte{flannelVXLAN(t, host1, host2, ctrA, ctrB, 8472, 1)},
			expect: Expect{Encap: encVXLAN, Echoes: []Flow{{OuterSrc: host1, OuterDst: host2, InnerSrc: ctrA, InnerDst: ctrB, DstMAC: vtepH1}}},
			want:   want{missing: 1, summary: []string{"to 0a:00:00:00:01:01"}},
		},
		{
			name:   "vxlan on the IANA port instead of flannel's",
			frames: [][]byte{flannelVXLAN(t, host1, host2, ctrA, ctrB, 4789, 1)},
			expect: Expect{Encap: encVXLAN, Echoes: []Flow{ab}},
			want:   want{missing: 1, wrongEncap: []string{"vxlan-encapsulated overlay packet on udp port 4789, want vxlan on port 8472"}},
		},
		{
			name:   "vxlan custom port and VNI",
			frames: [][]byte{flannelVXLAN(t, host1, host2, ctrA, ctrB, 4789, 42)},
			expect: Expect{Encap: Encap{Kind: KindVXLAN, Port: 4789, VNI: 42, Network: overlay}, Echoes: []Flow{ab}},
			want:   want{ok: true},
		},
		{
			name:   "vxlan short header",
			frames: [][]byte{udpFrame(t, host1, host2, 1, 8472, []byte{8, 0, 0})},
			expect: Expect{Encap: encVXLAN},
			want:   want{wrongEncap: []string{"too short for a VXLAN header"}},
		},
		{
			name:   "host-gw good, ARP ignored",
			frames: [][]byte{arpFrame(t), plainEcho(t, ctrA, ctrB)},
			expect: Expect{Encap: encHGW, Echoes: []Flow{{InnerSrc: ctrA, InnerDst: ctrB, DstMAC: macH2}}},
			want:   want{ok: true, summary: []string{"host-gw network 10.10.0.0/16: OK"}},
		},
		{
			name:   "host-gw missing",
			frames: [][]byte{plainEcho(t, ctrB, ctrA)},
			expect: Expect{Encap: encHGW, Echoes: []Flow{hgwAB}},
			want:   want{missing: 1},
		},
		{
			name:   "host-gw wrong next hop MAC",
			frames: [][]byte{plainEcho(t, ctrA, ctrB)},
			expect: Expect{Encap: encHGW, Echoes: []Flow{{InnerSrc: ctrA, InnerDst: ctrB, DstMAC: macH1}}},
			want:   want{missing: 1},
		},
		{
			name: "host-gw but encapsulated",
			frames: [][]byte{
				flannelVXLAN(t, host1, host2, ctrA, ctrB, 8472, 1),
				flannelUDP(t, host1, host2, ctrA, ctrB, 8285),
			},
			expect: Expect{Encap: encHGW, Echoes: []Flow{hgwAB}},
			want: want{missing: 1, wrongEncap: []string{
				"vxlan-encapsulated overlay packet on udp port 8472, host-gw must route it unencapsulated",
				"udp-encapsulated overlay packet on udp port 8285",
			}},
		},
		{
			name:   "invalid expectation",
			frames: [][]byte{plainEcho(t, ctrA, ctrB)},
			expect: Expect{Encap: Encap{Kind: "ipip", Network: overlay}, Echoes: []Flow{hgwAB}},
			want:   want{missing: 1, summary: []string{`invalid expectation: unknown backend kind "ipip"`}},
		},
		{
			name:   "missing network",
			expect: Expect{Encap: Encap{Kind: KindUDP}},
			want:   want{summary: []string{"invalid expectation"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(Decode(frames(tc.frames...), tc.expect.Encap), tc.expect)
			if r.OK != tc.want.ok {
				t.Errorf("OK = %v, want %v", r.OK, tc.want.ok)
			}
			if len(r.Missing) != tc.want.missing {
				t.Errorf("Missing = %v, want %d", r.Missing, tc.want.missing)
			}
			if len(r.Bare) != tc.want.bare {
				t.Errorf("Bare = %v, want %d", r.Bare, tc.want.bare)
			}
			if len(r.WrongEncap) != len(tc.want.wrongEncap) {
				t.Errorf("WrongEncap = %q, want %d lines", r.WrongEncap, len(tc.want.wrongEncap))
			} else {
				for i, sub := range tc.want.wrongEncap {
					if !strings.Contains(r.WrongEncap[i], sub) {
						t.Errorf("WrongEncap[%d] = %q, want it to contain %q", i, r.WrongEncap[i], sub)
					}
				}
			}
			for _, sub := range tc.want.summary {
				if !strings.Contains(r.Summary, sub) {
					t.Errorf("Summary does not contain %q:\n%s", sub, r.Summary)
				}
			}
			if t.Failed() {
				t.Logf("summary:\n%s", r.Summary)
			}
		})
	}
}

func TestCheckSummaryBounded(t *testing.T) {
	var fs [][]byte
	for range 50 {
		fs = append(fs, plainEcho(t, ctrA, ctrB))
	}
	r := Check(Decode(frames(fs...), encVXLAN), Expect{Encap: encVXLAN})
	if len(r.Bare) != 50 {
		t.Fatalf("Bare = %d, want 50", len(r.Bare))
	}
	if !strings.Contains(r.Summary, "… and 40 more") || strings.Count(r.Summary, "\n") > 20 {
		t.Errorf("summary not bounded:\n%s", r.Summary)
	}
}
