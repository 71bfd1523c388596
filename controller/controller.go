// Package controller chooses a device's split point from telemetry. It is
// pure logic: it is fed snapshots, one per control period, and returns
// decisions with a human-readable reason; the gateway wires it to MQTT and
// the simulator drives it on a virtual clock.
//
// The model: a device runs stages 1..k on its workers (one frame per
// worker at a time, each worker a core), the uplink ships the state at
// boundary k, and the cloud runs stages k+1..n on its workers. These three
// work in a pipeline, so the throughput at split k is bounded by the
// slowest of them: W workers that each take T ms for stages 1..k (plus the
// per-frame overhead) give W × 1000 ÷ T frames per second, not 1000 ÷ T.
// The controller picks the largest k (the least cloud work) predicted to
// meet target × (1 + margin), offloads fast when the target is missed, and
// takes work back only after a dwell, with clear headroom, and on
// probation: a move back that fails its measurement is undone and the next
// attempt waits longer.
package controller

import (
	"fmt"
	"math"
	"time"
)

// Params tune the controller. Zero values take the documented defaults.
type Params struct {
	// Period is the control period (default 2 s). Decisions happen once per
	// period; "sustained" and the dwell are counted in periods.
	Period time.Duration
	// Margin: a split qualifies when predicted fps ≥ target × (1 + Margin)
	// (default 0.10).
	Margin float64
	// Headroom: moving work back needs predicted fps ≥ target × (1 +
	// Headroom) at the larger split (default 0.20).
	Headroom float64
	// Dwell is how long the split must hold, meeting the target, before
	// work is taken back (default 10 s).
	Dwell time.Duration
	// Shortfall is how many consecutive periods below target trigger an
	// offload (default 2).
	Shortfall int
	// Verify is how many periods a move back is on probation (default 2).
	Verify int
	// TieCloud: splits whose cloud time is within this fraction of each
	// other are a tie, resolved by fewer uplink bytes (default 0.05).
	TieCloud float64
	// Smoothing weighs the previous measured fps into the one the
	// controller acts on (0: the last measurement alone; 0.5: half each).
	// Range 0..0.9; it is reset when the split or target changes.
	Smoothing float64
}

// Defaults returns p with zero fields set to the defaults.
func (p Params) Defaults() Params {
	if p.Period <= 0 {
		p.Period = 2 * time.Second
	}
	if p.Margin <= 0 {
		p.Margin = 0.10
	}
	if p.Headroom <= 0 {
		p.Headroom = 0.20
	}
	if p.Dwell <= 0 {
		p.Dwell = 10 * time.Second
	}
	if p.Shortfall <= 0 {
		p.Shortfall = 2
	}
	if p.Verify <= 0 {
		p.Verify = 2
	}
	if p.TieCloud <= 0 {
		p.TieCloud = 0.05
	}
	return p
}

// Snapshot is what the controller knows at one control period.
type Snapshot struct {
	// Now is the time of the snapshot (any monotonic origin).
	Now time.Duration
	// Split is the split the device currently runs; Stages is n.
	Split, Stages int
	// Target is the wanted frames per second; MeasuredFPS what the device
	// achieved over the last period (0 when unknown).
	Target, MeasuredFPS float64
	// SourceFPS bounds any split (a 30 fps camera); 0 means unbounded.
	SourceFPS float64
	// DeviceMS[i] is stage i's time on the device (ms per frame on one
	// worker, with the emulated slowdown), for every stage. OverheadMS is
	// the device's per-frame cost outside stages (encoding, publishing).
	DeviceMS   []float64
	OverheadMS float64
	// DeviceWorkers is how many frames the device runs through its stages
	// at once, each on its own core (0 or less: taken as 1).
	DeviceWorkers float64
	// CloudMS[i] is stage i's CPU time in the cloud (ms per frame);
	// CloudWorkers how many frames the cloud processes at once.
	CloudMS      []float64
	CloudWorkers float64
	// Bytes[k] is the size of the state shipped at split k (index 0 unused).
	Bytes []float64
	// EncodeMS[k] is the device's time to encode the state of split k (ms
	// per frame; nil or 0: unknown). OverheadMS, measured at Split,
	// includes EncodeMS[Split]; a prediction for split k swaps it for
	// EncodeMS[k] (a PNG mask costs more to encode than a few contours).
	EncodeMS []float64
	// UplinkBps is the uplink's capacity in bytes per second (0: unknown,
	// taken as unbounded).
	UplinkBps float64
	// CloudOnline: at least one cloudproc is online.
	CloudOnline bool
}

// Prediction is the model's estimate for one split. DeviceMS and CloudMS
// are the time one frame takes there (not divided by workers).
type Prediction struct {
	Split                       int
	FPS                         float64
	DeviceMS, UplinkMS, CloudMS float64
	Bytes                       float64
	Bottleneck                  string
}

