package udp

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	peerA = netip.MustParseAddrPort("192.168.77.2:8285")
	peerB = netip.MustParseAddrPort("192.168.77.3:8285")
)

type planned struct {
	n    int
	dst  netip.AddrPort
	flow uint32
}

func plan(gso bool, pkts ...planned) []gsoMsg {
	var p gsoPlanner
	for i, x := range pkts {
		p.add(i, x.n, x.dst, x.flow, gso)
	}
	return p.msgs
}

func TestGSOPlannerGroups(t *testing.T) {
	a := func(n int) planned { return planned{n, peerA, 7} }
	b := func(n int) planned { return planned{n, peerB, 7} }
	a2 := func(n int) planned { return planned{n, peerA, 8} }
	type want struct{ first, n, size int }
	cases := []struct {
		name string
		gso  bool
		pkts []planned
		want []want
	}{
		{"one packet", true, []planned{a(100)}, []want{{0, 1, 100}}},
		{"equal sizes share a message", true, []planned{a(1472), a(1472), a(1472)}, []want{{0, 3, 1472}}},
		{"a shorter last packet joins and closes", true, []planned{a(1472), a(1472), a(300), a(300)}, []want{{0, 3, 1472}, {3, 1, 300}}},
		{"a longer packet starts a new message", true, []planned{a(300), a(1472)}, []want{{0, 1, 300}, {1, 1, 1472}}},
		{"another peer starts a new message", true, []planned{a(1472), b(1472), a(1472)}, []want{{0, 1, 1472}, {1, 1, 1472}, {2, 1, 1472}}},
		{"another flow starts a new message", true, []planned{a(1472), a(1472), a2(1472), a2(1472), a(1472)}, []want{{0, 2, 1472}, {2, 2, 1472}, {4, 1, 1472}}},
		{"small equal packets share too", true, []planned{a(40), a(40), a(40), b(40), b(40)}, []want{{0, 3, 40}, {3, 2, 40}}},
		{"without GSO every packet is a message", false, []planned{a(1472), a(1472), a(40)}, []want{{0, 1, 1472}, {1, 1, 1472}, {2, 1, 40}}},
	}
	for _, c := range cases {
		got := plan(c.gso, c.pkts...)
		if len(got) != len(c.want) {
			t.Errorf("%s: %d messages %+v, want %d", c.name, len(got), got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if got[i].first != w.first || got[i].n != w.n || got[i].size != w.size {
				t.Errorf("%s: message %d = %+v, want %+v", c.name, i, got[i], w)
			}
		}
	}
}

func TestGSOPlannerLimits(t *testing.T) {
	// 46 full segments of a 64 KiB TSO batch: 44 fit in one UDP payload.
	var pkts []planned
	for range 46 {
		pkts = append(pkts, planned{1472, peerA, 0})
	}
	msgs := plan(true, pkts...)
	if len(msgs) != 2 || msgs[0].n != maxGSOBytes/1472 || msgs[0].bytes > maxGSOBytes || msgs[1].n != 46-msgs[0].n {
		t.Fatalf("46 × 1472 planned as %+v", msgs)
	}
	// Many tiny packets stop at the segment limit.
	pkts = pkts[:0]
	for range 2*maxGSOSegments + 1 {
		pkts = append(pkts, planned{40, peerA, 0})
	}
	msgs = plan(true, pkts...)
	if len(msgs) != 3 || msgs[0].n != maxGSOSegments || msgs[1].n != maxGSOSegments || msgs[2].n != 1 {
		t.Fatalf("%d × 40 planned as %+v", len(pkts), msgs)
	}
}

// randomPlanned makes n packets of the given sizes, mostly to peerA, of
// one of three flows, mostly in runs of equal sizes and flows, as TSO makes
// them.
func randomPlanned(rng *rand.Rand, sizes []int, n int) []planned {
	var pkts []planned
	for range n {
		dst := peerA
		if rng.IntN(8) == 0 {
			dst = peerB
		}
		sz := sizes[rng.IntN(len(sizes))]
		flow := uint32(rng.IntN(3))
		if rng.IntN(3) > 0 && len(pkts) > 0 {
			sz, flow = pkts[len(pkts)-1].n, pkts[len(pkts)-1].flow
		}
		pkts = append(pkts, planned{sz, dst, flow})
	}
	return pkts
}

// TestGSOPlannerInvariants checks, for random batches, what the kernel needs
// of each message and that no message ends without a reason.
func TestGSOPlannerInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{20, 40, 52, 576, 1400, 1471, 1472}
	for round := range 2000 {
		pkts := randomPlanned(rng, sizes, 1+rng.IntN(200))
		gso := round%5 != 0
		msgs := plan(gso, pkts...)
		next := 0
		for i, m := range msgs {
			if m.first != next || m.n < 1 {
				t.Fatalf("round %d: message %d %+v does not continue at packet %d", round, i, m, next)
			}
			if !gso && m.n != 1 {
				t.Fatalf("round %d: %d packets in one message without GSO", round, m.n)
			}
			if m.n > maxGSOSegments || m.bytes > maxGSOBytes {
				t.Fatalf("round %d: message %+v over the kernel's limits", round, m)
			}
			sum := 0
			for j := m.first; j < m.first+m.n; j++ {
				p := pkts[j]
				sum += p.n
				switch {
				case p.dst != m.dst:
					t.Fatalf("round %d: packet %d to %s in a message to %s", round, j, p.dst, m.dst)
				case p.flow != m.flow:
					t.Fatalf("round %d: packet %d of flow %d in a message of flow %d", round, j, p.flow, m.flow)
				case j < m.first+m.n-1 && p.n != m.size:
					t.Fatalf("round %d: packet %d of %d bytes inside a message of %d-byte segments", round, j, p.n, m.size)
				case p.n > m.size:
					t.Fatalf("round %d: last packet %d of %d bytes > segment %d", round, j, p.n, m.size)
				}
			}
			if sum != m.bytes || m.size != pkts[m.first].n {
				t.Fatalf("round %d: message %+v: bytes %d, first packet %d", round, m, sum, pkts[m.first].n)
			}
			// Greedy: the next packet would have fitted only if a limit stopped it.
			if gso && i+1 < len(msgs) {
				p := pkts[m.first+m.n]
				last := pkts[m.first+m.n-1]
				fits := p.dst == m.dst && p.flow == m.flow && p.n <= m.size && last.n == m.size
				if fits && m.n < maxGSOSegments && m.bytes+p.n <= maxGSOBytes {
					t.Fatalf("round %d: message %+v ended although packet %+v fits", round, m, p)
				}
			}
			next += m.n
		}
		if next != len(pkts) {
			t.Fatalf("round %d: %d of %d packets planned", round, next, len(pkts))
		}
	}
}

