package sim

import (
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/controller"
)

func TestBaselineOffloadsOneStageEvery3s(t *testing.T) {
	var b Baseline
	s := controller.Snapshot{Now: 0, Split: 6, Stages: 7, Target: 25, MeasuredFPS: 10}
	b.Step(s)
	s.Now = 2 * time.Second
	if d := b.Step(s); d.Changed {
		t.Fatal("moved before 3 s")
	}
	s.Now = 3 * time.Second
	if d := b.Step(s); !d.Changed || d.Split != 5 {
		t.Fatalf("%+v", d)
	}
}
