package vibration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/splitpoint/splitpoint/tasks"
)

func TestSyntheticIsDeterministicWithKnownTruth(t *testing.T) {
	g := DefaultSynthetic(1)
	g.OffEvery = 7
	a, err := g.WindowAt(9)
	if err != nil {
		t.Fatal(err)
	}
	if a.DType != tasks.Float32 || len(a.Shape) != 2 || a.Shape[0] != 1024 || a.Shape[1] != 3 || a.Validate() != nil {
		t.Fatalf("window is %s %v", a.DType, a.Shape)
	}
	b, _ := g.WindowAt(9)
	if !bytes.Equal(a.Data, b.Data) {
		t.Error("window 9 differs between two calls")
	}
	other := DefaultSynthetic(2)
	other.OffEvery = 7
	if c, _ := other.WindowAt(9); bytes.Equal(a.Data, c.Data) {
		t.Error("seeds 1 and 2 give the same window")
	}

	var truth, offs []int
	for n := 0; n < 20; n++ {
		if g.TruthAt(n) {
			truth = append(truth, n)
		}
		if g.OffAt(n) {
			offs = append(offs, n)
			w, _ := g.WindowAt(n)
			if !bytes.Equal(w.Data, make([]byte, len(w.Data))) {
				t.Errorf("window %d is off but not all zeros", n)
			}
		}
	}
	if fmt.Sprint(truth) != "[4 9 14 19]" || fmt.Sprint(offs) != "[6 13]" {
		t.Errorf("faulty %v (want [4 9 14 19]), off %v (want [6 13])", truth, offs)
	}
	g.OffEvery = 5 // off wins over a fault
	if g.TruthAt(4) || !g.OffAt(4) {
		t.Error("a window that is off is reported faulty")
	}
	if d := g.WindowDuration().Seconds(); d != 0.512 {
		t.Errorf("window duration %gs, want 0.512s", d)
	}

	// The healthy machine's statistics: gravity on z, hum RMS per axis.
	h, _ := DefaultSynthetic(1).WindowAt(0)
	v, _ := getFloat32sFromArray(h)
	var mean [3]float64
	for i, x := range v {
		mean[i%3] += float64(x) / 1024
	}
	if math.Abs(mean[0]) > 0.05 || math.Abs(mean[1]) > 0.05 || math.Abs(mean[2]-9.81) > 0.05 {
		t.Errorf("window means %v, want ≈ [0 0 9.81]", mean)
	}

	for _, bad := range []func(g *Synthetic){
		func(g *Synthetic) { g.Window = 8 },
		func(g *Synthetic) { g.SampleRate = 0 },
		func(g *Synthetic) { g.LoadJitter = 1 },
		func(g *Synthetic) { g.NoiseStd = math.NaN() },
		func(g *Synthetic) { g.FaultHz = 1000 },
		func(g *Synthetic) { g.FaultDecay = 0 },
		func(g *Synthetic) { g.FaultEvery = -1 },
	} {
		g := DefaultSynthetic(1)
		bad(&g)
		if _, err := g.WindowAt(0); err == nil {
			t.Errorf("invalid generator %+v accepted", g)
		}
	}
	if _, err := DefaultSynthetic(1).WindowAt(-1); err == nil {
		t.Error("window -1 generated")
	}
}

// The injected fault is what the detector sees: energy in the resonance's
// band on x, impulsive in time.
func TestSyntheticFaultRaisesResonanceBand(t *testing.T) {
	o := DefaultOptions()
	g := DefaultSynthetic(3)
	energy := func(n int) float64 {
		w, err := g.WindowAt(n)
		if err != nil {
			t.Fatal(err)
		}
		s := tasks.NewState("d", 0)
		defer s.Close()
		s.SetArray(tasks.FieldSource, w)
		for _, st := range Stages(o)[:4] {
			process(t, st, s)
		}
		e, err := getFloat64s(s, FieldBands, 3, 3)
		if err != nil {
			t.Fatal(err)
		}
		return e[2*3+0] // 500–900 Hz, x
	}
	healthy, faulty := energy(3), energy(4)
	if faulty < 5*healthy {
		t.Errorf("500–900 Hz energy on x: faulty %g, healthy %g; want ≥ 5×", faulty, healthy)
	}
}

func getFloat32sFromArray(a tasks.Array) ([]float32, error) {
	s := tasks.NewState("d", 0)
	s.SetArray("a", a)
	return getFloat32s(s, "a", a.Shape...)
}

func TestReadCSV(t *testing.T) {
	var b strings.Builder
	b.WriteString("ax, ay, az\r\n# a comment\n\n")
	for i := 0; i < 40; i++ { // 2 windows of 16 and 8 rows left over
		fmt.Fprintf(&b, "%d.5,%d, -%d.25\n", i, 2*i, i)
	}
	ws, err := ReadCSV(strings.NewReader(b.String()), 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 {
		t.Fatalf("%d windows, want 2", len(ws))
	}
	for wi, w := range ws {
		v, err := getFloat32sFromArray(w)
		if err != nil || len(w.Shape) != 2 || w.Shape[0] != 16 || w.Shape[1] != 3 {
			t.Fatalf("window %d: %v %v", wi, w.Shape, err)
		}
		for r := 0; r < 16; r++ {
			i := 16*wi + r
			want := [3]float32{float32(i) + 0.5, float32(2 * i), -float32(i) - 0.25}
			if got := [3]float32(v[3*r : 3*r+3]); got != want {
				t.Fatalf("row %d: %v, want %v", i, got, want)
			}
		}
	}

	cr, err := NewCSVReader(strings.NewReader(b.String()), 16)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, err := cr.Next()
		if errors.Is(err, io.EOF) {
			if i != 2 || cr.Leftover() != 8 {
				t.Errorf("EOF after %d windows with %d rows left, want 2 and 8", i, cr.Leftover())
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	// Without a header; a synthetic window written with the shortest
	// float32 form reads back bit for bit.
	g := DefaultSynthetic(5)
	w, _ := g.WindowAt(4)
	v, _ := getFloat32sFromArray(w)
	b.Reset()
	for i := 0; i < len(v); i += 3 {
		for a := 0; a < 3; a++ {
			if a > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(float64(v[i+a]), 'g', -1, 32))
		}
		b.WriteByte('\n')
	}
	back, err := ReadCSV(strings.NewReader(b.String()), g.Window)
	if err != nil || len(back) != 1 || !bytes.Equal(back[0].Data, w.Data) {
		t.Errorf("synthetic window through CSV: %d windows, err %v, equal %v", len(back), err, len(back) == 1 && bytes.Equal(back[0].Data, w.Data))
	}

	for _, tc := range []struct{ text, want string }{
		{"ax,ay,az\n1,2,3\n1,x,3\n", "csv line 3, column 2: \"x\" is not a finite number"},
		{"1,2,3\n1,2,NaN\n", "csv line 2, column 3"},
		{"1,2,3\n1,2,1e39\n", "csv line 2, column 3"},
		{"1,2,3\n1,2\n", "wrong number of fields"},
	} {
		if _, err := ReadCSV(strings.NewReader(tc.text), 16); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.text, err, tc.want)
		}
	}
	if _, err := ReadCSV(strings.NewReader(""), 4); err == nil {
		t.Error("window 4 accepted")
	}
	if ws, err := ReadCSV(strings.NewReader(""), 16); err != nil || len(ws) != 0 {
		t.Errorf("empty input: %d windows, %v", len(ws), err)
	}
}