// Predict estimates the throughput of split k.
func Predict(s Snapshot, k int) Prediction {
	p := Prediction{Split: k}
	p.DeviceMS = s.OverheadMS
	if s.Split < len(s.EncodeMS) && k < len(s.EncodeMS) && s.EncodeMS[s.Split] > 0 && s.EncodeMS[k] > 0 {
		p.DeviceMS += s.EncodeMS[k] - math.Min(s.EncodeMS[s.Split], s.OverheadMS)
	}
	for i := 0; i < k && i < len(s.DeviceMS); i++ {
		p.DeviceMS += s.DeviceMS[i]
	}
	for i := k; i < len(s.CloudMS); i++ {
		p.CloudMS += s.CloudMS[i]
	}
	if k < len(s.Bytes) {
		p.Bytes = s.Bytes[k]
	}
	if s.UplinkBps > 0 {
		p.UplinkMS = 1000 * p.Bytes / s.UplinkBps
	}
	limits := []struct {
		name string
		ms   float64
	}{{"device", p.DeviceMS / math.Max(s.DeviceWorkers, 1)}, {"uplink", p.UplinkMS}, {"cloud", p.CloudMS / math.Max(s.CloudWorkers, 1)}}
	worst := 0.0
	for _, l := range limits {
		if l.ms > worst {
			worst, p.Bottleneck = l.ms, l.name
		}
	}
	p.FPS = math.Inf(1)
	if worst > 0 {
		p.FPS = 1000 / worst
	}
	if s.SourceFPS > 0 && s.SourceFPS < p.FPS {
		p.FPS, p.Bottleneck = s.SourceFPS, "source"
	}
	return p
}

// Decision is the controller's answer for one period.
type Decision struct {
	Split        int
	PredictedFPS float64
	Reason       string
	// Changed: Split differs from the snapshot's split.
	Changed bool
}

// Controller is the automatic split policy for one device. It is not safe
// for concurrent use.
type Controller struct {
	p          Params
	lastChange time.Duration
	started    bool
	shortfall  int
	backoff    int // multiplies the dwell after failed probes
	probe      *probe
	lastTarget float64
	smoothed   float64
	lastSplit  int
	// corr scales each part of the model (device, uplink, cloud) by what
	// measurements showed: 1 until the measured rate at a split falls short
	// of the prediction by more than the margin for Shortfall periods; then
	// the predicted bottleneck's rate is scaled to the measurement.
	corr map[string]float64
	miss int
}

// minCorrection bounds how far the model may be corrected down.
const minCorrection = 0.05

// corrected applies the model corrections to a snapshot.
func (c *Controller) corrected(s Snapshot) Snapshot {
	if len(c.corr) == 0 {
		return s
	}
	if f, ok := c.corr["device"]; ok {
		s.DeviceMS = Scale(s.DeviceMS, 1/f)
		s.OverheadMS /= f
	}
	if f, ok := c.corr["cloud"]; ok {
		s.CloudMS = Scale(s.CloudMS, 1/f)
	}
	if f, ok := c.corr["uplink"]; ok && s.UplinkBps > 0 {
		s.UplinkBps *= f
	}
	return s
}

// Scale returns v with every element multiplied by f (a new slice).
func Scale(v []float64, f float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * f
	}
	return out
}

// correct compares the measurement at the current split with the
// (corrected) prediction. While the target is missed (so the pipeline is
// loaded, not waiting for frames) for Shortfall periods with the
// measurement below the prediction by more than the margin, the predicted
// bottleneck is scaled to what was measured (the measured rate bounds the
// slowest part); a measurement above the prediction relaxes that part's
// correction. It returns a note for the decision's reason, or "".
func (c *Controller) correct(s Snapshot) string {
	if s.MeasuredFPS <= 0 || s.Split != c.lastSplit {
		c.miss = 0
		return ""
	}
	p := Predict(c.corrected(s), s.Split)
	if p.FPS <= 0 || p.Bottleneck == "source" {
		return ""
	}
	ratio := s.MeasuredFPS / p.FPS
	if c.corr == nil {
		c.corr = map[string]float64{}
	}
	f, ok := c.corr[p.Bottleneck]
	if !ok {
		f = 1
	}
	switch {
	case ratio < 1-c.p.Margin && s.MeasuredFPS < s.Target:
		if c.miss++; c.miss < c.p.Shortfall {
			return ""
		}
		c.miss = 0
		c.corr[p.Bottleneck] = math.Max(f*ratio, minCorrection)
		return fmt.Sprintf("model corrected: split %d measured %.1f fps where %.1f was predicted (bottleneck %s), so %s is taken %.2f× as fast; ",
			s.Split, s.MeasuredFPS, p.FPS, p.Bottleneck, p.Bottleneck, c.corr[p.Bottleneck])
	case ratio > 1+c.p.Margin && ok:
		c.miss = 0
		if g := math.Min(f*ratio, 1); g >= 1 {
			delete(c.corr, p.Bottleneck)
		} else {
			c.corr[p.Bottleneck] = g
		}
	default:
		c.miss = 0
	}
	return ""
}

