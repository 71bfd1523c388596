package sim

import (
	"fmt"
	"math"
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

// scenario returns the fixed scenario whose name starts with prefix.
func scenario(t *testing.T, prefix string) Scenario {
	t.Helper()
	for _, sc := range Scenarios() {
		if strings.HasPrefix(sc.Name, prefix) {
			return sc
		}
	}
	t.Fatalf("no scenario %q", prefix)
	return Scenario{}
}

func results(sc Scenario) map[string]Result {
	out := map[string]Result{}
	for _, r := range Evaluate(sc, controller.Params{}) {
		out[r.Policy] = r
	}
	return out
}

// A four-worker device whose camera slows below the target: no split can
// meet it, and every split is limited by the camera, so the model that
// knows the device's workers keeps every stage on the device. The model
// that takes the device for one worker predicts split 1 faster, offloads,
// and keeps paying for the cloud after the camera recovers.
func TestFourWorkersKeepTheSplitOnTheDevice(t *testing.T) {
	sc := scenario(t, "4-worker device, the camera")
	r := results(sc)
	ours, one := r["splitpoint"], r["1-worker"]
	if one.Run == nil {
		t.Fatal("no 1-worker run on a 4-worker device")
	}
	for i, p := range ours.Run {
		if p.Split != 6 {
			t.Fatalf("period %d: split %d, want 6 throughout (%s)", i, p.Split, p.Reason)
		}
	}
	offloaded := false
	for _, p := range one.Run[PhaseLen : 2*PhaseLen] {
		offloaded = offloaded || p.Split < 6
	}
	if last := one.Run[len(one.Run)-1]; !offloaded || last.Split == 6 {
		t.Errorf("the one-worker model did not offload (offloaded %v, last split %d): the scenario no longer shows the difference", offloaded, last.Split)
	}
	if one.CloudRel < 10*ours.CloudRel {
		t.Errorf("cloud CPU per frame: one-worker model %.2f×, ours %.2f×", one.CloudRel, ours.CloudRel)
	}
}

// Under heavy contention both models offload; when it is gone only the
// model that knows the device's workers takes the work back.
func TestFourWorkersTakeTheWorkBack(t *testing.T) {
	sc := scenario(t, "4-worker device, contention")
	r := results(sc)
	ours, one := r["splitpoint"], r["1-worker"]
	if got := ours.Run[2*PhaseLen-1].Split; got != 1 {
		t.Errorf("contended: our split %d, want 1", got)
	}
	if got := ours.Run[len(ours.Run)-1].Split; got != 6 {
		t.Errorf("after the contention: our split %d, want 6", got)
	}
	if got := one.Run[len(one.Run)-1].Split; got != 1 {
		t.Errorf("after the contention: the one-worker model's split %d, want 1 (it underestimates the device)", got)
	}
	if one.CloudRel < 1.5*ours.CloudRel {
		t.Errorf("cloud CPU per frame: one-worker model %.2f×, ours %.2f×", one.CloudRel, ours.CloudRel)
	}
}

func TestOracleCountsDeviceWorkers(t *testing.T) {
	p := Balltrack()
	w := base()
	w.Contention = 2 // one frame through six stages: 50 ms
	if k, _ := Oracle(p, w, 25, 0.1); k != 1 {
		t.Errorf("one worker: oracle split %d, want 1", k)
	}
	w.DeviceWorkers = 4 // four at once: 80 fps, 30 from the source
	if k, ok := Oracle(p, w, 25, 0.1); k != 6 || !ok {
		t.Errorf("four workers: oracle split %d %v, want 6", k, ok)
	}
	if fps, _ := trueFPS(p, w, 6); fps != 30 {
		t.Errorf("four workers at split 6: %.1f fps, want 30 (the source)", fps)
	}
	w.SourceFPS = 0
	one := w
	one.DeviceWorkers = 1
	f4, _ := trueFPS(p, w, 6)
	f1, _ := trueFPS(p, one, 6)
	if math.Abs(f4-4*f1) > 1e-9 {
		t.Errorf("device-bound: 4 workers %.2f fps, 1 worker %.2f", f4, f1)
	}
}

// uplinks records the uplink capacity each snapshot tells the policy.
type uplinks struct {
	Static
	seen []float64
}

func (u *uplinks) Step(s controller.Snapshot) controller.Decision {
	u.seen = append(u.seen, s.UplinkBps)
	return u.Static.Step(s)
}

// Devices sharing the gateway's uplink each get an equal part of it: the
// simulated device's rate and what its controller is told, as the gateway
// computes it (capacity ÷ devices).
func TestSharedUplinkIsDividedByTheDevices(t *testing.T) {
	p := Balltrack()
	w := base()
	w.BandwidthBps, w.SourceFPS = 20e6, 0
	alone, _ := trueFPS(p, w, 1)
	w.SharedDevices = 1
	if one, _ := trueFPS(p, w, 1); one != alone {
		t.Errorf("SharedDevices 1: %.2f fps, alone %.2f", one, alone)
	}
	w.SharedDevices = 4
	if four, _ := trueFPS(p, w, 1); math.Abs(four-alone/4) > 1e-9 || math.Abs(four-20e6/4/p.Bytes[1]) > 1e-9 {
		t.Errorf("split 1 on a link shared by 4: %.2f fps, want %.2f", four, alone/4)
	}
	sc := Scenario{Periods: 4, Target: 25, Initial: w, Profile: p, Events: []Event{
		{At: 2, Name: "alone", Apply: func(w *World) { w.SharedDevices = 0 }},
	}}
	u := &uplinks{Static: Static{K: 1}}
	Run(sc, u, controller.Params{}, 1)
	if want := []float64{5e6, 5e6, 20e6, 20e6}; fmt.Sprint(u.seen) != fmt.Sprint(want) {
		t.Errorf("UplinkBps told %v, want %v", u.seen, want)
	}
}

// The shared-uplink scenario's phases: alone, raw frames fit the link with
// the margin; with three devices on it, splits 1–2 are limited by the link
// below the target, and split 3 (the mask) is feasible on the device.
func TestSharedUplinkScenarioPhases(t *testing.T) {
	sc := scenario(t, "shared uplink")
	params := controller.Params{}.Defaults()
	worlds := make([]World, 0, 3)
	for _, ph := range Phases(sc) {
		w := sc.Initial
		for _, e := range sc.Events {
			if e.At <= ph.Start {
				e.Apply(&w)
			}
		}
		worlds = append(worlds, w)
	}
	if len(worlds) != 3 {
		t.Fatalf("%d phases, want 3", len(worlds))
	}
	for _, i := range []int{0, 2} {
		if k, ok := Oracle(sc.Profile, worlds[i], sc.Target, params.Margin); k > 2 || !ok {
			t.Errorf("phase %d (alone on the link): oracle split %d %v, want raw frames (split 1–2)", i, k, ok)
		}
	}
	mid := worlds[1]
	unbounded := mid
	unbounded.BandwidthBps = 0
	for k := 1; k <= 2; k++ {
		fps, _ := trueFPS(sc.Profile, mid, k)
		free, _ := trueFPS(sc.Profile, unbounded, k)
		if fps >= sc.Target || free <= fps {
			t.Errorf("3 devices share: split %d makes %.1f fps (%.1f with an unbounded link): want the link to hold it below %.0f", k, fps, free, sc.Target)
		}
	}
	if fps, _ := trueFPS(sc.Profile, mid, 3); fps < sc.Target/(1-sc.Noise) {
		t.Errorf("3 devices share: split 3 makes %.1f fps, want ≥ %.1f (the target despite noise)", fps, sc.Target/(1-sc.Noise))
	}
	if k, ok := Oracle(sc.Profile, mid, sc.Target, params.Margin); k < 3 || !ok {
		t.Errorf("3 devices share: oracle split %d %v, want ≥ 3", k, ok)
	}
}

// When the shared link pushes the controller off raw frames, its reason
// names the uplink.
func TestSharedUplinkReasonNamesTheUplink(t *testing.T) {
	sc := scenario(t, "shared uplink")
	run := results(sc)["splitpoint"].Run
	for t0 := PhaseLen; t0 < 2*PhaseLen-1; t0++ {
		p := run[t0]
		if p.Split > 2 || run[t0+1].Split <= 2 {
			continue
		}
		if !strings.Contains(p.Reason, "uplink") {
			t.Errorf("period %d: split %d → %d, reason %q does not name the uplink", t0, p.Split, run[t0+1].Split, p.Reason)
		}
		return
	}
	t.Errorf("the controller never left splits 1–2 while 3 devices shared the link")
}
