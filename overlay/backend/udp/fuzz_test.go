package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/overlaylab/overlaylab/overlay/backend"
)

// fuzzTable is the fixed peer table FuzzReceive admits against: we own
// 10.10.1.0/24, one peer at 192.168.77.2 owns 10.10.2.0/24.
func fuzzTable() (*table, netip.Addr, netip.Prefix, netip.Prefix) {
	own := netip.MustParsePrefix("10.10.1.0/24")
	peer := netip.MustParsePrefix("10.10.2.0/24")
	pub := netip.MustParseAddr("192.168.77.2")
	return &table{
		subnetLen: 24, own: own,
		bySubnet: map[netip.Prefix]route{peer: {subnet: peer, dst: netip.AddrPortFrom(pub, 8285)}},
		byPublic: map[netip.Addr]netip.Prefix{pub: peer},
	}, pub, own, peer
}

// fuzzIPv4 builds a minimal IPv4 packet for the seed corpus.
func fuzzIPv4(src, dst [4]byte, proto byte, payload []byte, opts int) []byte {
	ihl := 20 + 4*opts
	p := make([]byte, ihl+len(payload))
	p[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = 64, proto
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	binary.BigEndian.PutUint16(p[10:12], checksum(p[:ihl]))
	copy(p[ihl:], payload)
	return p
}

// FuzzReceive drives what the datapath does with bytes it did not choose:
// header parsing, the ICMP reply to an unroutable packet, and admission.
func FuzzReceive(f *testing.F) {
	peerSrc, ownDst, other := [4]byte{10, 10, 2, 5}, [4]byte{10, 10, 1, 9}, [4]byte{10, 10, 99, 3}
	echo := []byte{8, 0, 0xf7, 0xf8, 0, 7, 0, 1, 'h', 'i'}
	pub := uint32(192)<<24 | 168<<16 | 77<<8 | 2
	good := fuzzIPv4(peerSrc, ownDst, 1, echo, 0)
	withOpts := fuzzIPv4(peerSrc, ownDst, 17, make([]byte, 12), 10) // IHL 15: a 60-byte header
	icmpErr := fuzzIPv4(ownDst, other, 1, append([]byte{3, 1, 0, 0, 0, 0, 0, 0}, good...), 0)
	frag := fuzzIPv4(peerSrc, other, 6, make([]byte, 20), 0)
	binary.BigEndian.PutUint16(frag[6:8], 0x2000|185) // MF and offset 185
	padded := append(fuzzIPv4(peerSrc, other, 1, nil, 0), 0xaa, 0xbb)
	padded[2], padded[3] = 0, 20 // total 20, datagram 22
	for _, s := range []struct {
		pkt  []byte
		from uint32
	}{
		{good, pub},
		{good, pub + 1},
		{withOpts, pub},
		{fuzzIPv4(peerSrc, other, 1, echo, 0), pub},
		{fuzzIPv4([4]byte{10, 10, 3, 5}, ownDst, 1, echo, 0), pub},
		{fuzzIPv4([4]byte{}, other, 17, nil, 0), 0},
		{fuzzIPv4([4]byte{224, 0, 0, 1}, other, 17, nil, 0), pub},
		{fuzzIPv4([4]byte{255, 255, 255, 255}, other, 17, nil, 0), pub},
		{icmpErr, pub},
		{frag, pub},
		{padded, pub},
		{nil, 0},
		{good[:19], pub},
		{append([]byte{0x60}, good[1:]...), pub},
		{append([]byte{0x44}, good[1:]...), pub},
		{append([]byte{0x4f}, good[1:20]...), pub},
		{good[:len(good)-1], pub},
	} {
		f.Add(s.pkt, s.from)
	}

	tab, pubAddr, own, peer := fuzzTable()
	f.Fuzz(func(t *testing.T, pkt []byte, fromBits uint32) {
		orig := bytes.Clone(pkt)

		src, dst, err := ipv4Addrs(pkt)
		checkIPv4Addrs(t, pkt, src, dst, err)

		out := make([]byte, 128)
		n := netUnreachable(out, pkt)
		checkNetUnreachable(t, pkt, out, n, err)
		// A smaller buffer is refused or filled, never overrun.
		small := make([]byte, 40)
		if m := netUnreachable(small, pkt); m != 0 && (m > len(small) || m != n) {
			t.Fatalf("netUnreachable into %d bytes = %d (into 128: %d)", len(small), m, n)
		}

		if err != nil {
			// The datapath drops it before admission; admit anyway with
			// whatever the address bytes say, which must not panic either.
			var s4, d4 [4]byte
			copy(s4[:], pkt[min(12, len(pkt)):])
			copy(d4[:], pkt[min(16, len(pkt)):])
			src, dst = netip.AddrFrom4(s4), netip.AddrFrom4(d4)
		}
		from := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, fromBits)))
		reason, ok := tab.admit(from, src, dst)
		wantOK := from == pubAddr && peer.Contains(src) && own.Contains(dst)
		switch {
		case ok != wantOK:
			t.Fatalf("admit(%s, %s, %s) = %v, want %v", from, src, dst, ok, wantOK)
		case ok && reason != 0:
			t.Fatalf("admitted with reason %v", reason)
		case !ok && from != pubAddr && reason != backend.DropNotPeer:
			t.Fatalf("datagram from non-peer %s dropped as %v", from, reason)
		case !ok && from == pubAddr && reason != backend.DropSpoofed:
			t.Fatalf("spoofed datagram from the peer dropped as %v", reason)
		}
		if r, found := tab.lookup(dst); found != peer.Contains(dst) || found && r.dst != netip.AddrPortFrom(pubAddr, 8285) {
			t.Fatalf("lookup(%s) = %v, %v", dst, r, found)
		}

		if !bytes.Equal(pkt, orig) {
			t.Fatalf("the input packet was modified")
		}
	})
}

