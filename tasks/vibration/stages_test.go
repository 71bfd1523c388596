package vibration

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/splitpoint/splitpoint/tasks"
)

var ctx = context.Background()

// stage returns the named stage built from o.
func stage(t *testing.T, o *Options, name string) tasks.Stage {
	t.Helper()
	for _, s := range Stages(o) {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no stage %s", name)
	return nil
}

// tone returns n samples of amp·sin(2π·f·i/fs + phase).
func tone(n int, amp, f, fs, phase float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = amp * math.Sin(2*math.Pi*f*float64(i)/fs+phase)
	}
	return out
}

// interleave builds a [n 3] signal from three axes.
func interleave(x, y, z []float64) []float64 {
	out := make([]float64, 3*len(x))
	for i := range x {
		out[3*i], out[3*i+1], out[3*i+2] = x[i], y[i], z[i]
	}
	return out
}

func column(sig []float64, a int) []float64 {
	out := make([]float64, len(sig)/3)
	for i := range out {
		out[i] = sig[3*i+a]
	}
	return out
}

func process(t *testing.T, st tasks.Stage, s *tasks.State) tasks.Outcome {
	t.Helper()
	out, err := st.Process(ctx, s)
	if err != nil {
		t.Fatalf("%s: %v", st.Name(), err)
	}
	return out
}