// Corrections returns the model corrections in force (part → factor on its
// rate), for reports.
func (c *Controller) Corrections() map[string]float64 {
	out := make(map[string]float64, len(c.corr))
	for k, v := range c.corr {
		out[k] = v
	}
	return out
}

type probe struct {
	from, to int
	left     int
}

// New returns a controller with the given parameters.
func New(p Params) *Controller { return &Controller{p: p.Defaults(), backoff: 1} }

// Params returns the parameters in force.
func (c *Controller) Params() Params { return c.p }

// Reset forgets the history, for example after a manual override ends.
func (c *Controller) Reset() { *c = Controller{p: c.p, backoff: 1} }

// Choose returns the split the model prefers for a target factor: the
// largest split predicted to reach target × factor, preferring fewer uplink
// bytes among splits whose cloud time is within TieCloud of each other; ok
// is false when no split reaches it.
func (c *Controller) Choose(s Snapshot, factor float64) (Prediction, bool) {
	need := s.Target * factor
	var best *Prediction
	for k := s.Stages - 1; k >= 1; k-- {
		p := Predict(s, k)
		if p.FPS < need {
			continue
		}
		if best == nil {
			best = &p
			continue
		}
		// best has the larger split (less cloud work); a smaller split
		// ties when its cloud time is within TieCloud and ships less.
		if p.CloudMS <= best.CloudMS*(1+c.p.TieCloud)+1e-9 && p.Bytes < best.Bytes {
			best = &p
		}
	}
	if best == nil {
		return Prediction{}, false
	}
	return *best, true
}

// fastest returns the split with the best predicted throughput (the
// largest split among equals).
func fastest(s Snapshot) Prediction {
	var best Prediction
	for k := s.Stages - 1; k >= 1; k-- {
		if p := Predict(s, k); p.FPS > best.FPS*(1+1e-9) {
			best = p
		}
	}
	return best
}

func (c *Controller) move(s Snapshot, to int, pred float64, reason string) Decision {
	d := Decision{Split: to, PredictedFPS: pred, Reason: reason, Changed: to != s.Split}
	if d.Changed {
		c.lastChange = s.Now
		c.shortfall = 0
	}
	return d
}

func (c *Controller) hold(s Snapshot, reason string) Decision {
	return Decision{Split: s.Split, PredictedFPS: Predict(s, s.Split).FPS, Reason: reason}
}

// Step decides for one control period.
func (c *Controller) Step(s Snapshot) Decision {
	if !c.started {
		c.started, c.lastChange = true, s.Now
	}
	if s.Target != c.lastTarget {
		c.lastTarget, c.shortfall, c.probe = s.Target, 0, nil
	}
	splitChanged := s.Split != c.lastSplit
	if splitChanged || c.p.Smoothing <= 0 {
		c.smoothed = s.MeasuredFPS
	} else {
		c.smoothed = c.p.Smoothing*c.smoothed + (1-c.p.Smoothing)*s.MeasuredFPS
	}
	s.MeasuredFPS = c.smoothed
	note := ""
	if s.CloudOnline && !splitChanged {
		note = c.correct(s)
	} else {
		c.miss = 0
	}
	c.lastSplit = s.Split
	s = c.corrected(s)
	if note != "" {
		d := c.step(s)
		d.Reason = note + d.Reason
		return d
	}
	return c.step(s)
}

