// Package sim is a deterministic simulator for split controllers: devices
// with per-stage costs and a number of workers (cores), a link with
// bandwidth and round-trip time, possibly shared with other devices behind
// the site's gateway, and a cloud with a number of workers, on a virtual
// clock (nothing sleeps). A scenario changes the world at given periods —
// CPU contention, bandwidth drops, devices joining the shared link, cloud
// slowdowns — and the simulator runs a policy through it, feeding it the
// telemetry a real device, gateway and cloudproc would report.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/splitpoint/splitpoint/controller"
)

// Profile is a pipeline's cost at nominal speed.
type Profile struct {
	Names      []string
	DeviceMS   []float64 // per stage on the device
	CloudMS    []float64 // per stage in the cloud (CPU time)
	Bytes      []float64 // state bytes at split k (index 0 unused)
	OverheadMS float64   // device per-frame cost outside stages
}

// Balltrack is the ball tracker's profile: per-stage times from `go test
// -bench Stage ./tasks/balltrack` on the development machine (640×480), the
// device 8× slower (a Raspberry Pi class CPU), and the state sizes at each
// split with the auto codec from `go run ./bench`.
func Balltrack() Profile {
	cloud := []float64{1.65, 0.97, 0.20, 0.19, 0.026, 0.001, 0.011}
	dev := make([]float64, len(cloud))
	for i, c := range cloud {
		dev[i] = 8 * c
	}
	return Profile{
		Names:      []string{"capture", "hsv", "mask", "contours", "circle", "draw", "sink"},
		DeviceMS:   dev,
		CloudMS:    cloud,
		Bytes:      []float64{0, 562655, 562671, 1489, 551, 266, 282},
		OverheadMS: 1.0,
	}
}

// World is the state of everything outside the controller.
type World struct {
	Contention float64 // device CPU time multiplier (1: idle device)
	// DeviceWorkers is how many frames the device runs through its stages
	// at once, each on its own core (0: one).
	DeviceWorkers float64
	// BandwidthBps is the uplink's capacity, bytes per second: the whole
	// link's when devices share it.
	BandwidthBps float64
	// SharedDevices is how many devices, this one included, stream over
	// the one uplink a site's gateway bridges to the cloud (a count; 0 or
	// 1: this device is alone on it). The others are assumed to stream at
	// the same split and rate as this one, so the link is split equally:
	// this device's uplink rate is BandwidthBps ÷ SharedDevices, and its
	// controller is told UplinkBps = the measured capacity ÷ SharedDevices,
	// as the gateway computes it (gateway/plane.go, control).
	SharedDevices float64
	RTT           time.Duration
	CloudSlow     float64 // cloud CPU time multiplier
	CloudWorkers  float64
	CloudOnline   bool
	SourceFPS     float64
}

// Event changes the world at a period.
type Event struct {
	At   int    // period index
	Name string // shown in the table
	// Recovery marks an event that gives capacity back (its settling goal
	// includes the dwell).
	Recovery bool
	Apply    func(*World)
}

// Scenario is one simulated run.
type Scenario struct {
	Name    string
	Periods int
	Target  float64
	Initial World
	Events  []Event
	Profile Profile
	// Noise is the relative amplitude of measurement noise on fps.
	Noise float64
	Seed  uint64
}

// Policy is a split policy: our controller, the baseline, a static split.
type Policy interface {
	Step(controller.Snapshot) controller.Decision
}

// OneWorker is a policy that models the device as one worker whatever it
// reports: the controller as it was before devices ran frames in parallel.
// The simulator compares it with the real model on multi-core devices.
type OneWorker struct{ C *controller.Controller }

// Step implements Policy.
func (o OneWorker) Step(s controller.Snapshot) controller.Decision {
	s.DeviceWorkers = 1
	return o.C.Step(s)
}

// Static never changes the split.
type Static struct{ K int }

// Step implements Policy.
func (s Static) Step(snap controller.Snapshot) controller.Decision {
	return controller.Decision{Split: s.K, Changed: s.K != snap.Split}
}

// uplinkShare is the part of a link capacity one device gets: the
// capacity ÷ the devices sharing the link (at least one).
func (w World) uplinkShare(capacityBps float64) float64 {
	return capacityBps / math.Max(w.SharedDevices, 1)
}