func TestCaptureChecksConvertsAndFiltersSensorOff(t *testing.T) {
	o := DefaultOptions()
	o.Window = 16
	c := stage(t, o, "capture")

	src := make([]float32, 16*3)
	for i := range src {
		src[i] = float32(i)*0.1 - 2
	}
	s := tasks.NewState("d", 0)
	s.SetArray(tasks.FieldSource, float32Array(src, 16, 3))
	if out := process(t, c, s); out != tasks.Continue {
		t.Fatalf("outcome %v", out)
	}
	sig, err := getFloat64s(s, FieldSignal, 16, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range src {
		if sig[i] != float64(v) {
			t.Fatalf("sample %d: %v, want exactly %v", i, sig[i], float64(v))
		}
	}
	if s.Has(tasks.FieldSource) {
		t.Error("source kept")
	}

	for _, tc := range []struct {
		name string
		a    tasks.Array
		want string
	}{
		{"float64", float64Array(make([]float64, 48), 16, 3), "float32"},
		{"two axes", float32Array(make([]float32, 32), 16, 2), "shape"},
		{"window", float32Array(make([]float32, 51), 17, 3), "window = 16"},
		{"nan", float32Array(append(make([]float32, 47), float32(math.NaN())), 16, 3), "sample 15 axis 2"},
		{"inf", float32Array(append([]float32{float32(math.Inf(1))}, make([]float32, 47)...), 16, 3), "sample 0 axis 0"},
	} {
		s := tasks.NewState("d", 0)
		s.SetArray(tasks.FieldSource, tc.a)
		if _, err := c.Process(ctx, s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := c.Process(ctx, tasks.NewState("d", 0)); err == nil {
		t.Error("no source accepted")
	}

	// All zeros, and a stuck sensor reading gravity, are filtered; with
	// min_range a small wobble is too.
	stuck := make([]float32, 48)
	for i := 2; i < 48; i += 3 {
		stuck[i] = 9.81
	}
	wobble := make([]float32, 48)
	wobble[7] = 0.01
	for _, tc := range []struct {
		name     string
		minRange float64
		src      []float32
		want     tasks.Outcome
	}{
		{"zeros", 0, make([]float32, 48), tasks.Filtered},
		{"stuck", 0, stuck, tasks.Filtered},
		{"wobble", 0, wobble, tasks.Continue},
		{"wobble below min_range", 0.02, wobble, tasks.Filtered},
	} {
		o := DefaultOptions()
		o.Window, o.MinRange = 16, tc.minRange
		s := tasks.NewState("d", 0)
		s.SetArray(tasks.FieldSource, float32Array(tc.src, 16, 3))
		if out := process(t, stage(t, o, "capture"), s); out != tc.want {
			t.Errorf("%s: outcome %v, want %v", tc.name, out, tc.want)
		}
		if tc.want == tasks.Filtered && s.Has(FieldSignal) {
			t.Errorf("%s: filtered window wrote %s", tc.name, FieldSignal)
		}
	}
}

// amplitudeAt fits a·sin + b·cos at f Hz to x by least squares and returns
// √(a²+b²).
func amplitudeAt(x []float64, f, fs float64) float64 {
	var ss, cc, sc, xs, xc float64
	for i, v := range x {
		s, c := math.Sincos(2 * math.Pi * f * float64(i) / fs)
		ss += s * s
		cc += c * c
		sc += s * c
		xs += v * s
		xc += v * c
	}
	det := ss*cc - sc*sc
	a := (xs*cc - xc*sc) / det
	b := (xc*ss - xs*sc) / det
	return math.Hypot(a, b)
}

func db(x float64) float64 { return 20 * math.Log10(x) }

// butterGain is the exact magnitude of the prewarped 2nd-order Butterworth
// band-pass pair at f Hz.
func butterGain(f, low, high, fs float64) float64 {
	t := func(x float64) float64 { return math.Tan(math.Pi * x / fs) }
	hp := 1 / math.Sqrt(1+math.Pow(t(low)/t(f), 4))
	lp := 1 / math.Sqrt(1+math.Pow(t(f)/t(high), 4))
	return hp * lp
}

func TestFilterAttenuatesOutOfBandTones(t *testing.T) {
	o := DefaultOptions() // 10–900 Hz at 2000 Hz
	o.Window = 16384
	fs := o.SampleRate
	f := stage(t, o, "filter")
	for _, tc := range []struct {
		hz     float64
		wantDB float64 // the expected attenuation, rounded
		tol    float64
	}{
		{2.5, -24.1, 0.1},  // two octaves below low_hz: 12 dB/octave
		{5, -12.3, 0.1},    // one octave below
		{10, -3.01, 0.02},  // the corner
		{50, 0, 0.01},      // the hum: passes
		{300, 0, 0.01},     // passes
		{900, -3.01, 0.02}, // the corner (prewarped, so exact)
		{980, -28.1, 0.1},  // near Nyquist the bilinear transform's zero at fs/2 attenuates far more than the analog filter (-3.8 dB)
	} {
		// x carries the tone, y the tone on top of gravity, z nothing.
		x := tone(o.Window, 1, tc.hz, fs, 0.3)
		y := make([]float64, o.Window)
		for i := range y {
			y[i] = x[i] + 9.81
		}
		s := tasks.NewState("d", 0)
		s.SetArray(FieldSignal, float64Array(interleave(x, y, make([]float64, o.Window)), o.Window, 3))
		process(t, f, s)
		out, err := getFloat64s(s, FieldFiltered, o.Window, 3)
		if err != nil {
			t.Fatal(err)
		}
		want := db(butterGain(tc.hz, o.LowHz, o.HighHz, fs))
		for a := 0; a < 2; a++ {
			tail := column(out, a)[o.Window/2:] // steady state
			got := db(amplitudeAt(tail, tc.hz, fs))
			if math.Abs(got-want) > 0.02 {
				t.Errorf("%g Hz axis %d: %.3f dB, want %.3f dB (the digital filter's exact gain)", tc.hz, a, got, want)
			}
			if math.Abs(got-tc.wantDB) > tc.tol {
				t.Errorf("%g Hz axis %d: %.3f dB, want %.2f ± %.2f dB", tc.hz, a, got, tc.wantDB, tc.tol)
			}
		}
		// Gravity does not ring: the filter starts in its steady state.
		if y0 := out[1]; math.Abs(y0) > 0.5 {
			t.Errorf("%g Hz: first filtered sample on the axis with gravity is %g", tc.hz, y0)
		}
		for i, v := range column(out, 2) {
			if v != 0 {
				t.Fatalf("silent axis filtered to %g at %d", v, i)
			}
		}
	}
}

func TestFFTStageSpectrumRMSAndKurtosisOfSines(t *testing.T) {
	o := DefaultOptions()
	n, fs := o.Window, o.SampleRate
	binHz := fs / float64(n)
	// x: amplitude 2 centred on bin 100; y: amplitude 0.5 at 300.4 bins
	// (between bins); z: silent.
	x := tone(n, 2, 100*binHz, fs, 0)
	y := tone(n, 0.5, 300.4*binHz, fs, 1)
	s := tasks.NewState("d", 0)
	s.SetArray(FieldFiltered, float64Array(interleave(x, y, make([]float64, n)), n, 3))
	process(t, stage(t, o, "fft"), s)
	if s.Has(FieldFiltered) {
		t.Error("filtered kept")
	}
	spec, err := getFloat32s(s, FieldSpectrum, n/2+1, 3)
	if err != nil {
		t.Fatal(err)
	}
	argmax := func(a int) int {
		best := 0
		for k := 1; k <= n/2; k++ {
			if spec[k*3+a] > spec[best*3+a] {
				best = k
			}
		}
		return best
	}
	if k := argmax(0); k != 100 {
		t.Errorf("x: peak at bin %d, want 100", k)
	}
	if k := argmax(1); k != 300 {
		t.Errorf("y: peak at bin %d, want 300", k)
	}
	// Hann window, bin-centred sine: A at the bin, A/2 at each neighbour,
	// nothing elsewhere.
	for k, want := range map[int]float64{99: 1, 100: 2, 101: 1, 98: 0, 102: 0, 0: 0, 512: 0} {
		if got := float64(spec[k*3]); math.Abs(got-want) > 1e-6 {
			t.Errorf("x: bin %d amplitude %g, want %g", k, got, want)
		}
	}
	for k := 0; k <= n/2; k++ {
		if spec[k*3+2] != 0 {
			t.Fatalf("z: bin %d amplitude %g, want 0", k, spec[k*3+2])
		}
	}

	rms, err := getFloat64s(s, FieldRMS, 3)
	if err != nil {
		t.Fatal(err)
	}
	kurt, err := getFloat64s(s, FieldKurtosis, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 / math.Sqrt2; math.Abs(rms[0]-want) > 1e-12 {
		t.Errorf("x: rms %.15g, want A/√2 = %.15g", rms[0], want)
	}
	if math.Abs(kurt[0]-1.5) > 1e-12 {
		t.Errorf("x: kurtosis %.15g, want 1.5", kurt[0])
	}
	// 300.4 periods in the window: not whole, so only close.
	if want := 0.5 / math.Sqrt2; math.Abs(rms[1]-want) > 1e-3*want {
		t.Errorf("y: rms %g, want ≈ %g", rms[1], want)
	}
	if math.Abs(kurt[1]-1.5) > 0.01 {
		t.Errorf("y: kurtosis %g, want ≈ 1.5", kurt[1])
	}
	if rms[2] != 0 || kurt[2] != 0 {
		t.Errorf("z: rms %g kurtosis %g, want 0 0", rms[2], kurt[2])
	}
}

func TestKurtosisOfGaussianNoiseAndImpulses(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 16384
	g := make([]float64, n)
	for i := range g {
		g[i] = r.NormFloat64()
	}
	imp := make([]float64, n) // one spike in a hundred
	for i := 0; i < n; i += 100 {
		imp[i] = 5
	}
	_, k := moments(interleave(g, imp, tone(n, 1, 10, 1000, 0)))
	if math.Abs(k[0]-3) > 0.15 { // standard error √(24/n) ≈ 0.04
		t.Errorf("Gaussian noise: kurtosis %g, want ≈ 3", k[0])
	}
	// Bernoulli(p) spikes: (1−3p+3p²)/(p(1−p)) with p = 1/100 ≈ 98.0.
	if math.Abs(k[1]-98.0) > 1 {
		t.Errorf("spikes: kurtosis %g, want ≈ 98", k[1])
	}
}

func TestFeaturesBandEnergiesAndPeaks(t *testing.T) {
	o := DefaultOptions()
	o.Bands = [][2]float64{{10, 200}, {200, 500}, {500, 900}, {0, 1000}}
	o.Baseline = append(o.Baseline, [3]float64{1, 1, 1})
	n, fs := o.Window, o.SampleRate
	binHz := fs / float64(n)
	// x: 1 m/s² at bin 50 (97.66 Hz, band 0) and 0.2 at bin 400 (781 Hz,
	// band 2); y: 3 at bin 200 (390.6 Hz, band 1); z: silent.
	x := tone(n, 1, 50*binHz, fs, 0)
	for i, v := range tone(n, 0.2, 400*binHz, fs, 2) {
		x[i] += v
	}
	y := tone(n, 3, 200*binHz, fs, 0.5)
	s := tasks.NewState("d", 0)
	s.SetArray(FieldFiltered, float64Array(interleave(x, y, make([]float64, n)), n, 3))
	process(t, stage(t, o, "fft"), s)
	process(t, stage(t, o, "features"), s)
	if s.Has(FieldSpectrum) {
		t.Error("spectrum kept")
	}
	e, err := getFloat64s(s, FieldBands, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := [4][3]float64{
		{0.5, 0, 0},    // A²/2
		{0, 4.5, 0},    //
		{0.02, 0, 0},   //
		{0.52, 4.5, 0}, // every bin: the mean square (Parseval)
	}
	for b := range want {
		for a := range want[b] {
			if got := e[b*3+a]; math.Abs(got-want[b][a]) > 1e-6*math.Max(want[b][a], 1e-3) {
				t.Errorf("band %v axis %d: energy %.9g, want %g", o.Bands[b], a, got, want[b][a])
			}
		}
	}
	peak, err := getFloat64s(s, FieldPeakHz, 3)
	if err != nil {
		t.Fatal(err)
	}
	if peak[0] != 50*binHz || peak[1] != 200*binHz || peak[2] != 0 {
		t.Errorf("peaks %v Hz, want [%g %g 0] (0 for a silent axis)", peak, 50*binHz, 200*binHz)
	}
}

func TestScoreAgainstBaseline(t *testing.T) {
	o := DefaultOptions()
	o.Baseline = [][3]float64{{1, 1, 1}, {0.1, 0.1, 0.1}, {0.01, 0.02, 0.04}}
	run := func(o *Options, bands []float64, kurt []float64) (score, anomaly, band, axis float64) {
		s := tasks.NewState("d", 0)
		s.SetArray(FieldBands, float64Array(bands, 3, 3))
		s.SetArray(FieldKurtosis, float64Array(kurt, 3))
		process(t, stage(t, o, "score"), s)
		score, _ = s.Num(FieldScore)
		anomaly, _ = s.Num(FieldAnomaly)
		band, _ = s.Num(FieldWorstBand)
		axis, _ = s.Num(FieldWorstAxis)
		return
	}
	healthy := []float64{1, 0.5, 0.2, 0.1, 0.1, 0.1, 0.01, 0.02, 0.08}
	if sc, an, b, a := run(o, healthy, []float64{2, 2, 2}); sc != 2 || an != 0 || b != 2 || a != 2 {
		t.Errorf("healthy: score %g anomaly %g band %g axis %g, want 2 0 2 2", sc, an, b, a)
	}
	faulty := []float64{1, 0.5, 0.2, 0.1, 0.5, 0.1, 0.01, 0.02, 0.08} // band 1 on y ×5
	if sc, an, b, a := run(o, faulty, []float64{2, 2, 2}); sc != 5 || an != 1 || b != 1 || a != 1 {
		t.Errorf("faulty: score %g anomaly %g band %g axis %g, want 5 1 1 1", sc, an, b, a)
	}
	// At the threshold exactly: not anomalous (score must exceed it).
	o4 := *o
	o4.Threshold = 5
	if _, an, _, _ := run(&o4, faulty, []float64{2, 2, 2}); an != 0 {
		t.Error("score equal to the threshold flagged")
	}
	// The kurtosis test, when on, flags an impulsive window on its own.
	ok := *o
	ok.KurtosisLimit = 6
	if _, an, _, _ := run(&ok, healthy, []float64{2, 6.5, 2}); an != 1 {
		t.Error("kurtosis above kurtosis_limit not flagged")
	}
	if _, an, _, _ := run(o, healthy, []float64{2, 60, 2}); an != 0 {
		t.Error("kurtosis flagged with kurtosis_limit off")
	}
}

func TestSinkResultAndSensorOff(t *testing.T) {
	o := DefaultOptions()
	k := stage(t, o, "sink")
	s := tasks.NewState("d", 0)
	s.SetArray(FieldRMS, float64Array([]float64{1, 2, 3}, 3))
	s.SetArray(FieldKurtosis, float64Array([]float64{1.5, 3, 4}, 3))
	s.SetArray(FieldPeakHz, float64Array([]float64{50, 100, 650}, 3))
	s.SetArray(FieldBands, float64Array([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9}, 3, 3))
	s.SetNum(FieldScore, 3.25)
	s.SetNum(FieldAnomaly, 0)
	s.SetNum(FieldWorstBand, 2)
	s.SetNum(FieldWorstAxis, 1)
	process(t, k, s)
	want := `{"anomaly":false,"sensor_off":false,"score":3.25,"worst_band":2,"worst_axis":"y","rms":[1,2,3],"kurtosis":[1.5,3,4],"peak_hz":[50,100,650],"bands":[[1,2,3],[4,5,6],[7,8,9]]}`
	if got := string(s.Result()); got != want {
		t.Errorf("result\n%s\nwant\n%s", got, want)
	}
	var keys map[string]any
	if err := json.Unmarshal(s.Result(), &keys); err != nil {
		t.Fatal(err)
	}
	for _, fw := range []string{"device", "run", "seq", "filtered_at", "split", "capture_ts", "error"} {
		if _, ok := keys[fw]; ok {
			t.Errorf("result uses the framework's key %q", fw)
		}
	}

	off := tasks.NewState("d", 0)
	process(t, k, off)
	if got := string(off.Result()); got != `{"anomaly":false,"sensor_off":true}` {
		t.Errorf("sensor off: %s", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(o *Options)
		want   string
	}{
		{func(o *Options) { o.SampleRate = 5 }, "sample_rate: must be 10..100000 Hz"},
		{func(o *Options) { o.SampleRate = math.NaN() }, "sample_rate:"},
		{func(o *Options) { o.Window = 8 }, "window: must be 16..16384"},
		{func(o *Options) { o.Window = 16385 }, "window: must be 16..16384"},
		{func(o *Options) { o.LowHz = 0 }, "low_hz: must be > 0"},
		{func(o *Options) { o.HighHz = 1000 }, "high_hz: must be > low_hz (10) and < sample_rate/2 (1000)"},
		{func(o *Options) { o.HighHz = 5 }, "high_hz:"},
		{func(o *Options) { o.Bands = nil; o.Baseline = nil }, "bands: must list 1..16"},
		{func(o *Options) { o.Bands[2] = [2]float64{500, 1200} }, "bands[2]: must be [low, high] Hz with 0 ≤ low < high ≤ sample_rate/2 = 1000"},
		{func(o *Options) { o.Bands[0] = [2]float64{200, 10} }, "bands[0]:"},
		{func(o *Options) { o.Bands[1] = [2]float64{100.1, 100.2} }, "bands[1]: must hold at least one spectrum bin"},
		{func(o *Options) { o.Baseline = o.Baseline[:2] }, "baseline: must have one [x, y, z] per band, 3 (got 2)"},
		{func(o *Options) { o.Baseline[1][2] = 0 }, "baseline[1]: each energy must be a finite number > 0"},
		{func(o *Options) { o.Baseline[0][0] = math.Inf(1) }, "baseline[0]:"},
		{func(o *Options) { o.Threshold = 0 }, "threshold: must be a finite number > 0"},
		{func(o *Options) { o.KurtosisLimit = 0.5 }, "kurtosis_limit: must be 0 (off) or > 1"},
		{func(o *Options) { o.MinRange = -1 }, "min_range: must be a finite number ≥ 0"},
	} {
		o := DefaultOptions()
		tc.change(o)
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v, want an error starting %q", err, tc.want)
		}
	}
}

// The device's config file reaches the options through their toml tags.
func TestOptionsFromTOML(t *testing.T) {
	const text = `
sample_rate = 4000
window = 2048
low_hz = 20
high_hz = 1800.5
bands = [[20, 400], [400, 1800]]
baseline = [[0.5, 0.25, 0.125], [1e-3, 2e-3, 3e-3]]
threshold = 6
kurtosis_limit = 8
min_range = 0.01
`
	o := DefaultOptions()
	md, err := toml.Decode(text, o)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("undecoded keys %v", u)
	}
	want := &Options{SampleRate: 4000, Window: 2048, LowHz: 20, HighHz: 1800.5,
		Bands:     [][2]float64{{20, 400}, {400, 1800}},
		Baseline:  [][3]float64{{0.5, 0.25, 0.125}, {1e-3, 2e-3, 3e-3}},
		Threshold: 6, KurtosisLimit: 8, MinRange: 0.01}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("got %+v, want %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Error(err)
	}
}

func TestRegisteredAndOptionsCrossTheWire(t *testing.T) {
	spec, ok := tasks.Lookup(Name)
	if !ok {
		t.Fatal("not registered")
	}
	if !reflect.DeepEqual(spec.NewOptions(), DefaultOptions()) {
		t.Error("NewOptions is not DefaultOptions")
	}
	o := DefaultOptions()
	o.Threshold, o.KurtosisLimit = 2.5, 7
	o.Bands = append(o.Bands, [2]float64{0, 10})
	o.Baseline = append(o.Baseline, [3]float64{1e-9, 2e-9, 3e-9})
	p, err := tasks.Build(Name, o)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tasks.BuildEncoded(Name, p.Options())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q.Options(), p.Options()) {
		t.Error("options changed across the wire")
	}
	sc, ok := q.Stage(q.Index("score")).(*score)
	if !ok || !reflect.DeepEqual(sc.o, o) {
		t.Errorf("cloud options %+v, want %+v", sc.o, o)
	}
	if _, err := tasks.BuildEncoded(Name, nil); err != nil {
		t.Errorf("defaults: %v", err)
	}
	bad := DefaultOptions()
	bad.Window = 4
	if _, err := tasks.Build(Name, bad); err == nil {
		t.Error("invalid options built")
	}
}

func TestNeedsShipWhatTheDocSays(t *testing.T) {
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.StageNames(); !reflect.DeepEqual(got, []string{"capture", "filter", "fft", "features", "score", "sink"}) {
		t.Fatalf("stages %v", got)
	}
	want := [][]string{
		{"source"},
		{"signal"},
		{"filtered"},
		{"kurtosis", "rms", "spectrum"},
		{"bands", "kurtosis", "peak_hz", "rms"},
		{"anomaly", "bands", "kurtosis", "peak_hz", "rms", "score", "worst_axis", "worst_band"},
	}
	for i := range want {
		if got := p.Needs(i); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("into %s: %v, want %v", p.Stage(i).Name(), got, want[i])
		}
	}
}