// step decides for one period on the corrected snapshot.
func (c *Controller) step(s Snapshot) Decision {
	if !s.CloudOnline {
		c.shortfall, c.probe = 0, nil
		return c.hold(s, fmt.Sprintf("holding split %d: no cloudproc is online", s.Split))
	}
	if s.Target <= 0 {
		return c.hold(s, "holding: no target set")
	}
	meeting := s.MeasuredFPS >= s.Target
	if meeting {
		c.shortfall = 0
	} else {
		c.shortfall++
	}

	// A move back on probation: undo it as soon as a measurement fails,
	// and wait longer before the next attempt.
	if pr := c.probe; pr != nil && s.Split == pr.to {
		if !meeting && s.MeasuredFPS > 0 {
			c.probe = nil
			c.backoff = min(c.backoff*2, 16)
			return c.move(s, pr.from, Predict(s, pr.from).FPS, fmt.Sprintf(
				"undoing the move back to split %d: measured %.1f fps < target %.1f; next attempt after %v",
				pr.to, s.MeasuredFPS, s.Target, c.p.Dwell*time.Duration(c.backoff)))
		}
		if pr.left--; pr.left <= 0 {
			c.probe, c.backoff = nil, 1
		}
		return c.hold(s, fmt.Sprintf("verifying split %d: measured %.1f fps ≥ target %.1f", s.Split, s.MeasuredFPS, s.Target))
	}
	c.probe = nil

	if c.shortfall >= c.p.Shortfall {
		// The reason names what limits the current split (the device, the
		// uplink, the cloud) as well as the split moved to.
		cur := Predict(s, s.Split)
		// More work on the device helps only when something else limits
		// this split; otherwise the measurement already says it would not.
		up := cur.Bottleneck == "uplink" || cur.Bottleneck == "cloud"
		if p, ok := c.Choose(s, 1+c.p.Margin); ok && (p.Split < s.Split || p.Split > s.Split && up) {
			verb := "offloading to"
			if p.Split > s.Split { // the uplink or the cloud limits this split, not the device
				verb = "keeping more work on the device at"
			}
			return c.move(s, p.Split, p.FPS, fmt.Sprintf(
				"%s split %d: measured %.1f fps < target %.1f for %d periods at split %d (bottleneck %s); split %d is predicted at %.1f fps (bottleneck %s)",
				verb, p.Split, s.MeasuredFPS, s.Target, c.shortfall, s.Split, cur.Bottleneck, p.Split, p.FPS, p.Bottleneck))
		} else if !ok {
			f := fastest(s)
			if f.Split != s.Split && f.FPS > cur.FPS*(1+c.p.Margin) {
				return c.move(s, f.Split, f.FPS, fmt.Sprintf(
					"no split is predicted to reach target %.1f fps with the %.0f%% margin; split %d (bottleneck %s) → split %d, which has the best predicted throughput, %.1f fps (bottleneck %s)",
					s.Target, 100*c.p.Margin, s.Split, cur.Bottleneck, f.Split, f.FPS, f.Bottleneck))
			}
			return c.hold(s, fmt.Sprintf("no split is predicted to reach target %.1f fps with the %.0f%% margin; split %d has the best predicted throughput (%.1f fps, bottleneck %s; measured %.1f)",
				s.Target, 100*c.p.Margin, s.Split, cur.FPS, cur.Bottleneck, s.MeasuredFPS))
		}
		return c.hold(s, fmt.Sprintf("below target (%.1f < %.1f fps, bottleneck %s) but no other split is predicted to do better", s.MeasuredFPS, s.Target, cur.Bottleneck))
	}
	if !meeting {
		if _, ok := c.Choose(s, 1+c.p.Margin); !ok {
			return c.hold(s, fmt.Sprintf("no split is predicted to reach target %.1f fps with the %.0f%% margin; measured %.1f fps at split %d", s.Target, 100*c.p.Margin, s.MeasuredFPS, s.Split))
		}
		return c.hold(s, fmt.Sprintf("below target (%.1f < %.1f fps) for %d period(s); waiting for %d", s.MeasuredFPS, s.Target, c.shortfall, c.p.Shortfall))
	}

	dwell := c.p.Dwell * time.Duration(c.backoff)
	if s.Now-c.lastChange >= dwell {
		if p, ok := c.Choose(s, 1+c.p.Headroom); ok && p.Split > s.Split {
			c.probe = &probe{from: s.Split, to: p.Split, left: c.p.Verify}
			return c.move(s, p.Split, p.FPS, fmt.Sprintf(
				"taking work back to split %d: target %.1f fps met for %v and split %d is predicted at %.1f fps (≥ %.0f%% headroom); on probation for %d periods",
				p.Split, s.Target, (s.Now-c.lastChange).Round(time.Second), p.Split, p.FPS, 100*c.p.Headroom, c.p.Verify))
		}
	}
	return c.hold(s, fmt.Sprintf("meeting target: %.1f fps ≥ %.1f at split %d", s.MeasuredFPS, s.Target, s.Split))
}

// StageTimes merges live measurements with older ones: a stage with a live
// measurement (not NaN) keeps it; the others take their older value (a
// profile) scaled by how much slower or faster the live stages run now than
// their older values say. It returns the merged times and that scale.
func StageTimes(older, live []float64) ([]float64, float64) {
	out := make([]float64, len(older))
	var sumLive, sumOld float64
	for i := range older {
		if i < len(live) && !math.IsNaN(live[i]) {
			sumLive += live[i]
			sumOld += older[i]
		}
	}
	scale := 1.0
	if sumOld > 0 && sumLive > 0 {
		scale = sumLive / sumOld
	}
	for i := range older {
		if i < len(live) && !math.IsNaN(live[i]) {
			out[i] = live[i]
		} else {
			out[i] = older[i] * scale
		}
	}
	return out, scale
}
