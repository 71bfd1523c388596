package vibration

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/splitpoint/splitpoint/tasks"
)

// roundTrip runs one window through the frame protocol at split k
// (tasks.RoundTrip) and returns the result without the split (the one key
// that may differ between splits), the stage that filtered the window and
// the encoded state's size.
func roundTrip(t *testing.T, p *tasks.Pipeline, window tasks.Array, k int, enc tasks.Encoding) (result, filteredAt string, size int) {
	t.Helper()
	done, off, err := tasks.RoundTrip(ctx, p, window, k, enc)
	if err != nil {
		t.Fatal(err)
	}
	return appFields(t, done.Result), off.FilteredAt, len(off.Payload)
}

// appFields returns the pipeline's fields of a result, without the
// framework's (device, run, seq, filtered_at, split, capture_ts), as
// canonical JSON (keys sorted).
func appFields(t *testing.T, result []byte) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(result, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"device", "run", "seq", "filtered_at", "split", "capture_ts"} {
		delete(m, k)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// runLocal runs every stage in one process, as a device would at no split.
func runLocal(t *testing.T, p *tasks.Pipeline, window tasks.Array) string {
	t.Helper()
	s := tasks.NewState("dev", 3)
	defer s.Close()
	s.SetArray(tasks.FieldSource, window)
	if _, err := p.Run(ctx, s, 0, p.Len()-1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(ctx, s, p.Len()-1, p.Len(), nil); err != nil {
		t.Fatal(err)
	}
	return string(s.Result())
}

// The end-to-end check: 40 synthetic windows (8 faulty, 3 with the sensor
// off, 29 healthy) through the wire at every split give the same result
// at every split, and the detector meets the ground truth exactly.
func TestRoundTripEverySplitMeetsGroundTruth(t *testing.T) {
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	g := DefaultSynthetic(1)
	g.OffEvery = 13 // windows 12, 25, 38
	const windows = 40
	var faulty, off, healthy, flagged, missed, falseAlarms int
	sizes := make([]int, p.MaxSplit()+1)    // of the first healthy window
	maxSizes := make([]int, p.MaxSplit()+1) // over all windows
	minFaulty, maxHealthy := 1e300, 0.0
	for n := 0; n < windows; n++ {
		w, err := g.WindowAt(n)
		if err != nil {
			t.Fatal(err)
		}
		want := runLocal(t, p, w)
		for k := 1; k <= p.MaxSplit(); k++ {
			got, filteredAt, size := roundTrip(t, p, w, k, tasks.Encoding{Codec: "raw"})
			if want := appFields(t, []byte(want)); got != want {
				t.Errorf("window %d split %d: result\n%s\nwant (every stage local)\n%s", n, k, got, want)
			}
			if wantF := map[bool]string{true: "capture", false: ""}[g.OffAt(n)]; filteredAt != wantF {
				t.Errorf("window %d split %d: filtered at %q, want %q", n, k, filteredAt, wantF)
			}
			if n == 0 {
				sizes[k] = size
			}
			maxSizes[k] = max(maxSizes[k], size)
		}
		var r Result
		if err := json.Unmarshal([]byte(want), &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case g.OffAt(n):
			off++
			if !r.SensorOff || r.Anomaly || r.Score != nil {
				t.Errorf("window %d (sensor off): %s", n, want)
			}
			continue
		case g.TruthAt(n):
			faulty++
			minFaulty = min(minFaulty, *r.Score)
			if !r.Anomaly {
				missed++
				t.Errorf("window %d is faulty, not flagged: %s", n, want)
			}
		default:
			healthy++
			maxHealthy = max(maxHealthy, *r.Score)
			if r.Anomaly {
				falseAlarms++
				t.Errorf("window %d is healthy, flagged: %s", n, want)
			}
		}
		if r.SensorOff || len(r.RMS) != 3 || len(r.Kurtosis) != 3 || len(r.PeakHz) != 3 || len(r.Bands) != 3 {
			t.Errorf("window %d: incomplete result %s", n, want)
		}
		if r.Anomaly {
			flagged++
		}
	}
	if faulty != 8 || off != 3 || healthy != 29 || flagged != 8 || missed != 0 || falseAlarms != 0 {
		t.Errorf("faulty %d (want 8), off %d (want 3), healthy %d (want 29), flagged %d (want 8), missed %d, false alarms %d",
			faulty, off, healthy, flagged, missed, falseAlarms)
	}
	t.Logf("scores: faulty ≥ %.2f, healthy ≤ %.2f, threshold %g", minFaulty, maxHealthy, DefaultOptions().Threshold)

	// Bytes per boundary: a whole CBOR state (envelope, options, fields).
	o := DefaultOptions()
	t.Logf("window %d samples × 3 axes at %g Hz: source %d bytes of float32", o.Window, o.SampleRate, o.Window*3*4)
	var table strings.Builder
	for k := 1; k <= p.MaxSplit(); k++ {
		fmt.Fprintf(&table, "\n  split %d → %-8s %6d bytes (max %6d)  %v", k, p.Stage(k).Name(), sizes[k], maxSizes[k], p.Needs(k))
	}
	t.Logf("bytes per boundary (healthy window 0; max over the %d windows):%s", windows, table.String())
	for k := 1; k <= p.MaxSplit(); k++ {
		if k >= 4 && maxSizes[k] > 1024 {
			t.Errorf("split %d ships %d bytes; only a handful of numbers should cross", k, maxSizes[k])
		}
	}
	if !(sizes[3] < sizes[2]/3 && sizes[4] < sizes[3]/10) {
		t.Errorf("sizes %v do not shrink along the pipeline as documented", sizes[1:])
	}
}

// More seeds, run locally: the separation is not luck of one seed.
func TestGroundTruthOverSeeds(t *testing.T) {
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint64(2); seed <= 4; seed++ {
		g := DefaultSynthetic(seed)
		wrong := 0
		for n := 0; n < 100; n++ {
			w, err := g.WindowAt(n)
			if err != nil {
				t.Fatal(err)
			}
			var r Result
			if err := json.Unmarshal([]byte(runLocal(t, p, w)), &r); err != nil {
				t.Fatal(err)
			}
			if r.Anomaly != g.TruthAt(n) {
				wrong++
				t.Errorf("seed %d window %d: anomaly %v, truth %v, score %g", seed, n, r.Anomaly, g.TruthAt(n), *r.Score)
			}
		}
		if wrong != 0 {
			t.Errorf("seed %d: %d of 100 windows misclassified", seed, wrong)
		}
	}
}

// Stages are safe for concurrent use on different states (the cloud runs
// several windows at once).
func TestStagesConcurrent(t *testing.T) {
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	g := DefaultSynthetic(7)
	const n = 8
	wins := make([]tasks.Array, n)
	want := make([]string, n)
	for i := range wins {
		if wins[i], err = g.WindowAt(i); err != nil {
			t.Fatal(err)
		}
		want[i] = runLocal(t, p, wins[i])
	}
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range wins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := tasks.NewState("dev", uint64(i))
			defer s.Close()
			s.SetArray(tasks.FieldSource, wins[i])
			if _, err := p.Run(ctx, s, 0, p.Len(), nil); err != nil {
				t.Error(err)
				return
			}
			got[i] = string(s.Result())
		}()
	}
	wg.Wait()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("window %d: concurrent %s, serial %s", i, got[i], want[i])
		}
	}
}

