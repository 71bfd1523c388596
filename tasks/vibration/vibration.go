// Package vibration is a pipeline that is not vision: anomaly detection on
// a machine's vibration, measured by a 3-axis accelerometer sampled at
// 1–4 kHz. Its six stages are capture → filter → fft → features → score →
// sink; importing the package registers the pipeline "vibration".
//
// The framework fills tasks.FieldSource with one window of samples, a
// float32 array of shape [window 3] (samples × axes x, y, z, in m/s²).
// What crosses each boundary (split k = stages on the device; N = window,
// B = bands; bytes are those of the whole CBOR state with the raw codec,
// options included, for the defaults N = 1024, B = 3; the source window
// itself holds 12 288 B of float32 samples):
//
//	k  next      fields shipped                                  bytes
//	1  filter    signal float64 [N 3]                            24 790
//	2  fft       filtered float64 [N 3]                          24 789
//	3  features  spectrum float32 [N/2+1 3], rms, kurtosis [3]    6 485
//	4  score     bands [B 3], rms, kurtosis, peak_hz [3]            449
//	5  sink      bands, rms, kurtosis, peak_hz, and the numbers   510–514
//	             score, anomaly, worst_band, worst_axis
//
// Stages are stateless across windows: a device's windows may be served
// by different cloud processes at different splits, so nothing is learned
// inside a stage. The healthy baseline the score compares against is part
// of the options (the device's configuration); Calibrate computes one from
// healthy windows. Synthetic generates windows with known faults, and
// ReadCSV / CSVReader read recorded ones.
//
// # Floating point
//
// Results are bit-identical at every split on one machine: every stage is
// a deterministic function of the fields it reads, and the raw codec
// carries float64 and float32 values bit for bit. Across architectures (a
// device on arm64, the cloud on amd64): every product in this package
// that feeds an addition is written float64(x*y), and the explicit
// conversion rounds the product, which the Go spec says prevents the
// compiler from fusing it into a multiply-add (arm64, ppc64le, s390x and
// amd64 with GOAMD64=v3 fuse; the assembly of this package for arm64,
// ppc64le and amd64 v3 holds no fused instruction). So this package's own
// arithmetic gives the same bits everywhere from the same inputs. Two
// things remain outside its control: package math (Sin, Cos, Exp, for the
// filter coefficients, the Hann window and the generator) and gonum's FFT
// are not written that way (gonum's fftpack compiles to a few hundred
// fused instructions on arm64) and may round differently in the last bits
// (relative ≈ 1e-15). The
// spectrum is rounded to float32, which absorbs such differences almost
// always (a float64 error of 1e-15 flips a float32 rounding with a
// probability of order 1e-8 per bin), and the band energies, scores and
// RMS/kurtosis may then differ at the 1e-15 (relative) level between
// architectures: a decision changes only for a score within that of the
// threshold.
package vibration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// Name is the pipeline's registered name.
const Name = "vibration"

// Field names of the pipeline's state, with their types and shapes (N is
// the window, B the number of bands).
const (
	// FieldSignal is the validated window, float64 [N 3], m/s².
	FieldSignal = "signal"
	// FieldFiltered is the band-passed window, float64 [N 3], m/s².
	FieldFiltered = "filtered"
	// FieldSpectrum is the one-sided amplitude spectrum of the Hann-windowed
	// filtered signal, float32 [N/2+1 3], m/s²; bin k is k·sample_rate/N Hz.
	// float32 halves what crosses at split 3 (6 156 B of data instead of
	// 12 312 for N = 1024); its relative precision (6e-8) is far below
	// anything a band energy is compared at, and the rounding happens in
	// the fft stage whatever the split, so results stay identical at every
	// split.
	FieldSpectrum = "spectrum"
	// FieldRMS is the RMS of the filtered signal per axis, float64 [3], m/s².
	FieldRMS = "rms"
	// FieldKurtosis is the kurtosis (m4/m2², 1.5 for a sine, 3 for Gaussian
	// noise) of the filtered signal per axis, float64 [3], dimensionless.
	FieldKurtosis = "kurtosis"
	// FieldBands is the energy (mean-square power) in each configured band
	// per axis, float64 [B 3], (m/s²)².
	FieldBands = "bands"
	// FieldPeakHz is the frequency of the largest spectrum bin above DC per
	// axis (0 for a silent axis), float64 [3], Hz.
	FieldPeakHz = "peak_hz"
	// FieldScore is the anomaly score, a number: the largest ratio of a
	// band's energy to its baseline over bands and axes.
	FieldScore = "score"
	// FieldAnomaly is 1 for an anomalous window and 0 otherwise, a number.
	FieldAnomaly = "anomaly"
	// FieldWorstBand is the 0-based index of the band that set the score, a
	// number.
	FieldWorstBand = "worst_band"
	// FieldWorstAxis is the axis (0 x, 1 y, 2 z) that set the score, a
	// number.
	FieldWorstAxis = "worst_axis"
)

