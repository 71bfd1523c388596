package vibration

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/splitpoint/splitpoint/tasks"
)

// Synthetic generates a machine's vibration window by window, with faults
// injected at known windows (the ground truth). Window n is a function of
// the fields, the seed and n alone (math/rand/v2's PCG seeded with
// (Seed, n)), so windows can be generated in any order, any number of
// times. Time runs on across windows: window n covers
// [n·Window, (n+1)·Window) / SampleRate seconds.
//
// The healthy machine: hum at HumHz with harmonics 2× (0.4 of the
// fundamental) and 3× (0.2), amplitude HumAmp on x, 0.7× on y, 0.4× on z,
// scaled per window by a load factor uniform in [1−LoadJitter,
// 1+LoadJitter]; independent white Gaussian noise of NoiseStd on each axis;
// Gravity (a constant) on z.
//
// A faulty window (TruthAt) adds a bearing defect: impacts FaultRate times
// a second (first impact uniform in the first period, each later one
// jittered by ±5 % of the period), each ringing a structural resonance:
// A·e^(−t/FaultDecay)·sin(2π·FaultHz·t), with A uniform in [0.8, 1.2] ×
// FaultAmp on x, 0.6× that on y and 0.3× on z. With the defaults the
// resonance puts about 9 times the healthy noise energy into the 500–900
// Hz band on x, and DefaultOptions' threshold of 4 separates every faulty
// window from every healthy one.
//
// A window with OffAt is all zeros: a sensor that is off. It is never
// faulty.
//
// The values are float32 [Window 3] in m/s². The arithmetic is written to
// be free of fused multiply-adds, but package math's Sin and Exp and
// rand's NormFloat64 are not, so another architecture may (rarely) differ
// in the last bit of a sample. Windows are generated on the device, so
// this never makes two splits disagree.
type Synthetic struct {
	// SampleRate is the sampling rate in Hz (10..100000).
	SampleRate float64
	// Window is the number of samples per window (16..16384).
	Window int
	// Seed selects the noise, load and impacts.
	Seed uint64
	// HumHz is the machine's fundamental in Hz (0 ≤ HumHz; harmonics above
	// SampleRate/2 alias).
	HumHz float64
	// HumAmp is the fundamental's amplitude on x, m/s² (≥ 0).
	HumAmp float64
	// LoadJitter is the per-window relative change of the hum's amplitude
	// (0 ≤ LoadJitter < 1).
	LoadJitter float64
	// NoiseStd is the standard deviation of each axis's noise, m/s² (≥ 0).
	NoiseStd float64
	// Gravity is the constant acceleration on z, m/s².
	Gravity float64
	// FaultEvery makes window n faulty when n % FaultEvery == FaultEvery−1
	// (0: never; ≥ 0).
	FaultEvery int
	// FaultAmp is the mean peak amplitude of an impact on x, m/s² (≥ 0).
	FaultAmp float64
	// FaultHz is the resonance the impacts ring at, Hz (0 < FaultHz <
	// SampleRate/2).
	FaultHz float64
	// FaultRate is the number of impacts per second, Hz (> 0).
	FaultRate float64
	// FaultDecay is the ringing's decay time constant, s (> 0).
	FaultDecay float64
	// OffEvery makes window n all zeros when n % OffEvery == OffEvery−1
	// (0: never; ≥ 0).
	OffEvery int
}

// DefaultSynthetic returns the generator DefaultOptions' baseline was
// calibrated on: 2000 Hz, windows of 1024 samples, 50 Hz hum of 1 m/s²
// with ±20 % load, noise 0.05 m/s², gravity 9.81 m/s², and a fault every
// 5th window (n = 4, 9, 14, …): impacts of 0.5 m/s² at 87 Hz ringing at
// 650 Hz with a 2 ms decay. No window is off.
func DefaultSynthetic(seed uint64) Synthetic {
	return Synthetic{
		SampleRate: 2000,
		Window:     1024,
		Seed:       seed,
		HumHz:      50,
		HumAmp:     1,
		LoadJitter: 0.2,
		NoiseStd:   0.05,
		Gravity:    9.81,
		FaultEvery: 5,
		FaultAmp:   0.5,
		FaultHz:    650,
		FaultRate:  87,
		FaultDecay: 0.002,
	}
}

