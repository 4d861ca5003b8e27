// Package pcapcheck captures frames on an interface inside a network
// namespace, decodes them, and checks that overlay traffic crosses the wire in
// the encapsulation the backend promises.
//
// The three pieces are independent so each can be used (and tested) alone:
//
//	c, _ := pcapcheck.Start(ctx, "ol-lab-h1", "eth0")  // capture (root)
//	... generate traffic ...
//	frames, err := c.Stop()
//	_ = pcapcheck.WritePcap(dir+"/h1.pcap", frames)      // artifact for humans
//	pkts := pcapcheck.Decode(frames, encap)              // pure, no root
//	rep := pcapcheck.Check(pkts, pcapcheck.Expect{Encap: encap, Echoes: flows})
//	if !rep.OK { fmt.Println(rep.Summary) }
//
// Capture on the underlay side of a host (its uplink veth or the underlay
// bridge): that is where the rule "no container address on the wire" for the
// udp and vxlan backends holds.
package pcapcheck