// Limits of the options.
const (
	// MaxWindow is the largest window in samples (the wire's largest
	// dimension).
	MaxWindow = wire.MaxDim
	// MinWindow is the smallest window in samples.
	MinWindow = 16
	// MaxBands is the largest number of bands.
	MaxBands = 16
)

// Options configure the pipeline ([vibration] in the device's config). The
// baseline is the device's own: a machine's healthy vibration, measured
// once (see Calibrate) and configured, since stages learn nothing.
type Options struct {
	// SampleRate is the accelerometer's sampling rate in Hz (10..100000).
	SampleRate float64 `toml:"sample_rate" cbor:"1,keyasint" doc:"sampling rate, Hz (10..100000)"`
	// Window is the number of samples per window, the N of the source's
	// shape [N 3] (16..16384).
	Window int `toml:"window" cbor:"2,keyasint" doc:"samples per window: the N of the source's shape [N 3] (16..16384)"`
	// LowHz is the band-pass filter's high-pass corner in Hz (> 0, < HighHz):
	// it removes gravity and slow drift.
	LowHz float64 `toml:"low_hz" cbor:"3,keyasint" doc:"band-pass high-pass corner, Hz (> 0, < high_hz); removes gravity and drift"`
	// HighHz is the band-pass filter's low-pass corner in Hz (< SampleRate/2).
	HighHz float64 `toml:"high_hz" cbor:"4,keyasint" doc:"band-pass low-pass corner, Hz (< sample_rate/2)"`
	// Bands are the frequency bands [low, high) in Hz whose energies are the
	// features (1..16 bands, 0 ≤ low < high ≤ SampleRate/2, each holding at
	// least one spectrum bin; SampleRate/Window Hz apart).
	Bands [][2]float64 `toml:"bands" cbor:"5,keyasint" doc:"energy bands [low, high), Hz (1..16, within 0..sample_rate/2)"`
	// Baseline is the healthy energy of each band per axis, [len(Bands)][x y z]
	// in (m/s²)², each > 0: typically the mean over healthy windows
	// (Calibrate).
	Baseline [][3]float64 `toml:"baseline" cbor:"6,keyasint" doc:"healthy mean-square energy per band, [x y z] in (m/s²)² each > 0 (vibration.Calibrate computes it)"`
	// Threshold: a window is anomalous when a band's energy on an axis
	// exceeds Threshold × its baseline (> 0; 4 is +6 dB).
	Threshold float64 `toml:"threshold" cbor:"7,keyasint" doc:"anomaly when a band's energy exceeds threshold × its baseline (> 0; 4 is +6 dB)"`
	// KurtosisLimit, when > 0, also flags a window whose kurtosis on an axis
	// exceeds it (impulsive vibration); 0 turns the test off. Must be 0 or
	// > 1.
	KurtosisLimit float64 `toml:"kurtosis_limit" cbor:"8,keyasint" doc:"also anomalous above this kurtosis on an axis (0: off; else > 1)"`
	// MinRange: a window in which every axis spans at most MinRange m/s²
	// (max − min) is a sensor that is off or stuck; capture filters it
	// (≥ 0; 0 filters only constant windows, such as all zeros).
	MinRange float64 `toml:"min_range" cbor:"9,keyasint" doc:"a window whose every axis spans at most this, m/s², is a sensor off: filtered at capture (≥ 0)"`
}

