package udp

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkUDPRound measures the receive direction's round (udpRound): one
// UDP GRO batch of 32 segments of one TCP flow from a peer is received,
// admitted, merged and written to the device as one large segment. With two
// workers the flow is one of worker 0's, so the stray check runs too. The
// syscalls are in it (one sendmsg, one recvmmsg, one writev, one read), as
// on the real path.
func BenchmarkUDPRound(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			x := newFastFixtureN(b, n, true, true, true)
			var f tcpFlow
			for port := uint16(1000); ; port++ {
				f = tcpFlow{src: "10.10.2.9", dst: "10.10.1.5", sport: port, seq: 1, id: 1}
				if h, _ := flowHash(f.segment(nil, 0, 0, tcpACK)); h%uint32(n) == 0 {
					break
				}
			}
			const segs, size = 32, 1400
			pkts := make([][]byte, segs)
			for i := range pkts {
				pkts[i] = f.segment(testPayload(size, byte(i)), i*size, i, tcpACK)
			}
			w, st, buf := x.ws[0], x.ws[0].newRx(), make([]byte, 1<<17)
			b.SetBytes(segs * size)
			for b.Loop() {
				x.sendSegments(b, pkts)
				for before := x.m.DecapPackets.Load(); x.m.DecapPackets.Load() < before+segs; {
					if _, err := w.udpRound(st, true); err != nil {
						b.Fatal(err)
					}
				}
				for {
					if _, _, err := unix.Recvfrom(x.k.fd, buf, unix.MSG_DONTWAIT); err != nil {
						break
					}
				}
			}
		})
	}
}
