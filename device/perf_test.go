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
	p.profiled([]time.Duration{10 * ms, 20 * ms, 30 * ms}, []time.Duration{5 * ms, 10 * ms, 15 * ms}, []int{0, 100, 200, 300}, true, 1, t0)
	if p.profileDue(1, time.Minute, t0) {
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
	// After the speed changes a new round is due; stale live figures are
	// estimates again.
	p.requestProfile()
	if !p.profileDue(1, 0, t0) {
		t.Error("no profile due after a speed change")
	}
	stages, _, _ = p.figures(1, 5*time.Second, t0.Add(time.Minute), func(k int) string { return "" })
	if stages[0].Source != wire.Estimated {
		t.Errorf("a stale measurement is still 'measured': %+v", stages[0])
	}
}
