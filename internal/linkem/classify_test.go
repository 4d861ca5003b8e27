package linkem

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestClassify(t *testing.T) {
	overlay := OverlayMatch{UDPPorts: []uint16{8472}}
	hostgw := OverlayMatch{Networks: []netip.Prefix{mustPrefix("10.10.0.0/16")}}
	control := ControlMatch{EtcdIPs: []netip.Addr{mustAddr("192.168.77.250"), mustAddr("fd00::250")}}

	arp := serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: macA,
		SourceProtAddress: net.IPv4(192, 168, 77, 1).To4(), DstHwAddress: make([]byte, 6), DstProtAddress: net.IPv4(192, 168, 77, 2).To4()})
	ip6 := func(src, dst string, next layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: next, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	}
	nsIP := ip6("fe80::1", "ff02::1:ff00:2", layers.IPProtocolICMPv6)
	ndp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	ndp.SetNetworkLayerForChecksum(nsIP)
	neighSol := serialize(t, eth(layers.EthernetTypeIPv6), nsIP, ndp, gopacket.Payload(make([]byte, 20)))
	// An MLD report behind a hop-by-hop header (router alert), as the kernel sends it.
	mldIP := ip6("fe80::1", "ff02::16", layers.IPProtocolIPv6HopByHop)
	hbh := &layers.IPv6HopByHop{}
	hbh.NextHeader = layers.IPProtocolICMPv6
	hbh.Options = []*layers.IPv6HopByHopOption{{OptionType: 5, OptionLength: 2, OptionData: []byte{0, 0}}, {OptionType: 1, OptionLength: 0}}
	mld := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(143, 0)}
	mld.SetNetworkLayerForChecksum(mldIP)
	mldReport := serialize(t, eth(layers.EthernetTypeIPv6), mldIP, hbh, mld, gopacket.Payload(make([]byte, 24)))
	tcp6IP := ip6("fd00::1", "fd00::250", layers.IPProtocolTCP)
	tcp6 := &layers.TCP{SrcPort: 50000, DstPort: 2379, SYN: true, Window: 100}
	tcp6.SetNetworkLayerForChecksum(tcp6IP)
	etcd6 := serialize(t, eth(layers.EthernetTypeIPv6), tcp6IP, tcp6)
	vip := ip4("192.168.77.1", "192.168.77.2", layers.IPProtocolUDP)
	vudp := &layers.UDP{SrcPort: 1234, DstPort: 8472}
	vudp.SetNetworkLayerForChecksum(vip)
	vlanTagged := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
		vip, vudp, gopacket.Payload(make([]byte, 50)))
	// A non-first fragment of a datagram to 8472 carries no UDP header.
	frag := udpFrame(t, "192.168.77.1", "192.168.77.2", 1234, 8472, make([]byte, 100))
	frag[14+6], frag[14+7] = 0, 185 // fragment offset 185*8

	igmp := serialize(t, eth(layers.EthernetTypeIPv4), ip4("0.0.0.0", "224.0.0.22", layers.IPProtocolIGMP), gopacket.Payload([]byte{0x22, 0, 0xf9, 0x02, 0, 0, 0, 1, 4, 0, 0, 0, 224, 0, 0, 1}))

	cases := []struct {
		name                 string
		frame                []byte
		all, overlay, hostgw bool
		control              bool
	}{
		{"ARP", arp, false, false, false, false},
		{"IGMPv3 report (a bridge sends these)", igmp, false, false, false, false},
		{"ICMPv6 neighbour solicitation", neighSol, false, false, false, false},
		{"MLDv2 report behind hop-by-hop", mldReport, false, false, false, false},
		{"ICMP echo between hosts", icmpFrame(t, "192.168.77.1", "192.168.77.2", 1), true, false, false, false},
		{"VXLAN to 8472", udpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 8472, make([]byte, 64)), true, true, false, false},
		{"VXLAN from 8472", udpFrame(t, "192.168.77.2", "192.168.77.1", 8472, 40000, make([]byte, 64)), true, true, false, false},
		{"VXLAN in a VLAN tag", vlanTagged, true, true, false, false},
		{"non-first fragment to 8472", frag, true, false, false, false},
		{"UDP to another port", udpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 8285, make([]byte, 64)), true, false, false, false},
		{"host-gw container packet", tcpFrame(t, "10.10.1.2", "10.10.2.2", 40000, 80, nil), true, false, true, false},
		{"host-gw reply to the underlay", icmpFrame(t, "192.168.77.1", "10.10.3.4", 1), true, false, true, false},
		{"etcd client request", tcpFrame(t, "192.168.77.1", "192.168.77.250", 40000, 2379, nil), true, false, false, true},
		{"etcd peer reply", tcpFrame(t, "192.168.77.250", "192.168.77.1", 2380, 40000, nil), true, false, false, true},
		{"2379 on a host that is not etcd", tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 2379, nil), true, false, false, false},
		{"UDP to etcd's port", udpFrame(t, "192.168.77.1", "192.168.77.250", 40000, 2379, nil), true, false, false, false},
		{"etcd over IPv6", etcd6, true, false, false, true},
	}
	for _, c := range cases {
		for _, m := range []struct {
			cl   *classifier
			want bool
			what string
		}{
			{newClassifier(MatchAll, overlay, control), c.all, "all"},
			{newClassifier("", overlay, control), c.all, "default"},
			{newClassifier(MatchOverlay, overlay, control), c.overlay, "overlay (udp port)"},
			{newClassifier(MatchOverlay, hostgw, control), c.hostgw, "overlay (host-gw network)"},
			{newClassifier(MatchControl, overlay, control), c.control, "control"},
		} {
			if got := m.cl.matches(c.frame); got != m.want {
				t.Errorf("%s, match %s: %v, want %v", c.name, m.what, got, m.want)
			}
		}
	}
	// Without etcd addresses control matches the ports on any address.
	anyEtcd := newClassifier(MatchControl, overlay, ControlMatch{})
	if !anyEtcd.matches(tcpFrame(t, "192.168.77.1", "192.168.77.2", 40000, 2379, nil)) {
		t.Error("control without etcd addresses: TCP to 2379 not matched")
	}
	for _, short := range [][]byte{nil, make([]byte, 13), make([]byte, 20)} {
		if newClassifier(MatchAll, overlay, control).matches(short) {
			t.Errorf("a %d-byte frame matched", len(short))
		}
	}
}
