package device

import (
	"fmt"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/wire"
)

func TestFiguresMarkMeasuredAndEstimated(t *testing.T) {
	p := newPerf([]string{"a", "b", "c", "sink"})
	t0 := time.Now()
	ms := time.Millisecond
	// A profile: 10, 20, 30 ms; boundary bytes 100, 200, 300.
	gen, due := p.profileDue(1, time.Minute, t0)
	if !due {
		t.Fatal("no profile due at start")
	}
	p.profiled(gen, []time.Duration{10 * ms, 20 * ms, 30 * ms}, []time.Duration{5 * ms, 10 * ms, 15 * ms}, []int{0, 100, 200, 300}, []time.Duration{0, ms, 2 * ms, 3 * ms}, true, 1, t0)
	if _, due := p.profileDue(1, time.Minute, t0); due {
		t.Error("a complete round left profiling due")
	}
	// Live: stage a runs twice as slow as profiled (contention).
	for i := 0; i < 50; i++ {
		p.stage(0, 20*ms, 10*ms, t0.Add(time.Second))
	}
	p.bytes(1, 150, t0.Add(time.Second))
	stages, bounds, _ := p.figures(1, 5*time.Second, t0.Add(2*time.Second), func(k int) string { return fmt.Sprint(k) })
	if len(stages) != 3 || stages[0].Source != wire.Measured || stages[1].Source != wire.Estimated {
		t.Fatalf("%+v", stages)
	}
	if stages[0].DeviceMS != 20 || stages[1].DeviceMS != 40 || stages[2].DeviceMS != 60 {
		t.Errorf("estimated stages not scaled by the measured contention: %+v", stages)
	}
	if stages[1].AgeS != 2 || stages[0].AgeS != 1 {
		t.Errorf("ages %+v", stages)
	}
	if bounds[0].Bytes != 150 || bounds[0].Source != wire.Measured || bounds[1].Bytes != 200 || bounds[1].Source != wire.Estimated {
		t.Errorf("boundaries %+v", bounds)
	}
	if bounds[0].EncodeMS != 1 || bounds[1].EncodeMS != 2 || bounds[2].EncodeMS != 3 {
		t.Errorf("profiled encoding times %+v", bounds)
	}
	// After the speed changes a new round is due; stale live figures are
	// estimates again.
	p.requestProfile()
	if _, due := p.profileDue(1, 0, t0); !due {
		t.Error("no profile due after a speed change")
	}
	stages, _, _ = p.figures(1, 5*time.Second, t0.Add(time.Minute), func(k int) string { return "" })
	if stages[0].Source != wire.Estimated {
		t.Errorf("a stale measurement is still 'measured': %+v", stages[0])
	}
}

// Frames are profiled on several workers at once: a round hands out only
// the passes it still needs, and a pass of an earlier round (the speed
// changed while it ran) does not count in the new one.
func TestProfilePassesAreHandedOutOnce(t *testing.T) {
	p := newPerf([]string{"a", "b", "sink"})
	t0 := time.Now()
	ms := time.Millisecond
	var gens []uint64
	for range 10 { // ten frames dispatched before any pass reports
		if gen, due := p.profileDue(3, time.Minute, t0); due {
			gens = append(gens, gen)
		}
	}
	if len(gens) != 3 {
		t.Fatalf("%d passes handed out for a round of 3", len(gens))
	}
	// The first pass fails (filtered early): one more is handed out.
	p.profiled(gens[0], []time.Duration{ms}, []time.Duration{ms}, []int{0, 0, 0}, nil, false, 3, t0)
	gen, due := p.profileDue(3, time.Minute, t0)
	if !due || gen != gens[0] {
		t.Fatal("an incomplete pass was not replaced")
	}
	// The speed changes: the passes still running belong to the old round.
	p.requestProfile()
	old := []time.Duration{100 * ms, 100 * ms}
	for _, g := range append(gens[1:], gen) {
		p.profiled(g, old, old, []int{0, 1, 1}, nil, true, 3, t0)
	}
	if stages, _, _ := p.figures(0, time.Second, t0, func(int) string { return "" }); stages[0].DeviceMS != 1 || stages[1].AgeS != -1 {
		t.Errorf("a pass of the old round counted in the new one: %+v", stages[0])
	}
	n := 0
	for range 10 {
		if g, due := p.profileDue(3, time.Minute, t0); due {
			n++
			p.profiled(g, []time.Duration{ms, 2 * ms}, []time.Duration{ms, 2 * ms}, []int{0, 1, 1}, nil, true, 3, t0)
		}
	}
	if n != 3 {
		t.Errorf("the new round took %d passes, want 3", n)
	}
	if stages, _, _ := p.figures(0, time.Second, t0, func(int) string { return "" }); stages[1].DeviceMS != 2 {
		t.Errorf("profile %+v, want 2 ms for stage b", stages[1])
	}
}

// A pass handed back unrun (the profiler was busy) does not use up the
// round's attempts: after any number of them the round still profiles
// its frames (before, each counted as a failed attempt, and 30 of them
// ended a round of 3 frames unprofiled).
func TestUnclaimedPassesDoNotEndTheRound(t *testing.T) {
	p := newPerf([]string{"a", "b", "sink"})
	t0 := time.Now()
	for range 100 {
		gen, due := p.profileDue(3, time.Minute, t0)
		if !due {
			t.Fatal("no pass handed out after unclaimed ones")
		}
		p.unclaim(gen)
	}
	for range 3 {
		gen, due := p.profileDue(3, time.Minute, t0)
		if !due {
			t.Fatal("no pass handed out")
		}
		p.profiled(gen, []time.Duration{time.Millisecond, time.Millisecond}, []time.Duration{time.Millisecond, time.Millisecond}, []int{0, 10, 5}, make([]time.Duration, 3), true, 3, t0)
	}
	if _, due := p.profileDue(3, time.Minute, t0); due {
		t.Error("a fourth pass handed out: the round did not end after its 3 frames")
	}
}
