package linkem

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// The seeded decisions. Each direction has one stream per kind of decision
// (loss, duplicate, corrupt, reorder, jitter), a ChaCha8 generator keyed by a
// hash of (seed, direction, kind), and every matched wire packet draws from
// each enabled stream exactly once, in arrival order. So with the same seed
// the n-th matched packet of a direction meets the same fate in every run,
// and the loss pattern does not shift when, say, the jitter changes.

type decisionKind byte

const (
	kindLoss decisionKind = iota + 1
	kindDuplicate
	kindCorrupt
	kindReorder
	kindJitter
)

func stream(seed uint64, dir Direction, k decisionKind) *rand.Rand {
	var in [8 + 8 + 1]byte
	binary.BigEndian.PutUint64(in[:8], seed)
	copy(in[8:16], dir)
	in[16] = byte(k)
	key := sha256.Sum256(append([]byte("overlaylab/linkem\x00"), in[:]...))
	return rand.New(rand.NewChaCha8(key))
}

// dice rolls the decisions of one direction.
type dice struct {
	imp                                 Impairment
	loss, dup, corrupt, reorder, jitter *rand.Rand
}

func newDice(seed uint64, dir Direction, imp Impairment) *dice {
	return &dice{
		imp:     imp,
		loss:    stream(seed, dir, kindLoss),
		dup:     stream(seed, dir, kindDuplicate),
		corrupt: stream(seed, dir, kindCorrupt),
		reorder: stream(seed, dir, kindReorder),
		jitter:  stream(seed, dir, kindJitter),
	}
}

// verdict is the fate of one matched wire packet.
type verdict struct {
	drop, duplicate, reorder bool
	// corruptAt is the byte (counted from the start of the IP packet) whose
	// bit corruptBit flips; -1 for none.
	corruptAt  int
	corruptBit uint8
	jitter     time.Duration
}

func hit(r *rand.Rand, pct float64) bool { return pct > 0 && r.Float64()*100 < pct }

// roll decides the fate of the next matched packet, whose IP packet is
// ipLen bytes long (0: not an IP packet, never corrupted).
func (d *dice) roll(ipLen int) verdict {
	v := verdict{corruptAt: -1}
	if d.imp.Loss > 0 {
		v.drop = hit(d.loss, d.imp.Loss)
	}
	if d.imp.Duplicate > 0 {
		v.duplicate = hit(d.dup, d.imp.Duplicate)
	}
	if d.imp.Corrupt > 0 && hit(d.corrupt, d.imp.Corrupt) && ipLen > 0 {
		v.corruptAt = d.corrupt.IntN(ipLen)
		v.corruptBit = uint8(d.corrupt.IntN(8))
	}
	if d.imp.Reorder > 0 {
		v.reorder = hit(d.reorder, d.imp.Reorder)
	}
	if j := d.imp.Jitter.Std(); j > 0 {
		v.jitter = time.Duration(d.jitter.Int64N(2*int64(j)+1)) - j
	}
	return v
}