func TestGSOPlannerUnbundle(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	sizes := []int{52, 60, 300, 1400, 1472}
	for round := range 2000 {
		pkts := randomPlanned(rng, sizes, 1+rng.IntN(100))
		before := plan(true, pkts...)
		var p gsoPlanner
		p.msgs = append(p.msgs, before...)
		p.unbundle(1472, func(i int) int { return pkts[i].n })
		// Every message is one packet or longer than one datagram can be,
		// the packets stay in order, and big messages are untouched.
		next := 0
		var kept []gsoMsg
		for _, m := range p.msgs {
			if m.first != next {
				t.Fatalf("round %d: message %+v does not continue at packet %d", round, m, next)
			}
			if m.n > 1 && m.bytes <= 1472 {
				t.Fatalf("round %d: small message %+v left bundled", round, m)
			}
			if m.n == 1 && (m.size != pkts[m.first].n || m.bytes != pkts[m.first].n || m.dst != pkts[m.first].dst || m.flow != pkts[m.first].flow) {
				t.Fatalf("round %d: single message %+v for packet %+v", round, m, pkts[m.first])
			}
			if m.bytes > 1472 || m.n > 1 {
				kept = append(kept, m)
			}
			next += m.n
		}
		if next != len(pkts) {
			t.Fatalf("round %d: %d of %d packets", round, next, len(pkts))
		}
		var big []gsoMsg
		for _, m := range before {
			if m.bytes > 1472 {
				big = append(big, m)
			}
		}
		if len(big) != len(kept) {
			t.Fatalf("round %d: %d large messages before, %d after", round, len(big), len(kept))
		}
		for i := range big {
			if big[i] != kept[i] {
				t.Fatalf("round %d: large message %+v became %+v", round, big[i], kept[i])
			}
		}
	}
}

// cmsg appends one control message as the kernel lays it out.
func cmsg(b []byte, level, typ int32, data []byte) []byte {
	space := unix.CmsgSpace(len(data))
	off := len(b)
	b = append(b, make([]byte, space)...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[off]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[off+unix.CmsgLen(0):], data)
	return b
}

func groPayload(size uint32) []byte {
	return (*[4]byte)(unsafe.Pointer(&size))[:]
}

