package udp

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// refSum is RFC 1071 done the plain way, 16-bit big-endian words, folded
// but not complemented: the reference for csumAdd and csumFold.
func refSum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestCsumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		for _, fill := range []string{"random", "ones", "zeros"} {
			b := make([]byte, n)
			for i := range b {
				switch fill {
				case "random":
					b[i] = byte(rng.Uint32())
				case "ones":
					b[i] = 0xff
				}
			}
			if got, want := csumFold(csumAdd(0, b)), refSum(b); got != want && !(got == 0xffff && want == 0 || got == 0 && want == 0xffff) {
				t.Fatalf("%s, %d bytes: csum %#04x, reference %#04x", fill, n, got, want)
			}
		}
	}
}

func TestCsumPiecesAddUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 9001)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	want := csumFold(csumAdd(0, b))
	for range 200 {
		// Cut at even offsets, as the datapath does (headers are whole
		// 32-bit words).
		cut1 := rng.IntN(len(b)/2) * 2
		cut2 := cut1 + rng.IntN((len(b)-cut1)/2)*2
		s := csumAdd(0, b[:cut1])
		s = csumAdd(s, b[cut1:cut2])
		s = csumAdd(s, b[cut2:])
		if got := csumFold(s); got != want {
			t.Fatalf("cuts %d,%d: %#04x, whole %#04x", cut1, cut2, got, want)
		}
	}
}

func TestCsumCarryChains(t *testing.T) {
	// Many all-ones words carry on every add.
	b := make([]byte, 4096)
	for i := range b {
		b[i] = 0xff
	}
	s := csumAdd(^uint64(0), b)
	if got := csumFold(s); got != 0xffff && got != 0 {
		t.Fatalf("all ones: %#04x", got)
	}
	if got, want := csumFold(csumAdd(0, []byte{0x12, 0x34, 0x56})), refSum([]byte{0x12, 0x34, 0x56}); got != want {
		t.Fatalf("odd tail: %#04x, want %#04x", got, want)
	}
}

func TestIPv4HeaderChecksum(t *testing.T) {
	ip := inner("10.10.1.2", "10.10.2.2", 40, 0)[:20]
	putIPv4Checksum(ip)
	if refSum(ip) != 0xffff {
		t.Fatalf("header does not verify: %x", ip)
	}
}

func BenchmarkCsum64K(b *testing.B) {
	buf := make([]byte, 65536)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(buf)))
	var s uint64
	for b.Loop() {
		s = csumAdd(s, buf)
	}
	_ = s
}

// unsafeIovBytes is the memory an iovec points at.
func unsafeIovBytes(v unix.Iovec) []byte {
	return unsafe.Slice(v.Base, int(v.Len))
}

// datagrams copies out the batch's datagrams, each from its iovecs.
func (s *sendBatch) datagrams() [][]byte {
	var out [][]byte
	for _, g := range s.dgrams {
		var p []byte
		for _, v := range s.iovs[g.iov0:g.iov1] {
			p = append(p, unsafeIovBytes(v)...)
		}
		out = append(out, p)
	}
	return out
}
