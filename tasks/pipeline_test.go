package tasks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"gocv.io/x/gocv"
)

var ctx = context.Background()

func build(t testing.TB, annotate bool) *tasks.Pipeline {
	t.Helper()
	o := balltrack.DefaultOptions()
	o.Annotate = annotate
	p, err := tasks.Build(balltrack.Name, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNeedsShipOnlyWhatLaterStagesRead(t *testing.T) {
	p := build(t, false)
	want := [][]string{
		{"source"},
		{"frame", "height", "width"},
		{"height", "hsv", "width"},
		{"height", "mask", "width"},
		{"contours", "height", "width"},
		{"center_x", "center_y", "height", "radius", "width", "x", "y"},
		{"center_x", "center_y", "height", "radius", "width", "x", "y"},
	}
	for i := range want {
		if got := p.Needs(i); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("annotate off, into %s: %v, want %v", p.Stage(i).Name(), got, want[i])
		}
	}
	pa := build(t, true)
	for i := 1; i < pa.Len(); i++ {
		if !slices.Contains(pa.Needs(i), "frame") {
			t.Errorf("annotate on, into %s: frame not shipped: %v", pa.Stage(i).Name(), pa.Needs(i))
		}
	}
}

type fake struct {
	name          string
	reads, writes []string
}

func (f fake) Name() string     { return f.name }
func (f fake) Reads() []string  { return f.reads }
func (f fake) Writes() []string { return f.writes }
func (f fake) Process(context.Context, *tasks.State) (tasks.Outcome, error) {
	return tasks.Continue, nil
}

func TestNewPipelineRejectsBadStages(t *testing.T) {
	for _, tc := range []struct {
		stages []tasks.Stage
		want   string
	}{
		{[]tasks.Stage{fake{name: "a"}, fake{name: "b"}}, "at least 3"},
		{[]tasks.Stage{fake{name: "a"}, fake{name: "a"}, fake{name: "c"}}, "twice"},
		{[]tasks.Stage{fake{name: "a"}, fake{name: "b", reads: []string{"x"}}, fake{name: "c"}}, "no earlier stage writes"},
		{[]tasks.Stage{fake{name: "a"}, fake{name: "result"}, fake{name: "c"}}, "reserved"},
		{[]tasks.Stage{fake{name: "a"}, fake{name: "B"}, fake{name: "c"}}, "not allowed"},
	} {
		_, err := tasks.NewPipeline("p", nil, tc.stages...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
}

// roundTrip runs one frame through the frame protocol at split k
// (tasks.RoundTrip) and returns the pipeline's part of the result and the
// encoded state's size.
func roundTrip(t *testing.T, p *tasks.Pipeline, frame gocv.Mat, k int, enc tasks.Encoding) (string, int) {
	t.Helper()
	done, off, err := tasks.RoundTrip(ctx, p, cvmat.Mat{Mat: frame}, k, enc)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(done.Result, &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"device", "run", "seq", "split", "capture_ts"} {
		delete(m, key)
	}
	b, _ := json.Marshal(m)
	return string(b), len(off.Payload)
}

func TestCodecRoundTripAtEveryBoundary(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	o := source.SyntheticOptions{Width: 640, Height: 480, Seed: 3}
	src := source.NewSynthetic(o)
	defer src.Close()
	for _, annotate := range []bool{false, true} {
		p := build(t, annotate)
		for n := 0; n < 3; n++ {
			frame, _ := src.Read(ctx)
			var want string
			for _, codec := range []string{"raw", "png", "auto"} {
				for k := 1; k <= p.MaxSplit(); k++ {
					got, size := roundTrip(t, p, frame.Clone(), k, tasks.Encoding{Codec: codec})
					if want == "" {
						want = got
					}
					if got != want {
						t.Errorf("annotate=%v %s split %d: result %s, want %s", annotate, codec, k, got, want)
					}
					if !annotate && k >= 5 && size > 1024 {
						t.Errorf("split %d ships %d bytes; only numbers should cross", k, size)
					}
				}
			}
			// JPEG is lossy and opt-in: it must work, results may differ.
			if got, _ := roundTrip(t, p, frame.Clone(), 1, tasks.Encoding{Codec: "jpeg", Quality: 90}); !strings.Contains(got, `"width":500`) {
				t.Errorf("jpeg round trip: %s", got)
			}
			frame.Close()
		}
	}
}

func TestDecodeFieldsRejectsLyingImageHeaders(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	m := gocv.NewMatWithSize(10, 20, gocv.MatTypeCV8UC3)
	s := tasks.NewState("d", 0)
	cvmat.Set(s, "frame", m)
	f, err := tasks.EncodeFields(s, []string{"frame"}, tasks.Encoding{Codec: "png"})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fm := f["frame"]
	fm.Array.Shape[0] = 11 // the array disagrees with the PNG's header
	r := tasks.NewState("d", 0)
	defer r.Close()
	if err := tasks.DecodeFields(r, f); err == nil || !strings.Contains(err.Error(), "its array says") {
		t.Errorf("got %v, want a size mismatch error", err)
	}
	fm.Array.Shape[0] = 10
	fm.Array.Data = bytes.Repeat([]byte{1}, 40)
	if err := tasks.DecodeFields(r, f); err == nil {
		t.Error("garbage PNG decoded")
	}
}

func TestBuildEncodedRejectsUnknownOptions(t *testing.T) {
	if _, err := tasks.BuildEncoded("nosuch", nil); err == nil {
		t.Error("unknown pipeline built")
	}
	if _, err := tasks.BuildEncoded(balltrack.Name, []byte{0xa1, 0x18, 0x63, 0x01}); err == nil { // {99: 1}
		t.Error("unknown option accepted")
	}
	if _, err := tasks.BuildEncoded(balltrack.Name, []byte{0xa1, 0x01, 0x00}); err == nil { // width 0
		t.Error("invalid option accepted")
	}
}

// Build with nil options builds the pipeline's defaults (it panicked).
func TestBuildNilOptionsMeansDefaults(t *testing.T) {
	p, err := tasks.Build(balltrack.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tasks.Build(balltrack.Name, balltrack.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != q.Len() || string(p.Options()) != string(q.Options()) {
		t.Error("nil options built something else than the defaults")
	}
}