func TestCalibrateReproducesDefaultBaseline(t *testing.T) {
	g := DefaultSynthetic(1000)
	g.FaultEvery = 0
	var ws []tasks.Array
	for n := 0; n < 200; n++ {
		w, err := g.WindowAt(n)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	o := DefaultOptions()
	base, err := Calibrate(o, ws)
	if err != nil {
		t.Fatal(err)
	}
	for b := range base {
		for a := 0; a < 3; a++ {
			// The default is the calibrated mean rounded up to two digits.
			if d := o.Baseline[b][a]; !(d >= base[b][a] && d <= base[b][a]*1.1) {
				t.Errorf("band %d axis %d: default baseline %g, calibrated %g", b, a, d, base[b][a])
			}
		}
	}
	// A window with the sensor off is skipped.
	g.OffEvery = 1
	off, _ := g.WindowAt(0)
	with, err := Calibrate(o, append([]tasks.Array{off}, ws...))
	if err != nil || !reflect.DeepEqual(with, base) {
		t.Errorf("with a window that is off: %v, %v; want %v", with, err, base)
	}
	if _, err := Calibrate(o, []tasks.Array{off}); err == nil {
		t.Error("calibrated on no signal")
	}
	bad := DefaultOptions()
	bad.Window = 512
	if _, err := Calibrate(bad, ws[:1]); err == nil || !strings.Contains(err.Error(), "window = 512") {
		t.Errorf("got %v, want a window mismatch", err)
	}
}