func TestGROSize(t *testing.T) {
	gro := cmsg(nil, unix.SOL_UDP, unix.UDP_GRO, groPayload(1472))
	if got := groSize(gro); got != 1472 {
		t.Errorf("UDP_GRO 1472 parsed as %d", got)
	}
	// After another message (a timestamp, say), and with two unrelated ones.
	other := cmsg(nil, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, make([]byte, 16))
	if got := groSize(append(append([]byte(nil), other...), gro...)); got != 1472 {
		t.Errorf("UDP_GRO after SO_TIMESTAMPNS parsed as %d", got)
	}
	odd := cmsg(nil, unix.SOL_IP, unix.IP_TTL, []byte{64}) // 1 byte of data: padded
	if got := groSize(append(append(append([]byte(nil), odd...), other...), cmsg(nil, unix.SOL_UDP, unix.UDP_GRO, groPayload(9000))...)); got != 9000 {
		t.Errorf("UDP_GRO after padded messages parsed as %d", got)
	}
	// No GRO message, or a broken buffer: 0, never a panic.
	broken := map[string][]byte{
		"empty":        nil,
		"other only":   other,
		"short header": gro[:unix.CmsgLen(0)-1],
		"short data":   gro[:unix.CmsgLen(0)+2],
		"len too small": func() []byte {
			b := append([]byte(nil), gro...)
			(*unix.Cmsghdr)(unsafe.Pointer(&b[0])).SetLen(3)
			return b
		}(),
		"len too big": func() []byte {
			b := append([]byte(nil), gro...)
			(*unix.Cmsghdr)(unsafe.Pointer(&b[0])).SetLen(1 << 20)
			return b
		}(),
		"wrong level": cmsg(nil, unix.SOL_IP, unix.UDP_GRO, groPayload(1472)),
	}
	for name, b := range broken {
		if got := groSize(b); got != 0 {
			t.Errorf("%s: parsed %d", name, got)
		}
	}
}

func TestPutUDPSegment(t *testing.T) {
	b := make([]byte, cmsgSpace)
	n := putUDPSegment(b, 1472)
	if n != unix.CmsgSpace(2) {
		t.Fatalf("length %d", n)
	}
	msgs, err := unix.ParseSocketControlMessage(b[:n])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("parse: %v %v", msgs, err)
	}
	m := msgs[0]
	if m.Header.Level != unix.SOL_UDP || m.Header.Type != unix.UDP_SEGMENT || len(m.Data) < 2 ||
		*(*uint16)(unsafe.Pointer(&m.Data[0])) != 1472 {
		t.Fatalf("got %+v % x", m.Header, m.Data)
	}
}

func FuzzGROSize(f *testing.F) {
	f.Add(cmsg(nil, unix.SOL_UDP, unix.UDP_GRO, groPayload(1472)))
	f.Add(cmsg(cmsg(nil, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, make([]byte, 16)), unix.SOL_UDP, unix.UDP_GRO, groPayload(7)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Aligned, as the kernel's buffer is.
		a := make([]uint64, (len(b)+7)/8)
		buf := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(a))), len(a)*8)[:len(b)]
		copy(buf, b)
		groSize(buf)
	})
}

func TestNextSegment(t *testing.T) {
	data := make([]byte, 1472*3+100)
	for i := range data {
		data[i] = byte(i)
	}
	for _, c := range []struct {
		size int
		want []int
	}{
		{1472, []int{1472, 1472, 1472, 100}},
		{0, []int{len(data)}},
		{len(data), []int{len(data)}},
		{len(data) + 1, []int{len(data)}},
		{1, nil}, // checked by count below
	} {
		var got []int
		off := 0
		for rest := data; len(rest) > 0; {
			var seg []byte
			seg, rest = nextSegment(rest, c.size)
			if &seg[0] != &data[off] {
				t.Fatalf("size %d: segment at the wrong place", c.size)
			}
			off += len(seg)
			got = append(got, len(seg))
		}
		if off != len(data) {
			t.Fatalf("size %d: covered %d of %d bytes", c.size, off, len(data))
		}
		if c.want != nil && !equalInts(got, c.want) {
			t.Errorf("size %d: segments %v, want %v", c.size, got, c.want)
		}
		if c.size == 1 && len(got) != len(data) {
			t.Errorf("size 1: %d segments", len(got))
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseOffloads(t *testing.T) {
	for in, want := range map[string]offloads{
		"":            {true, true, true},
		"all":         {true, true, true},
		"none":        {},
		"tun":         {tun: true},
		"gso,gro":     {gso: true, gro: true},
		" tun , gro ": {tun: true, gro: true},
	} {
		got, err := parseOffloads(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"off", "tun,tso", "gso,"} {
		if _, err := parseOffloads(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSockaddr(t *testing.T) {
	var sa unix.RawSockaddrInet4
	setSockaddr(&sa, netip.MustParseAddrPort("192.168.77.3:8285"))
	b := (*[unix.SizeofSockaddrInet4]byte)(unsafe.Pointer(&sa))
	if sa.Family != unix.AF_INET || b[2] != 0x20 || b[3] != 0x5d || b[4] != 192 || b[7] != 3 {
		t.Fatalf("sockaddr % x", b[:])
	}
	if a := sockaddrAddr(&sa); a != netip.MustParseAddr("192.168.77.3") {
		t.Fatalf("address back: %s", a)
	}
}
