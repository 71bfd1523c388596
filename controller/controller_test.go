package controller

import (
	"math"
	"strings"
	"testing"
	"time"
)

// snap is a device whose stages cost 10 ms each on the device and 1 ms in
// the cloud, shipping 1000 bytes at every split over a fast link.
func snap(now time.Duration, split int, measured float64) Snapshot {
	return Snapshot{
		Now: now, Split: split, Stages: 7, Target: 20, MeasuredFPS: measured,
		DeviceMS:     []float64{10, 10, 10, 10, 10, 10, 10},
		CloudMS:      []float64{1, 1, 1, 1, 1, 1, 1},
		CloudWorkers: 1,
		Bytes:        []float64{0, 1000, 1000, 1000, 1000, 1000, 1000},
		UplinkBps:    1e9,
		CloudOnline:  true,
	}
}

func TestPredict(t *testing.T) {
	s := snap(0, 3, 0)
	s.OverheadMS = 5
	p := Predict(s, 3)
	if p.DeviceMS != 35 || p.CloudMS != 4 || math.Abs(p.FPS-1000.0/35) > 1e-9 || p.Bottleneck != "device" {
		t.Errorf("%+v", p)
	}
	s.UplinkBps = 10000 // 1000 bytes → 100 ms
	if p := Predict(s, 3); p.Bottleneck != "uplink" || math.Abs(p.FPS-10) > 1e-9 {
		t.Errorf("uplink-bound: %+v", p)
	}
	s.SourceFPS = 5
	if p := Predict(s, 3); p.FPS != 5 || p.Bottleneck != "source" {
		t.Errorf("source-bound: %+v", p)
	}
}

func TestChoosePrefersLeastCloudWorkThenFewerBytes(t *testing.T) {
	c := New(Params{})
	s := snap(0, 1, 0)
	// 20 fps × 1.1 needs ≤ 45 ms on the device: splits 1..4.
	if p, ok := c.Choose(s, 1.1); !ok || p.Split != 4 {
		t.Errorf("chose %+v, want split 4", p)
	}
	// Split 3's cloud time is within 5 % of split 4's and ships fewer bytes.
	s.CloudMS = []float64{1, 1, 1, 0.001, 1, 1, 1} // split 3: 3.001 ms, split 4: 3 ms
	s.Bytes = []float64{0, 1000, 1000, 10, 1000, 1000, 1000}
	if p, ok := c.Choose(s, 1.1); !ok || p.Split != 3 {
		t.Errorf("chose %+v, want split 3 (tie on cloud time, fewer bytes)", p)
	}
	s.Target = 1000
	if _, ok := c.Choose(s, 1.1); ok {
		t.Error("an impossible target was met")
	}
}

func TestOffloadsAfterSustainedShortfallOnly(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	// At split 6 the device manages 1000/60 ≈ 16.7 fps < 20.
	if d := c.Step(snap(0, 6, 16.7)); d.Changed {
		t.Fatalf("offloaded after one period: %+v", d)
	}
	if d := c.Step(snap(p, 6, 21)); d.Changed { // recovered: the count restarts
		t.Fatalf("%+v", d)
	}
	if d := c.Step(snap(2*p, 6, 16.7)); d.Changed {
		t.Fatalf("%+v", d)
	}
	d := c.Step(snap(3*p, 6, 16.7))
	if !d.Changed || d.Split != 4 || !strings.Contains(d.Reason, "offloading to split 4") {
		t.Fatalf("after 2 periods below target: %+v", d)
	}
}

func TestMovesBackAfterDwellWithHeadroomAndUndoesAFailedProbe(t *testing.T) {
	c := New(Params{})
	p, dwell := c.Params().Period, c.Params().Dwell
	// Device is now fast (5 ms per stage): split 6 is predicted at 33 fps,
	// enough headroom over 20 × 1.2.
	fast := func(now time.Duration, split int, measured float64) Snapshot {
		s := snap(now, split, measured)
		s.DeviceMS = []float64{5, 5, 5, 5, 5, 5, 5}
		return s
	}
	now := time.Duration(0)
	c.Step(fast(now, 2, 30)) // starts the clock
	for now = p; now < dwell; now += p {
		if d := c.Step(fast(now, 2, 30)); d.Changed {
			t.Fatalf("moved back before the dwell, at %v: %+v", now, d)
		}
	}
	d := c.Step(fast(now, 2, 30))
	if !d.Changed || d.Split != 6 || !strings.Contains(d.Reason, "taking work back") {
		t.Fatalf("after the dwell: %+v", d)
	}
	// The measurement at split 6 fails: undo at once.
	now += p
	d = c.Step(fast(now, 6, 12))
	if !d.Changed || d.Split != 2 || !strings.Contains(d.Reason, "undoing") {
		t.Fatalf("failed probe: %+v", d)
	}
	// The next attempt waits twice the dwell.
	start := now
	for now += p; now-start < 2*dwell; now += p {
		if d := c.Step(fast(now, 2, 30)); d.Changed {
			t.Fatalf("retried after %v, before twice the dwell: %+v", now-start, d)
		}
	}
	if d := c.Step(fast(now, 2, 30)); !d.Changed || d.Split != 6 {
		t.Fatalf("no retry after twice the dwell: %+v", d)
	}
}

func TestInfeasibleTargetPicksFastestAndSaysSo(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	s := snap(0, 6, 10)
	s.Target = 500
	c.Step(s)
	s.Now = p
	d := c.Step(s)
	if !d.Changed || d.Split != 1 || !strings.Contains(d.Reason, "infeasible") {
		t.Fatalf("%+v", d)
	}
	// At the fastest split it holds, still explaining why.
	for i := 2; i < 20; i++ {
		s2 := snap(time.Duration(i)*p, 1, 50)
		s2.Target = 500
		if d := c.Step(s2); d.Changed || !strings.Contains(d.Reason, "infeasible") {
			t.Fatalf("period %d: %+v", i, d)
		}
	}
}

func TestHoldsWithoutCloud(t *testing.T) {
	c := New(Params{})
	for i := 0; i < 20; i++ {
		s := snap(time.Duration(i)*time.Second, 6, 0)
		s.CloudOnline = false
		if d := c.Step(s); d.Changed || !strings.Contains(d.Reason, "no cloudproc") {
			t.Fatalf("%+v", d)
		}
	}
}

func TestNoOscillationAtSteadyState(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	split, changes := 6, 0
	for i := 0; i < 500; i++ {
		s := snap(time.Duration(i)*p, split, 0)
		s.MeasuredFPS = Predict(s, split).FPS * (1 + 0.03*math.Sin(float64(i)))
		if d := c.Step(s); d.Changed {
			changes++
			split = d.Split
		}
	}
	if changes > 1 {
		t.Errorf("%d split changes at steady state, want ≤ 1", changes)
	}
}

func TestStageTimesScalesEstimates(t *testing.T) {
	nan := math.NaN()
	out, scale := StageTimes([]float64{10, 20, 30}, []float64{20, nan, nan})
	if scale != 2 || out[0] != 20 || out[1] != 40 || out[2] != 60 {
		t.Errorf("%v %v", out, scale)
	}
	out, scale = StageTimes([]float64{10, 20}, []float64{nan, nan})
	if scale != 1 || out[1] != 20 {
		t.Errorf("no live stage: %v %v", out, scale)
	}
}
