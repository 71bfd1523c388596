package sim

import (
	"strings"
	"testing"

	"github.com/splitpoint/splitpoint/controller"
)

// TestControllerMeetsItsGoals checks the controller's goals on every fixed
// scenario: over feasible phases, ≥ 95 % of periods at target after
// settling; settled within 3 periods after a slowdown and within dwell + 3
// after a recovery; at most 2 split changes per event, feasible or not; and
// cloud CPU per frame at most 1.1× the per-phase oracle's.
func TestControllerMeetsItsGoals(t *testing.T) {
	params := controller.Params{}.Defaults()
	dwellPeriods := int(params.Dwell / params.Period)
	for _, sc := range Scenarios() {
		var ours, base Result
		for _, r := range Evaluate(sc, params) {
			switch r.Policy {
			case "splitpoint":
				ours = r
			case "baseline":
				base = r
			}
		}
		for _, ph := range ours.Phases {
			if ph.Event != nil && ph.Changes > 2 {
				t.Errorf("%s / %s: %d split changes, want ≤ 2", sc.Name, ph.Describe(), ph.Changes)
			}
			if !ph.Feasible {
				continue
			}
			if ph.AtTarget < 0.95 {
				t.Errorf("%s / %s: %.1f%% of periods at target after settling, want ≥ 95%%", sc.Name, ph.Describe(), 100*ph.AtTarget)
			}
			if ph.Event == nil {
				continue
			}
			limit := 3
			if ph.Event.Recovery {
				limit = dwellPeriods + 3
			}
			if ph.Settle < 0 || ph.Settle > limit {
				t.Errorf("%s / %s: settled after %d periods, want ≤ %d", sc.Name, ph.Describe(), ph.Settle, limit)
			}
		}
		if ours.CloudRel > 1.1 {
			t.Errorf("%s: cloud CPU per frame %.2f× the oracle's, want ≤ 1.1×", sc.Name, ours.CloudRel)
		}
		// The baseline never moves work back to the device.
		for i := 1; i < len(base.Run); i++ {
			if base.Run[i].Split > base.Run[i-1].Split {
				t.Fatalf("%s: baseline moved back from %d to %d", sc.Name, base.Run[i-1].Split, base.Run[i].Split)
			}
		}
	}
}

// TestBaselineKeepsPayingForTheCloud shows why the controller exists: after
// the contention is gone, the original policy stays offloaded.
func TestBaselineKeepsPayingForTheCloud(t *testing.T) {
	sc := Scenarios()[0]
	var ours, base float64
	for _, r := range Evaluate(sc, controller.Params{}) {
		switch r.Policy {
		case "splitpoint":
			ours = r.CloudRel
		case "baseline":
			base = r.CloudRel
		}
	}
	if base < 1.5*ours {
		t.Errorf("baseline cloud CPU %.2f×, ours %.2f×: the scenario no longer shows the baseline's cost", base, ours)
	}
}

func TestSimulationIsDeterministic(t *testing.T) {
	var a, b strings.Builder
	Report(&a, controller.Params{})
	Report(&b, controller.Params{})
	if a.String() != b.String() || !strings.Contains(a.String(), "| splitpoint |") {
		t.Error("two runs of the report differ")
	}
}

func TestOracleStaticAndPhases(t *testing.T) {
	p := Balltrack()
	w := base()
	if k, ok := Oracle(p, w, 25, 0.1); k != 6 || !ok {
		t.Errorf("idle device: oracle split %d %v, want 6", k, ok)
	}
	w.Contention = 2
	if k, ok := Oracle(p, w, 25, 0.1); k != 1 || !ok {
		t.Errorf("contended device: oracle split %d %v, want 1", k, ok)
	}
	w.BandwidthBps /= 5
	if _, ok := Oracle(p, w, 25, 0.1); ok {
		t.Error("contended device on a slow link: reported feasible")
	}
	if ph := Phases(Scenarios()[0]); len(ph) != 3 || ph[1].Start != PhaseLen || ph[2].End != 3*PhaseLen {
		t.Errorf("phases %+v", ph)
	}
}
