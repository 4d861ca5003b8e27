// Package bench measures overlaylab: the data plane (TCP throughput, ICMP
// round trips and the agents' CPU and memory, for each backend against a
// no-overlay baseline, in real lab namespaces) and the control plane (many
// lease-only agents against one etcd). It also renders the results as a
// table, JSON and the generated docs/PERFORMANCE.md.
package bench

import (
	"math"
	"slices"
)

// Summary condenses the samples of one metric.
type Summary struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summarize returns the median and the range of xs; N is 0 for no samples.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	lo, hi := MinMax(xs)
	return Summary{Median: Median(xs), Min: lo, Max: hi, N: len(xs)}
}

// Median is the middle sample, or the mean of the two middle ones; NaN for
// no samples. xs is not modified.
func Median(xs []float64) float64 {
	return Percentile(xs, 50)
}

// MinMax returns the smallest and largest sample (NaN, NaN for none).
func MinMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	return slices.Min(xs), slices.Max(xs)
}

// Percentile returns the p-th percentile (0..100) of xs, interpolating
// linearly between the two nearest ranks (rank p/100·(n−1) in sorted
// order, as numpy's default does), so p=50 is the usual median and p=0/100
// are the extremes. NaN for no samples. xs is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	if lo == hi {
		return s[lo]
	}
	frac := rank - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// Percentiles returns several percentiles of xs with one sort.
func Percentiles(xs []float64, ps ...float64) []float64 {
	out := make([]float64, len(ps))
	if len(xs) == 0 {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	for i, p := range ps {
		out[i] = percentileSorted(s, p)
	}
	return out
}