// DefaultOptions returns the documented defaults: 2000 Hz, windows of 1024
// samples (0.512 s), band-pass 10–900 Hz, bands 10–200, 200–500 and
// 500–900 Hz, threshold 4, kurtosis test off, min_range 0. The default
// baseline is that of DefaultSynthetic's healthy machine (the mean over
// 200 healthy windows of seed 1000, rounded up to two digits); a real
// machine needs its own.
func DefaultOptions() *Options {
	return &Options{
		SampleRate: 2000,
		Window:     1024,
		LowHz:      10,
		HighHz:     900,
		Bands:      [][2]float64{{10, 200}, {200, 500}, {500, 900}},
		Baseline:   slices.Clone(defaultBaseline[:]),
		Threshold:  4,
		MinRange:   0,
	}
}

// defaultBaseline is DefaultSynthetic's healthy band energies, (m/s²)².
var defaultBaseline = [...][3]float64{
	{0.62, 0.30, 0.099},
	{0.00074, 0.00074, 0.00075},
	{0.00096, 0.00096, 0.00094},
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Validate implements tasks.Options.
func (o *Options) Validate() error {
	if err := o.validateSignal(); err != nil {
		return err
	}
	if len(o.Baseline) != len(o.Bands) {
		return fmt.Errorf("baseline: must have one [x, y, z] per band, %d (got %d)", len(o.Bands), len(o.Baseline))
	}
	for i, b := range o.Baseline {
		for _, e := range b {
			if !(e > 0) || !finite(e) {
				return fmt.Errorf("baseline[%d]: each energy must be a finite number > 0 (got %v)", i, b)
			}
		}
	}
	switch {
	case !(o.Threshold > 0) || !finite(o.Threshold):
		return fmt.Errorf("threshold: must be a finite number > 0 (got %g)", o.Threshold)
	case !(o.KurtosisLimit == 0 || o.KurtosisLimit > 1) || !finite(o.KurtosisLimit):
		return fmt.Errorf("kurtosis_limit: must be 0 (off) or > 1 (got %g)", o.KurtosisLimit)
	}
	return nil
}

// validateSignal checks every option but the baseline, the threshold and
// the kurtosis limit.
func (o *Options) validateSignal() error {
	nyq := o.SampleRate / 2
	switch {
	case !(o.SampleRate >= 10 && o.SampleRate <= 100000):
		return fmt.Errorf("sample_rate: must be 10..100000 Hz (got %g)", o.SampleRate)
	case o.Window < MinWindow || o.Window > MaxWindow:
		return fmt.Errorf("window: must be %d..%d samples (got %d)", MinWindow, MaxWindow, o.Window)
	case !(o.LowHz > 0) || !finite(o.LowHz):
		return fmt.Errorf("low_hz: must be > 0 Hz (got %g)", o.LowHz)
	case !(o.HighHz > o.LowHz && o.HighHz < nyq):
		return fmt.Errorf("high_hz: must be > low_hz (%g) and < sample_rate/2 (%g) Hz (got %g)", o.LowHz, nyq, o.HighHz)
	case len(o.Bands) < 1 || len(o.Bands) > MaxBands:
		return fmt.Errorf("bands: must list 1..%d bands [low, high] in Hz (got %d)", MaxBands, len(o.Bands))
	case !(o.MinRange >= 0) || !finite(o.MinRange):
		return fmt.Errorf("min_range: must be a finite number ≥ 0 m/s² (got %g)", o.MinRange)
	}
	for i, b := range o.Bands {
		if !(b[0] >= 0 && b[0] < b[1] && b[1] <= nyq) {
			return fmt.Errorf("bands[%d]: must be [low, high] Hz with 0 ≤ low < high ≤ sample_rate/2 = %g (got %v)", i, nyq, b)
		}
		if bandBins(b, o.Window, o.SampleRate) == 0 {
			return fmt.Errorf("bands[%d]: must hold at least one spectrum bin (bins are sample_rate/window = %g Hz apart; got %v)", i, o.SampleRate/float64(o.Window), b)
		}
	}
	return nil
}

func init() {
	tasks.Register(tasks.Spec{
		Name:       Name,
		Summary:    "vibration anomaly detection: check window, band-pass, FFT, RMS/kurtosis/band energies, score against a configured baseline, sink",
		NewOptions: func() tasks.Options { return DefaultOptions() },
		Stages: func(o tasks.Options) ([]tasks.Stage, error) {
			opts, ok := o.(*Options)
			if !ok {
				return nil, fmt.Errorf("vibration: options of type %T", o)
			}
			return Stages(opts), nil
		},
		CheckSource: checkSource,
		OpenSource:  openSource,
		HomeAssistant: tasks.HomeAssistant{Sensors: []tasks.HASensor{
			{Key: "anomaly_score", Name: "Anomaly score", Template: "{{ value_json.score if value_json.score is defined else none }}", Icon: "mdi:alert-decagram"},
			{Key: "rms_x", Name: "Vibration RMS x", Template: "{{ value_json.rms[0] if value_json.rms is defined else none }}", Unit: "m/s²", Icon: "mdi:vibrate"},
			{Key: "rms_y", Name: "Vibration RMS y", Template: "{{ value_json.rms[1] if value_json.rms is defined else none }}", Unit: "m/s²", Icon: "mdi:vibrate"},
			{Key: "rms_z", Name: "Vibration RMS z", Template: "{{ value_json.rms[2] if value_json.rms is defined else none }}", Unit: "m/s²", Icon: "mdi:vibrate"},
		}},
	})
}

// Stages returns the six stages for the given (validated) options. The
// stages keep copies of the options.
func Stages(o *Options) []tasks.Stage {
	c := *o
	c.Bands = slices.Clone(o.Bands)
	c.Baseline = slices.Clone(o.Baseline)
	return []tasks.Stage{
		&capture{o: &c},
		&filter{o: &c},
		&fftStage{o: &c},
		&features{o: &c},
		&score{o: &c},
		&sink{o: &c},
	}
}

// capture checks the source window, filters a sensor that is off, and
// converts the samples to float64.
type capture struct{ o *Options }

func (*capture) Name() string     { return "capture" }
func (*capture) Reads() []string  { return []string{tasks.FieldSource} }
func (*capture) Writes() []string { return []string{FieldSignal} }

func (c *capture) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	src, err := getFloat32s(s, tasks.FieldSource, c.o.Window, axes)
	if err != nil {
		return 0, fmt.Errorf("source window: %w (float32 [window 3] expected, window = %d)", err, c.o.Window)
	}
	lo := [axes]float32{float32(math.Inf(1)), float32(math.Inf(1)), float32(math.Inf(1))}
	hi := [axes]float32{float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))}
	sig := make([]float64, len(src))
	for i, v := range src {
		x := float64(v)
		if !finite(x) {
			return 0, fmt.Errorf("source window: sample %d axis %d is %g", i/axes, i%axes, x)
		}
		a := i % axes
		lo[a], hi[a] = min(lo[a], v), max(hi[a], v)
		sig[i] = x
	}
	s.Delete(tasks.FieldSource)
	off := true
	for a := 0; a < axes; a++ {
		if float64(hi[a])-float64(lo[a]) > c.o.MinRange {
			off = false
		}
	}
	if off {
		return tasks.Filtered, nil
	}
	s.SetArray(FieldSignal, float64Array(sig, c.o.Window, axes))
	return tasks.Continue, nil
}