// trueFPS is the world's real throughput at split k: the slowest of the
// device (its workers each take a frame through stages 1..k), its share of
// the uplink and the cloud (its workers likewise), capped by the source.
func trueFPS(p Profile, w World, k int) (fps, cloudMS float64) {
	dev := p.OverheadMS
	for i := 0; i < k; i++ {
		dev += p.DeviceMS[i] * w.Contention
	}
	dev /= math.Max(w.DeviceWorkers, 1)
	for i := k; i < len(p.CloudMS); i++ {
		cloudMS += p.CloudMS[i] * w.CloudSlow
	}
	up := 0.0
	if w.BandwidthBps > 0 {
		up = 1000 * p.Bytes[k] / w.uplinkShare(w.BandwidthBps)
	}
	worst := math.Max(dev, math.Max(up, cloudMS/math.Max(w.CloudWorkers, 1)))
	fps = 1000 / worst
	if w.SourceFPS > 0 {
		fps = math.Min(fps, w.SourceFPS)
	}
	if !w.CloudOnline {
		fps = 0
	}
	return fps, cloudMS
}

// Oracle returns, for a world, the split with the least cloud work whose
// real throughput reaches target × (1 + margin) — the margin our controller
// keeps against noise — or else the fastest split; feasible tells whether
// any split reaches the target itself.
func Oracle(p Profile, w World, target, margin float64) (k int, feasible bool) {
	best, bestFPS := 0, -1.0
	for k := len(p.DeviceMS) - 1; k >= 1; k-- {
		fps, _ := trueFPS(p, w, k)
		if fps >= target {
			feasible = true
		}
		if fps >= target*(1+margin) {
			return k, true
		}
		if fps > bestFPS*(1+1e-9) {
			best, bestFPS = k, fps
		}
	}
	return best, feasible
}

// Period is one simulated control period.
type Period struct {
	Split    int
	FPS      float64
	CloudMS  float64 // cloud CPU per frame
	Changed  bool
	Reason   string
	Oracle   int
	Feasible bool
}

// Run simulates a policy through a scenario. Decisions take effect at the
// next period; telemetry is what the device and cloudproc would measure.
func Run(sc Scenario, pol Policy, params controller.Params, startSplit int) []Period {
	params = params.Defaults()
	p := sc.Profile
	w := sc.Initial
	rng := rand.New(rand.NewPCG(sc.Seed, 99))
	n := len(p.DeviceMS)
	split := startSplit
	// What the device and gateway know: a device profile (refreshed every
	// profileEvery periods, as the device re-profiles), the last cloud time
	// seen per stage, and the last uplink capacity seen on large messages
	// (the whole link's: the gateway divides it by the devices sharing it,
	// which it knows at once).
	const profileEvery, probeEvery = 15, 5
	devProfile := controller.Scale(p.DeviceMS, w.Contention)
	cloudKnown := make([]float64, n)
	copy(cloudKnown, p.DeviceMS) // never seen in the cloud: the device's own figure
	bwKnown, bwAge := w.BandwidthBps, 0
	out := make([]Period, 0, sc.Periods)
	events := map[int][]Event{}
	for _, e := range sc.Events {
		events[e.At] = append(events[e.At], e)
	}
	for t := 0; t < sc.Periods; t++ {
		for _, e := range events[t] {
			e.Apply(&w)
		}
		fps, cloudMS := trueFPS(p, w, split)
		measured := fps * (1 + sc.Noise*(2*rng.Float64()-1))
		if t%profileEvery == 0 {
			devProfile = controller.Scale(p.DeviceMS, w.Contention)
		}
		liveDev := make([]float64, n)
		liveCloud := make([]float64, n)
		for i := range liveDev {
			liveDev[i], liveCloud[i] = math.NaN(), math.NaN()
			if i < split {
				liveDev[i] = p.DeviceMS[i] * w.Contention
			} else {
				liveCloud[i] = p.CloudMS[i] * w.CloudSlow
				cloudKnown[i] = liveCloud[i]
			}
		}
		devMS, _ := controller.StageTimes(devProfile, liveDev)
		cloudEst, _ := controller.StageTimes(cloudKnown, liveCloud)
		// Large states reveal the uplink's capacity as they go; with small
		// ones the device sends a probe every probeEvery periods.
		if bwAge++; p.Bytes[split] >= 64<<10 || bwAge >= probeEvery {
			bwKnown, bwAge = w.BandwidthBps, 0
		}
		snap := controller.Snapshot{
			Now: time.Duration(t) * params.Period, Split: split, Stages: n,
			Target: sc.Target, MeasuredFPS: measured, SourceFPS: w.SourceFPS,
			DeviceMS: devMS, OverheadMS: p.OverheadMS, DeviceWorkers: w.DeviceWorkers, CloudMS: cloudEst, CloudWorkers: w.CloudWorkers,
			Bytes: p.Bytes, UplinkBps: w.uplinkShare(bwKnown), CloudOnline: w.CloudOnline,
		}
		d := pol.Step(snap)
		ok, feasible := Oracle(p, w, sc.Target, params.Margin)
		out = append(out, Period{Split: split, FPS: measured, CloudMS: cloudMS, Changed: d.Split != split, Reason: d.Reason, Oracle: ok, Feasible: feasible})
		if d.Split >= 1 && d.Split < n {
			split = d.Split
		}
	}
	return out
}