// Validate reports the first invalid field as "synthetic Field: what is
// allowed".
func (g Synthetic) Validate() error {
	nonneg := func(x float64) bool { return x >= 0 && finite(x) }
	switch {
	case !(g.SampleRate >= 10 && g.SampleRate <= 100000):
		return fmt.Errorf("synthetic SampleRate: must be 10..100000 Hz (got %g)", g.SampleRate)
	case g.Window < MinWindow || g.Window > MaxWindow:
		return fmt.Errorf("synthetic Window: must be %d..%d samples (got %d)", MinWindow, MaxWindow, g.Window)
	case !nonneg(g.HumHz):
		return fmt.Errorf("synthetic HumHz: must be ≥ 0 (got %g)", g.HumHz)
	case !nonneg(g.HumAmp):
		return fmt.Errorf("synthetic HumAmp: must be ≥ 0 (got %g)", g.HumAmp)
	case !(g.LoadJitter >= 0 && g.LoadJitter < 1):
		return fmt.Errorf("synthetic LoadJitter: must be 0 ≤ LoadJitter < 1 (got %g)", g.LoadJitter)
	case !nonneg(g.NoiseStd):
		return fmt.Errorf("synthetic NoiseStd: must be ≥ 0 (got %g)", g.NoiseStd)
	case !finite(g.Gravity):
		return fmt.Errorf("synthetic Gravity: must be finite (got %g)", g.Gravity)
	case g.FaultEvery < 0:
		return fmt.Errorf("synthetic FaultEvery: must be ≥ 0 (got %d)", g.FaultEvery)
	case g.OffEvery < 0:
		return fmt.Errorf("synthetic OffEvery: must be ≥ 0 (got %d)", g.OffEvery)
	}
	if g.FaultEvery > 0 {
		switch {
		case !nonneg(g.FaultAmp):
			return fmt.Errorf("synthetic FaultAmp: must be ≥ 0 (got %g)", g.FaultAmp)
		case !(g.FaultHz > 0 && g.FaultHz < g.SampleRate/2):
			return fmt.Errorf("synthetic FaultHz: must be > 0 and < SampleRate/2 = %g (got %g)", g.SampleRate/2, g.FaultHz)
		case !(g.FaultRate > 0) || !finite(g.FaultRate):
			return fmt.Errorf("synthetic FaultRate: must be > 0 (got %g)", g.FaultRate)
		case !(g.FaultDecay > 0) || !finite(g.FaultDecay):
			return fmt.Errorf("synthetic FaultDecay: must be > 0 s (got %g)", g.FaultDecay)
		}
	}
	return nil
}

// OffAt reports whether window n is all zeros (sensor off).
func (g Synthetic) OffAt(n int) bool {
	return g.OffEvery > 0 && n >= 0 && n%g.OffEvery == g.OffEvery-1
}

// TruthAt reports whether window n carries the injected fault.
func (g Synthetic) TruthAt(n int) bool {
	return g.FaultEvery > 0 && n >= 0 && n%g.FaultEvery == g.FaultEvery-1 && !g.OffAt(n)
}

// WindowDuration is the time one window covers: Window / SampleRate.
func (g Synthetic) WindowDuration() time.Duration {
	return time.Duration(float64(g.Window) / g.SampleRate * float64(time.Second))
}

var (
	humAxisGain   = [axes]float64{1, 0.7, 0.4}
	humAxisPhase  = [axes]float64{0, math.Pi / 2, math.Pi / 4}
	harmonicGain  = [...]float64{1, 0.4, 0.2}
	faultAxisGain = [axes]float64{1, 0.6, 0.3}
)

// WindowAt returns window n (≥ 0): float32 [Window 3], m/s².
func (g Synthetic) WindowAt(n int) (tasks.Array, error) {
	if err := g.Validate(); err != nil {
		return tasks.Array{}, err
	}
	if n < 0 {
		return tasks.Array{}, fmt.Errorf("window %d: must be ≥ 0", n)
	}
	w, fs := g.Window, g.SampleRate
	v := make([]float64, w*axes)
	if !g.OffAt(n) {
		r := rand.New(rand.NewPCG(g.Seed, uint64(n)))
		load := 1 + float64(g.LoadJitter*(float64(2*uniform(r))-1))
		if g.TruthAt(n) {
			g.addFault(v, r)
		}
		for i := 0; i < w; i++ {
			t := float64(n*w+i) / fs
			for a := 0; a < axes; a++ {
				x := v[i*axes+a]
				for h, hg := range harmonicGain {
					amp := float64(load * g.HumAmp * humAxisGain[a] * hg)
					ph := float64(2*math.Pi*float64(h+1)*g.HumHz*t) + humAxisPhase[a]
					x += float64(amp * math.Sin(ph))
				}
				x += float64(g.NoiseStd * r.NormFloat64())
				if a == 2 {
					x += g.Gravity
				}
				v[i*axes+a] = x
			}
		}
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return float32Array(out, w, axes), nil
}

// addFault adds the impacts' ringing of one window to v ([Window 3]).
func (g Synthetic) addFault(v []float64, r *rand.Rand) {
	fs, period := g.SampleRate, 1/g.FaultRate
	end := float64(g.Window) / fs
	ring := int(math.Ceil(float64(10*g.FaultDecay) * fs)) // samples until e^-10
	first := float64(uniform(r) * period)
	for j := 0; ; j++ {
		tj := first + float64(float64(j)*period)
		if j > 0 {
			tj += float64(0.05 * period * (float64(2*uniform(r)) - 1))
		}
		if tj >= end {
			return
		}
		amp := float64(g.FaultAmp * (0.8 + float64(0.4*uniform(r))))
		i0 := int(math.Ceil(tj * fs))
		for i := i0; i < g.Window && i < i0+ring; i++ {
			dt := float64(i)/fs - tj
			x := float64(float64(amp*math.Exp(-dt/g.FaultDecay)) * math.Sin(float64(2*math.Pi*g.FaultHz*dt)))
			for a := 0; a < axes; a++ {
				v[i*axes+a] += float64(x * faultAxisGain[a])
			}
		}
	}
}

// uniform draws from [0, 1). The conversion keeps the compiler from fusing
// rand's internal scaling into the caller's arithmetic (harmless, as that
// product is exact, but this keeps the package free of fused operations).
func uniform(r *rand.Rand) float64 { return float64(r.Float64()) }