// filter band-passes each axis.
type filter struct{ o *Options }

func (*filter) Name() string     { return "filter" }
func (*filter) Reads() []string  { return []string{FieldSignal} }
func (*filter) Writes() []string { return []string{FieldFiltered} }

func (f *filter) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	sig, err := getFloat64s(s, FieldSignal, f.o.Window, axes)
	if err != nil {
		return 0, err
	}
	out := bandPass(sig, f.o.LowHz, f.o.HighHz, f.o.SampleRate)
	s.Delete(FieldSignal)
	s.SetArray(FieldFiltered, float64Array(out, f.o.Window, axes))
	return tasks.Continue, nil
}

// fftStage computes the amplitude spectrum and, while the time-domain
// signal is at hand, its RMS and kurtosis, so that the filtered signal
// does not have to cross the wire again at split 3.
type fftStage struct{ o *Options }

func (*fftStage) Name() string    { return "fft" }
func (*fftStage) Reads() []string { return []string{FieldFiltered} }
func (*fftStage) Writes() []string {
	return []string{FieldSpectrum, FieldRMS, FieldKurtosis}
}

func (f *fftStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	sig, err := getFloat64s(s, FieldFiltered, f.o.Window, axes)
	if err != nil {
		return 0, err
	}
	spec := amplitudeSpectrum(sig)
	rms, kurt := moments(sig)
	s.Delete(FieldFiltered)
	s.SetArray(FieldSpectrum, float32Array(spec, spectrumBins(f.o.Window), axes))
	s.SetArray(FieldRMS, float64Array(rms[:], axes))
	s.SetArray(FieldKurtosis, float64Array(kurt[:], axes))
	return tasks.Continue, nil
}

