package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 5, 1}, 5},
		{[]float64{-1, 1}, 0},
	} {
		in := slices.Clone(tc.xs)
		if got := Median(tc.xs); !near(got, tc.want) {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		if !slices.Equal(in, tc.xs) {
			t.Errorf("Median modified its input: %v became %v", in, tc.xs)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) should be NaN")
	}
}

func TestMinMax(t *testing.T) {
	lo, hi := MinMax([]float64{2, -3, 9, 0})
	if lo != -3 || hi != 9 {
		t.Errorf("MinMax = %v, %v; want -3, 9", lo, hi)
	}
	lo, hi = MinMax(nil)
	if !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("MinMax(nil) = %v, %v; want NaN, NaN", lo, hi)
	}
}

func TestPercentile(t *testing.T) {
	// 1..100: rank p/100*99, interpolated.
	var xs []float64
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	for _, tc := range []struct{ p, want float64 }{
		{0, 1}, {100, 100}, {50, 50.5}, {99, 99.01}, {25, 25.75}, {-5, 1}, {150, 100},
	} {
		if got := Percentile(xs, tc.p); !near(got, tc.want) {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	// Two samples: p99 sits just below the larger one.
	if got := Percentile([]float64{10, 20}, 99); !near(got, 19.9) {
		t.Errorf("Percentile({10,20}, 99) = %v, want 19.9", got)
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("Percentile({7}, 99) = %v, want 7", got)
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile(nil) should be NaN")
	}
	ps := Percentiles(xs, 50, 99, 100)
	if !near(ps[0], 50.5) || !near(ps[1], 99.01) || ps[2] != 100 {
		t.Errorf("Percentiles = %v", ps)
	}
	if ps := Percentiles(nil, 50); !math.IsNaN(ps[0]) {
		t.Errorf("Percentiles(nil) = %v, want NaN", ps)
	}
}

func TestPercentileMonotone(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	xs := make([]float64, 37)
	for i := range xs {
		xs[i] = r.NormFloat64()
	}
	prev := math.Inf(-1)
	for p := 0.0; p <= 100; p += 0.5 {
		v := Percentile(xs, p)
		if v < prev {
			t.Fatalf("Percentile not monotone at p=%v: %v < %v", p, v, prev)
		}
		prev = v
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{9.5, 9.9, 9.7})
	if s != (Summary{Median: 9.7, Min: 9.5, Max: 9.9, N: 3}) {
		t.Errorf("Summarize = %+v", s)
	}
	if s := Summarize(nil); s != (Summary{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", s)
	}
}

func BenchmarkPercentile(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	xs := make([]float64, 200) // one round's RTT probes
	for i := range xs {
		xs[i] = 40 + r.ExpFloat64()*10
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = Percentiles(xs, 50, 99)
	}
}
