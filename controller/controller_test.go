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
	if !d.Changed || d.Split != 1 || !strings.Contains(d.Reason, "no split is predicted to reach") {
		t.Fatalf("%+v", d)
	}
	// At the fastest split it holds, still explaining why.
	for i := 2; i < 20; i++ {
		s2 := snap(time.Duration(i)*p, 1, 50)
		s2.Target = 500
		if d := c.Step(s2); d.Changed || !strings.Contains(d.Reason, "no split is predicted to reach") {
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

// A device that runs W frames through its stages at once (each on its own
// core) makes W times the frames of one: the device part of split k is
// W × 1000 ÷ (overhead + stages 1..k) fps.
func TestPredictDividesTheDeviceByItsWorkers(t *testing.T) {
	s := snap(0, 3, 0)
	s.OverheadMS = 5
	one := Predict(s, 3)
	s.DeviceWorkers = 4
	four := Predict(s, 3)
	if four.DeviceMS != 35 || math.Abs(four.FPS-4000.0/35) > 1e-9 || four.Bottleneck != "device" {
		t.Errorf("4 workers: %+v, want %.1f fps from the device", four, 4000.0/35)
	}
	if math.Abs(four.FPS-4*one.FPS) > 1e-9 {
		t.Errorf("4 workers %.2f fps, 1 worker %.2f", four.FPS, one.FPS)
	}
	s.DeviceWorkers = 0 // unknown (an older device): one worker
	if p := Predict(s, 3); p.FPS != one.FPS {
		t.Errorf("0 workers: %.2f fps, want %.2f as with one", p.FPS, one.FPS)
	}
	s.DeviceWorkers, s.SourceFPS = 4, 30 // still capped by the source
	if p := Predict(s, 3); p.FPS != 30 || p.Bottleneck != "source" {
		t.Errorf("source-bound: %+v", p)
	}
}

// The controller offloads only as far as the device's workers need: at
// split 6 one worker takes 60 ms per frame (16.7 fps), four take 15 ms.
func TestWorkersKeepWorkOnTheDevice(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	four := func(now time.Duration, split int, measured float64) Snapshot {
		s := snap(now, split, measured)
		s.Target = 50 // needs 55 fps to qualify: 1 worker ≤ 18 ms (split 1), 4 workers ≤ 72 ms (split 6)
		s.DeviceWorkers = 4
		return s
	}
	// Measured below the target at split 3 (say the source was slow): the
	// model that knows the workers has no smaller split to offer.
	c.Step(four(0, 3, 40))
	if d := c.Step(four(p, 3, 40)); d.Changed {
		t.Errorf("offloaded with 4 workers although no smaller split is predicted faster: %+v", d)
	}
	one := New(Params{})
	s := four(0, 3, 40)
	s.DeviceWorkers = 1
	one.Step(s)
	s.Now = p
	if d := one.Step(s); !d.Changed || d.Split != 1 {
		t.Errorf("1 worker: %+v, want an offload to split 1", d)
	}
	// Meeting the target at split 1, after the dwell the work moves back
	// to split 6 with 4 workers (15 ms per frame ≥ 50 × 1.2 fps).
	c = New(Params{})
	now := time.Duration(0)
	for ; now < c.Params().Dwell; now += p {
		c.Step(four(now, 1, 60))
	}
	if d := c.Step(four(now, 1, 60)); !d.Changed || d.Split != 6 {
		t.Errorf("4 workers meeting the target at split 1: %+v, want a move back to split 6", d)
	}
	one = New(Params{})
	for now = 0; now <= 2*one.Params().Dwell; now += p {
		s := four(now, 1, 60)
		s.DeviceWorkers = 1
		if d := one.Step(s); d.Changed {
			t.Fatalf("1 worker moved back from split 1 although split 2 is predicted at 50 fps: %+v", d)
		}
	}
}

// A thin link behind the gateway: raw frames (splits 1–2) ship 562 KB at
// 1.5 MB/s (2.7 fps); from split 3 the states are small and the device is
// predicted at 24 fps but really delivers 9. The controller leaves split 1
// for the best predicted split, then corrects its device model from the
// measurement instead of believing 24 fps, and stays off the raw-frame
// splits (still the best at 9 fps corrected).
func TestModelCorrectedByMeasurementOnAThinLink(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	link := func(now time.Duration, split int, measured float64) Snapshot {
		s := snap(now, split, measured)
		s.Target = 30
		s.DeviceMS = []float64{5, 20, 16.7, 10, 10, 10, 10} // split 3: 41.7 ms → 24 fps
		s.Bytes = []float64{0, 562500, 1125000, 1500, 500, 300, 300}
		s.UplinkBps = 1.5e6
		return s
	}
	now := time.Duration(0)
	c.Step(link(now, 1, 2.7))
	var d Decision
	for i := 0; i < 3 && !d.Changed; i++ {
		now += p
		d = c.Step(link(now, 1, 2.7))
	}
	if !d.Changed || d.Split != 3 {
		t.Fatalf("at split 1 (2.7 fps, link-bound): %+v", d)
	}
	for i := 0; i < 4; i++ {
		now += p
		d = c.Step(link(now, 3, 9))
		if d.Changed && d.Split <= 2 {
			t.Fatalf("went back to raw frames: %+v", d)
		}
		if strings.Contains(d.Reason, "model corrected") {
			break
		}
	}
	if !strings.Contains(d.Reason, "model corrected: split 3 measured 9.0 fps where 24.0 was predicted (bottleneck device)") {
		t.Fatalf("no correction after measuring 9 fps at split 3: %+v", d)
	}
	if f := c.Corrections()["device"]; math.Abs(f-9.0/24) > 0.01 {
		t.Errorf("device correction %.3f, want %.3f", f, 9.0/24)
	}
	if got := Predict(c.corrected(link(now, 3, 9)), 3).FPS; math.Abs(got-9) > 0.1 {
		t.Errorf("corrected prediction at split 3: %.2f, want 9", got)
	}
	// Measured above the corrected prediction: the correction relaxes.
	for i := 0; i < 3; i++ {
		now += p
		c.Step(link(now, 3, 18))
	}
	if f := c.Corrections()["device"]; f < 0.7 {
		t.Errorf("device correction %.3f after measuring 18 fps, want relaxed toward 1", f)
	}
}

// Below target because the uplink limits the current split, the
// controller keeps more work on the device (a split whose state is small)
// and its reason names the uplink.
func TestUplinkBoundMovesWorkOntoTheDevice(t *testing.T) {
	c := New(Params{})
	p := c.Params().Period
	link := func(now time.Duration, split int, measured float64) Snapshot {
		s := snap(now, split, measured)
		s.DeviceMS = []float64{5, 5, 5, 5, 5, 5, 5} // split 3: 15 ms, 66 fps on the device
		s.Bytes = []float64{0, 500000, 500000, 1500, 500, 300, 300}
		s.UplinkBps = 5e6 // raw frames: 10 fps; the mask: 3333 fps
		return s
	}
	c.Step(link(0, 2, 10))
	d := c.Step(link(p, 2, 10))
	if !d.Changed || d.Split <= 2 || !strings.Contains(d.Reason, "bottleneck uplink") || !strings.Contains(d.Reason, "keeping more work on the device") {
		t.Fatalf("uplink-bound at split 2: %+v, want a move to a larger split naming the uplink", d)
	}
	// The device limits: a larger split is not tried, whatever the model.
	c = New(Params{})
	s := link(0, 3, 10)
	s.UplinkBps = 1e9
	c.Step(s)
	s.Now = p
	if d := c.Step(s); d.Changed && d.Split > 3 {
		t.Errorf("device-bound at split 3 moved work onto the device: %+v", d)
	}
}

// The overhead measured at the current split includes its state's
// encoding; a prediction for another split swaps in that split's.
func TestPredictSwapsTheEncodingTime(t *testing.T) {
	s := snap(0, 3, 0)
	s.OverheadMS = 5 // of which 4 encode the state of split 3
	s.EncodeMS = []float64{0, 0.5, 0.5, 4, 0.2, 0.1, 0.1}
	if p := Predict(s, 3); p.DeviceMS != 35 {
		t.Errorf("split 3: %v ms, want 35 (30 + the measured overhead)", p.DeviceMS)
	}
	if p := Predict(s, 4); math.Abs(p.DeviceMS-41.2) > 1e-9 {
		t.Errorf("split 4: %v ms, want 41.2 (40 + 1 + 0.2)", p.DeviceMS)
	}
	s.EncodeMS = nil
	if p := Predict(s, 4); p.DeviceMS != 45 {
		t.Errorf("without encoding times: %v ms, want 45", p.DeviceMS)
	}
}