// features sums the spectrum into the configured bands and finds each
// axis's peak frequency.
type features struct{ o *Options }

func (*features) Name() string     { return "features" }
func (*features) Reads() []string  { return []string{FieldSpectrum} }
func (*features) Writes() []string { return []string{FieldBands, FieldPeakHz} }

func (f *features) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	spec, err := getFloat32s(s, FieldSpectrum, spectrumBins(f.o.Window), axes)
	if err != nil {
		return 0, err
	}
	bands := bandEnergies(spec, f.o.Window, f.o.SampleRate, f.o.Bands)
	peak := peakHz(spec, f.o.Window, f.o.SampleRate)
	s.Delete(FieldSpectrum)
	s.SetArray(FieldBands, float64Array(bands, len(f.o.Bands), axes))
	s.SetArray(FieldPeakHz, float64Array(peak[:], axes))
	return tasks.Continue, nil
}

// score compares the band energies with the configured baseline.
type score struct{ o *Options }

func (*score) Name() string    { return "score" }
func (*score) Reads() []string { return []string{FieldBands, FieldKurtosis} }
func (*score) Writes() []string {
	return []string{FieldScore, FieldAnomaly, FieldWorstBand, FieldWorstAxis}
}

func (c *score) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	bands, err := getFloat64s(s, FieldBands, len(c.o.Bands), axes)
	if err != nil {
		return 0, err
	}
	kurt, err := getFloat64s(s, FieldKurtosis, axes)
	if err != nil {
		return 0, err
	}
	sc, band, axis := math.Inf(-1), 0, 0
	for b := range c.o.Bands {
		for a := 0; a < axes; a++ {
			if r := bands[b*axes+a] / c.o.Baseline[b][a]; r > sc {
				sc, band, axis = r, b, a
			}
		}
	}
	anomaly := sc > c.o.Threshold
	if c.o.KurtosisLimit > 0 && slices.Max(kurt) > c.o.KurtosisLimit {
		anomaly = true
	}
	s.SetNum(FieldScore, sc)
	s.SetNum(FieldAnomaly, b2f(anomaly))
	s.SetNum(FieldWorstBand, float64(band))
	s.SetNum(FieldWorstAxis, float64(axis))
	return tasks.Continue, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// axisNames are the axes' names in results, in the order of the arrays'
// last dimension.
var axisNames = [axes]string{"x", "y", "z"}

// Result is the pipeline's part of a result. A window that capture
// filtered (sensor off or stuck) has SensorOff set and only Anomaly
// (false) besides.
type Result struct {
	// Anomaly says whether the window is anomalous.
	Anomaly bool `json:"anomaly"`
	// SensorOff says that every axis spanned at most min_range m/s².
	SensorOff bool `json:"sensor_off"`
	// Score is the largest band energy ÷ baseline over bands and axes.
	Score *float64 `json:"score,omitempty"`
	// WorstBand is the index into the options' bands that set Score.
	WorstBand *int `json:"worst_band,omitempty"`
	// WorstAxis is the axis ("x", "y" or "z") that set Score.
	WorstAxis string `json:"worst_axis,omitempty"`
	// RMS is the band-passed RMS per axis [x y z], m/s².
	RMS []float64 `json:"rms,omitempty"`
	// Kurtosis is the band-passed kurtosis per axis [x y z].
	Kurtosis []float64 `json:"kurtosis,omitempty"`
	// PeakHz is the dominant frequency per axis [x y z], Hz.
	PeakHz []float64 `json:"peak_hz,omitempty"`
	// Bands is the energy per band and axis, [len(bands)][x y z], (m/s²)².
	Bands [][]float64 `json:"bands,omitempty"`
}