// checkIPv4Addrs recomputes ipv4Addrs' verdict from RFC 791 directly.
func checkIPv4Addrs(t *testing.T, pkt []byte, src, dst netip.Addr, err error) {
	t.Helper()
	var want error
	switch {
	case len(pkt) < 20:
		want = errShort
	case pkt[0]>>4 != 4:
		want = errVersion
	case int(pkt[0]&0xf)*4 < 20 || int(pkt[0]&0xf)*4 > len(pkt):
		want = errIHL
	case int(binary.BigEndian.Uint16(pkt[2:4])) < int(pkt[0]&0xf)*4 || int(binary.BigEndian.Uint16(pkt[2:4])) > len(pkt):
		want = errTotalLen
	}
	if !errors.Is(err, want) || (err == nil) != (want == nil) {
		t.Fatalf("ipv4Addrs(% x) error = %v, want %v", pkt, err, want)
	}
	if err != nil {
		if src.IsValid() || dst.IsValid() {
			t.Fatalf("ipv4Addrs returned addresses %s %s with error %v", src, dst, err)
		}
		return
	}
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		t.Fatalf("accepted a packet of %d bytes, version %d", len(pkt), pkt[0]>>4)
	}
	if src != netip.AddrFrom4([4]byte(pkt[12:16])) || dst != netip.AddrFrom4([4]byte(pkt[16:20])) {
		t.Fatalf("ipv4Addrs = %s, %s; header says %v, %v", src, dst, pkt[12:16], pkt[16:20])
	}
}

// checkNetUnreachable checks an ICMP reply (n > 0) is a well-formed
// "net unreachable" to the sender that quotes the packet, and that packets
// which must not be answered were not.
func checkNetUnreachable(t *testing.T, pkt, out []byte, n int, parseErr error) {
	t.Helper()
	if n == 0 {
		return
	}
	if n < 0 || n > len(out) {
		t.Fatalf("netUnreachable returned length %d for a %d-byte buffer", n, len(out))
	}
	if parseErr != nil {
		t.Fatalf("answered a packet ipv4Addrs rejects (%v)", parseErr)
	}
	r := out[:n]
	if checksum(r[:20]) != 0 {
		t.Fatalf("reply IPv4 header checksum does not verify: % x", r[:20])
	}
	if checksum(r[20:]) != 0 {
		t.Fatalf("reply ICMP checksum does not verify: % x", r[20:])
	}
	rsrc, rdst, err := ipv4Addrs(r)
	if err != nil || r[0] != 0x45 || r[9] != 1 || int(binary.BigEndian.Uint16(r[2:4])) != n {
		t.Fatalf("reply is not a plain IPv4/ICMP packet of its length: % x (%v)", r, err)
	}
	if rsrc != netip.AddrFrom4([4]byte(pkt[16:20])) || rdst != netip.AddrFrom4([4]byte(pkt[12:16])) {
		t.Fatalf("reply %s -> %s does not go back to the sender of %v -> %v", rsrc, rdst, pkt[12:16], pkt[16:20])
	}
	if r[20] != 3 || r[21] != 0 {
		t.Fatalf("reply ICMP type %d code %d, want 3/0", r[20], r[21])
	}
	ihl := int(pkt[0]&0xf) * 4
	quote := r[28:]
	if len(quote) != min(ihl+8, len(pkt)) || !bytes.Equal(quote, pkt[:len(quote)]) {
		t.Fatalf("reply quotes % x, want the header and 8 bytes of % x", quote, pkt)
	}
	// What must never be answered (RFC 1812 4.3.2.7).
	if src := rdst; src.IsUnspecified() || src.IsMulticast() {
		t.Fatalf("answered a packet from %s", src)
	}
	if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		t.Fatalf("answered a non-first fragment")
	}
	if pkt[9] == 1 && len(pkt) > ihl && pkt[ihl] != 0 && pkt[ihl] != 8 {
		t.Fatalf("answered ICMP type %d", pkt[ihl])
	}
	// And the reply, an ICMP error itself, is never answered.
	if m := netUnreachable(make([]byte, 128), r); m != 0 {
		t.Fatalf("an ICMP error would be answered with another (%d bytes)", m)
	}
}
