package bench

import (
	"math"
	"testing"

	"github.com/google/pprof/profile"
)

func TestRankFunctions(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	read, write, loop := fn(1, "syscall.read"), fn(2, "syscall.write"), fn(3, "udp.loop")
	loc := func(id uint64, f *profile.Function) *profile.Location {
		return &profile.Location{ID: id, Line: []profile.Line{{Function: f}}}
	}
	lr, lw, ll := loc(1, read), loc(2, write), loc(3, loop)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lr, ll}, Value: []int64{1, 60}},
			{Location: []*profile.Location{lw, ll}, Value: []int64{1, 30}},
			{Location: []*profile.Location{ll}, Value: []int64{1, 10}},
		},
	}
	got := rankFunctions(p, 2)
	if len(got) != 2 {
		t.Fatalf("got %d entries, want the top 2: %+v", len(got), got)
	}
	if got[0].Function != "syscall.read" || math.Abs(got[0].FlatPct-60) > 1e-9 || math.Abs(got[0].CumPct-60) > 1e-9 {
		t.Errorf("first: %+v", got[0])
	}
	if got[1].Function != "syscall.write" || math.Abs(got[1].FlatPct-30) > 1e-9 {
		t.Errorf("second: %+v", got[1])
	}
	all := rankFunctions(p, 10)
	for _, e := range all {
		if e.Function == "udp.loop" && (math.Abs(e.FlatPct-10) > 1e-9 || math.Abs(e.CumPct-100) > 1e-9) {
			t.Errorf("loop: %+v (flat 10, cum 100 expected)", e)
		}
	}
	if rankFunctions(&profile.Profile{SampleType: p.SampleType}, 3) != nil {
		t.Error("an empty profile ranks nothing")
	}
}