// sink writes the result.
type sink struct{ o *Options }

func (*sink) Name() string { return "sink" }
func (*sink) Reads() []string {
	return []string{FieldRMS, FieldKurtosis, FieldPeakHz, FieldBands, FieldScore, FieldAnomaly, FieldWorstBand, FieldWorstAxis}
}
func (*sink) Writes() []string { return nil }

func (k *sink) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	var r Result
	sc, ok := s.Num(FieldScore)
	if !ok {
		// Only capture filters a window: the sensor is off.
		r.SensorOff = true
		return tasks.Continue, k.set(s, r)
	}
	an, _ := s.Num(FieldAnomaly)
	wb, _ := s.Num(FieldWorstBand)
	wa, _ := s.Num(FieldWorstAxis)
	if int(wa) < 0 || int(wa) >= axes {
		return 0, fmt.Errorf("%s: %g is not an axis", FieldWorstAxis, wa)
	}
	band := int(wb)
	if band < 0 || band >= len(k.o.Bands) {
		return 0, fmt.Errorf("%s: %g is not a band", FieldWorstBand, wb)
	}
	r.Anomaly, r.Score, r.WorstBand, r.WorstAxis = an != 0, &sc, &band, axisNames[int(wa)]
	var err error
	if r.RMS, err = getFloat64s(s, FieldRMS, axes); err != nil {
		return 0, err
	}
	if r.Kurtosis, err = getFloat64s(s, FieldKurtosis, axes); err != nil {
		return 0, err
	}
	if r.PeakHz, err = getFloat64s(s, FieldPeakHz, axes); err != nil {
		return 0, err
	}
	bands, err := getFloat64s(s, FieldBands, len(k.o.Bands), axes)
	if err != nil {
		return 0, err
	}
	for b := range k.o.Bands {
		r.Bands = append(r.Bands, bands[b*axes:(b+1)*axes])
	}
	return tasks.Continue, k.set(s, r)
}

func (*sink) set(s *tasks.State, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	s.SetResult(b)
	return nil
}

// Calibrate runs capture, filter, fft and features over healthy windows
// (each float32 [o.Window 3], m/s²) and returns the mean energy of each
// band per axis, [len(o.Bands)][x y z] in (m/s²)²: a baseline for the
// options. o's baseline, threshold and kurtosis limit are not used.
// Windows that capture filters (sensor off) are skipped; at least one
// must remain.
func Calibrate(o *Options, windows []tasks.Array) ([][3]float64, error) {
	if err := o.validateSignal(); err != nil {
		return nil, err
	}
	stages := Stages(o)[:4]
	sum := make([][3]float64, len(o.Bands))
	used := 0
	for i, w := range windows {
		s := tasks.NewState("calibrate", uint64(i))
		s.SetArray(tasks.FieldSource, w)
		filtered := false
		for _, st := range stages {
			out, err := st.Process(context.Background(), s)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("window %d: %s: %w", i, st.Name(), err)
			}
			if out == tasks.Filtered {
				filtered = true
				break
			}
		}
		if !filtered {
			e, err := getFloat64s(s, FieldBands, len(o.Bands), axes)
			if err != nil {
				s.Close()
				return nil, err
			}
			for b := range sum {
				for a := 0; a < axes; a++ {
					sum[b][a] += e[b*axes+a]
				}
			}
			used++
		}
		s.Close()
	}
	if used == 0 {
		return nil, errors.New("calibrate: no window with a signal")
	}
	for b := range sum {
		for a := 0; a < axes; a++ {
			sum[b][a] /= float64(used)
		}
	}
	return sum, nil
}
