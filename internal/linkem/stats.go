package linkem

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Counters count wire packets: a GSO super-frame that crosses whole counts as
// the packets it will be cut into, so that, once the line is empty,
// PacketsIn - DroppedLoss - DroppedQueue - DroppedMTU - Errors + Duplicated =
// PacketsOut.
type Counters struct {
	PacketsIn  uint64 `json:"packetsIn"`
	BytesIn    uint64 `json:"bytesIn"`
	PacketsOut uint64 `json:"packetsOut"`
	BytesOut   uint64 `json:"bytesOut"`
	// Matched is how many of PacketsIn were in the impaired class; the
	// rest passed untouched.
	Matched      uint64 `json:"matched"`
	DroppedLoss  uint64 `json:"droppedLoss"`
	DroppedQueue uint64 `json:"droppedQueue"`
	// DroppedMTU counts wire packets longer than the hop's MTU.
	DroppedMTU uint64 `json:"droppedMTU"`
	Duplicated uint64 `json:"duplicated"`
	Corrupted  uint64 `json:"corrupted"`
	Reordered  uint64 `json:"reordered"`
	// Segmented counts GSO super-frames cut into wire packets here.
	Segmented uint64 `json:"segmented"`
	// Errors counts packets lost to the relay itself (a frame the kernel
	// refused, one too large to read); KernelDrops frames the kernel
	// dropped before the relay read them (socket buffer full).
	Errors      uint64 `json:"errors"`
	KernelDrops uint64 `json:"kernelDrops"`
	// Held is how many packets the delay line holds right now.
	Held uint64 `json:"held"`
}

// Stats is what the stats file holds.
type Stats struct {
	Time time.Time `json:"time"`
	Seed uint64    `json:"seed"`
	Out  Counters  `json:"out"`
	In   Counters  `json:"in"`
}

// counters is the live, atomically updated form of Counters.
type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut    atomic.Uint64
	matched, droppedLoss, droppedQueue          atomic.Uint64
	droppedMTU                                  atomic.Uint64
	duplicated, corrupted, reordered, segmented atomic.Uint64
	errors, kernelDrops                         atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{
		PacketsIn: c.packetsIn.Load(), BytesIn: c.bytesIn.Load(),
		PacketsOut: c.packetsOut.Load(), BytesOut: c.bytesOut.Load(),
		Matched: c.matched.Load(), DroppedLoss: c.droppedLoss.Load(), DroppedQueue: c.droppedQueue.Load(), DroppedMTU: c.droppedMTU.Load(),
		Duplicated: c.duplicated.Load(), Corrupted: c.corrupted.Load(), Reordered: c.reordered.Load(),
		Segmented: c.segmented.Load(), Errors: c.errors.Load(), KernelDrops: c.kernelDrops.Load(),
	}
}

// WriteStats writes s to path atomically (a reader never sees half a file).
func WriteStats(path string, s Stats) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode stats: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".linkem-stats-*")
	if err != nil {
		return fmt.Errorf("write stats %s: %w", path, err)
	}
	_, werr := tmp.Write(append(data, '\n'))
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write stats %s: %w", path, werr)
	}
	return nil
}

// ReadStats reads a stats file.
func ReadStats(path string) (Stats, error) {
	var s Stats
	data, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("read linkem stats: %w", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("read linkem stats %s: %w", path, err)
	}
	return s, nil
}