// Phase is the span between two events (or the run's ends).
type Phase struct {
	Start, End int
	Event      *Event // the event that starts the phase (nil for the first)
}

// Phases splits a scenario into phases.
func Phases(sc Scenario) []Phase {
	var out []Phase
	start := 0
	var ev *Event
	for i := range sc.Events {
		e := &sc.Events[i]
		out = append(out, Phase{Start: start, End: e.At, Event: ev})
		start, ev = e.At, e
	}
	return append(out, Phase{Start: start, End: sc.Periods, Event: ev})
}

// PhaseStats are a policy's figures for one phase.
type PhaseStats struct {
	Phase
	Feasible bool
	// Settle is the number of periods from the phase's start until fps is
	// at target and the split no longer changes in the phase; -1: never.
	Settle int
	// AtTarget is the fraction of periods at or above target from Settle
	// to the phase's end.
	AtTarget float64
	Changes  int
}

// Analyse computes per-phase figures.
func Analyse(sc Scenario, run []Period) []PhaseStats {
	var out []PhaseStats
	for _, ph := range Phases(sc) {
		st := PhaseStats{Phase: ph, Settle: -1, Feasible: run[ph.Start].Feasible}
		lastChange := ph.Start - 1
		for t := ph.Start; t < ph.End; t++ {
			if run[t].Changed && t < ph.End-1 {
				st.Changes++
				lastChange = t
			}
		}
		for t := lastChange + 1; t < ph.End; t++ {
			if run[t].FPS >= sc.Target {
				st.Settle = t - ph.Start
				break
			}
		}
		if st.Settle >= 0 {
			at := 0
			for t := ph.Start + st.Settle; t < ph.End; t++ {
				if run[t].FPS >= sc.Target {
					at++
				}
			}
			st.AtTarget = float64(at) / float64(ph.End-ph.Start-st.Settle)
		}
		out = append(out, st)
	}
	return out
}

// CloudPerFrame is the cloud CPU time per frame over a run, in ms.
func CloudPerFrame(run []Period) float64 {
	var cpu, frames float64
	for _, p := range run {
		cpu += p.FPS * p.CloudMS
		frames += p.FPS
	}
	if frames == 0 {
		return 0
	}
	return cpu / frames
}

// NewOracle returns a policy that plays the per-phase oracle: the best
// split of each phase, known in advance, from the phase's first period.
func NewOracle(sc Scenario) Policy { return &oracleRun{sc: sc} }

type oracleRun struct {
	sc Scenario
	t  int
}

func (o *oracleRun) Step(s controller.Snapshot) controller.Decision {
	// The decision applies to the next period: use that period's world.
	o.t++
	w := o.sc.Initial
	for _, e := range o.sc.Events {
		if e.At <= o.t {
			e.Apply(&w)
		}
	}
	k, _ := Oracle(o.sc.Profile, w, o.sc.Target, controller.Params{}.Defaults().Margin)
	return controller.Decision{Split: k, Changed: k != s.Split}
}

// Describe formats a phase's label.
func (p Phase) Describe() string {
	if p.Event == nil {
		return fmt.Sprintf("start (periods %d–%d)", p.Start, p.End-1)
	}
	return fmt.Sprintf("%s (periods %d–%d)", p.Event.Name, p.Start, p.End-1)
}
