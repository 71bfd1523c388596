package sim

import (
	"time"

	"github.com/splitpoint/splitpoint/controller"
)

// Baseline is the original framework's policy, kept for comparison: every
// 3 s, offload one more stage when below target; never move back.
type Baseline struct {
	last    time.Duration
	started bool
}

// BaselinePeriod is the original framework's control period.
const BaselinePeriod = 3 * time.Second

// Step decides for one period of the baseline policy.
func (b *Baseline) Step(s controller.Snapshot) controller.Decision {
	if !b.started {
		b.started, b.last = true, s.Now
	}
	if s.Now-b.last < BaselinePeriod {
		return controller.Decision{Split: s.Split, Reason: "baseline: waiting for its 3 s period"}
	}
	b.last = s.Now
	if s.MeasuredFPS < s.Target && s.Split > 1 {
		return controller.Decision{Split: s.Split - 1, Changed: true, Reason: "baseline: below target, offloading one more stage"}
	}
	return controller.Decision{Split: s.Split, Reason: "baseline: holding"}
}
