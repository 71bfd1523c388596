package balltrack

import (
	"context"
	"encoding/json"
	"image"
	"math"
	"testing"

	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"gocv.io/x/gocv"
)

var ctx = context.Background()

func grey(rows, cols int) gocv.Mat {
	return gocv.NewMatWithSizeFromScalar(gocv.NewScalar(120, 120, 120, 0), rows, cols, gocv.MatTypeCV8UC3)
}

func stage(t *testing.T, name string, o *Options) tasks.Stage {
	t.Helper()
	for _, s := range Stages(o) {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no stage %s", name)
	return nil
}

func TestCaptureResizesToWidthWithFloorHeight(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	for _, tc := range []struct{ w, h, wantH int }{{640, 480, 375}, {1000, 333, 166}, {1920, 1080, 281}, {500, 500, 500}} {
		s := tasks.NewState("d", 0)
		cvmat.Set(s, tasks.FieldSource, grey(tc.h, tc.w))
		out, err := stage(t, "capture", DefaultOptions()).Process(ctx, s)
		if err != nil || out != tasks.Continue {
			t.Fatalf("%dx%d: %v %v", tc.w, tc.h, out, err)
		}
		f, _ := cvmat.Get(s, FieldFrame)
		w, _ := s.Num(FieldWidth)
		h, _ := s.Num(FieldHeight)
		if f.Cols() != 500 || f.Rows() != tc.wantH || w != 500 || int(h) != tc.wantH {
			t.Errorf("%dx%d → %dx%d (fields %gx%g), want 500x%d", tc.w, tc.h, f.Cols(), f.Rows(), w, h, tc.wantH)
		}
		if s.Has(tasks.FieldSource) {
			t.Error("capture left the source frame in the state")
		}
		s.Close()
	}
}

func TestHSVOfBallColour(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	s := tasks.NewState("d", 0)
	defer s.Close()
	cvmat.Set(s, FieldFrame, gocv.NewMatWithSizeFromScalar(gocv.NewScalar(30, 200, 30, 0), 40, 40, gocv.MatTypeCV8UC3))
	if _, err := stage(t, "hsv", DefaultOptions()).Process(ctx, s); err != nil {
		t.Fatal(err)
	}
	hsv, _ := cvmat.Get(s, FieldHSV)
	v := hsv.GetVecbAt(20, 20)
	// BGR (30,200,30): H = 60 (OpenCV halves degrees), S = 255·170/200 ≈ 217, V = 200.
	if v[0] != 60 || v[1] != 217 || v[2] != 200 {
		t.Errorf("HSV = %v, want [60 217 200]", v)
	}
}

func TestMaskKeepsBlobsAndRemovesSpecks(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	hsv := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(0, 0, 120, 0), 100, 100, gocv.MatTypeCV8UC3)
	inRange := gocv.NewScalar(45, 200, 200, 0)
	square := hsv.Region(image.Rect(10, 10, 30, 30)) // 20×20 in range
	square.SetTo(inRange)
	square.Close()
	speck := hsv.Region(image.Rect(60, 60, 64, 64)) // 4×4: eroded away
	speck.SetTo(inRange)
	speck.Close()
	s := tasks.NewState("d", 0)
	defer s.Close()
	cvmat.Set(s, FieldHSV, hsv)
	if _, err := stage(t, "mask", DefaultOptions()).Process(ctx, s); err != nil {
		t.Fatal(err)
	}
	m, _ := cvmat.Get(s, FieldMask)
	if n := gocv.CountNonZero(m); n != 400 {
		t.Errorf("mask has %d pixels set, want 400 (the 20×20 square, not the speck)", n)
	}
	if m.GetUCharAt(20, 20) != 255 || m.GetUCharAt(62, 62) != 0 {
		t.Error("wrong pixels set")
	}
	if s.Has(FieldHSV) {
		t.Error("mask left hsv in the state")
	}
}

func TestContoursFindsBlobsOrFilters(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	mask := gocv.NewMatWithSize(100, 100, gocv.MatTypeCV8U)
	for _, r := range []image.Rectangle{image.Rect(10, 10, 30, 30), image.Rect(50, 50, 60, 60)} {
		reg := mask.Region(r)
		reg.SetTo(gocv.NewScalar(255, 0, 0, 0))
		reg.Close()
	}
	s := tasks.NewState("d", 0)
	defer s.Close()
	cvmat.Set(s, FieldMask, mask)
	c := stage(t, "contours", DefaultOptions())
	if out, err := c.Process(ctx, s); err != nil || out != tasks.Continue {
		t.Fatal(out, err)
	}
	pts, _ := listToContours(s, FieldContours)
	if len(pts) != 2 || len(pts[0]) != 4 || len(pts[1]) != 4 {
		t.Errorf("contours = %v, want two 4-point rectangles", pts)
	}
	cvmat.Set(s, FieldMask, gocv.NewMatWithSize(100, 100, gocv.MatTypeCV8U))
	if out, err := c.Process(ctx, s); err != nil || out != tasks.Filtered {
		t.Errorf("empty mask: %v %v, want Filtered", out, err)
	}
}

func TestCirclePicksLargestContour(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	s := tasks.NewState("d", 0)
	defer s.Close()
	small := []image.Point{{0, 0}, {0, 3}, {3, 3}, {3, 0}}
	big := []image.Point{{100, 100}, {100, 119}, {119, 119}, {119, 100}}
	s.SetList(FieldContours, contoursToList([][]image.Point{small, big}))
	if out, err := stage(t, "circle", DefaultOptions()).Process(ctx, s); err != nil || out != tasks.Continue {
		t.Fatal(out, err)
	}
	x, _ := s.Num(FieldX)
	y, _ := s.Num(FieldY)
	r, _ := s.Num(FieldRadius)
	cx, _ := s.Num(FieldCenterX)
	cy, _ := s.Num(FieldCenterY)
	if math.Abs(x-109.5) > 0.01 || math.Abs(y-109.5) > 0.01 || math.Abs(r-19*math.Sqrt2/2) > 0.05 || cx != 109 || cy != 109 {
		t.Errorf("circle (%g,%g) r %g centroid (%g,%g), want (109.5,109.5) r 13.43 centroid (109,109)", x, y, r, cx, cy)
	}
}

func TestCircleFiltersSmallRadius(t *testing.T) {
	s := tasks.NewState("d", 0)
	defer s.Close()
	s.SetList(FieldContours, contoursToList([][]image.Point{{{0, 0}, {0, 6}, {6, 6}, {6, 0}}})) // radius 4.24
	if out, err := stage(t, "circle", DefaultOptions()).Process(ctx, s); err != nil || out != tasks.Filtered {
		t.Errorf("%v %v, want Filtered", out, err)
	}
	if s.Has(FieldX) {
		t.Error("filtered frame has x")
	}
}

func TestDrawOnlyWhenAnnotating(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	off := stage(t, "draw", DefaultOptions())
	if len(off.Reads()) != 0 || len(off.Writes()) != 0 {
		t.Errorf("draw without annotate reads %v writes %v", off.Reads(), off.Writes())
	}
	o := DefaultOptions()
	o.Annotate = true
	s := tasks.NewState("d", 0)
	defer s.Close()
	cvmat.Set(s, FieldFrame, grey(100, 100))
	for k, v := range map[string]float64{FieldX: 50, FieldY: 50, FieldRadius: 20, FieldCenterX: 50, FieldCenterY: 50} {
		s.SetNum(k, v)
	}
	if _, err := stage(t, "draw", o).Process(ctx, s); err != nil {
		t.Fatal(err)
	}
	f, _ := cvmat.Get(s, FieldFrame)
	if v := f.GetVecbAt(50, 70); v[0] != 0 || v[1] != 255 || v[2] != 255 { // yellow circle, BGR
		t.Errorf("circle pixel = %v, want yellow [0 255 255]", v)
	}
	if v := f.GetVecbAt(50, 50); v[0] != 0 || v[1] != 0 || v[2] != 255 { // red centroid
		t.Errorf("centroid pixel = %v, want red [0 0 255]", v)
	}
}

func TestSinkResult(t *testing.T) {
	s := tasks.NewState("d", 0)
	defer s.Close()
	s.SetNum(FieldWidth, 500)
	s.SetNum(FieldHeight, 375)
	k := stage(t, "sink", DefaultOptions())
	if _, err := k.Process(ctx, s); err != nil {
		t.Fatal(err)
	}
	if got, want := string(s.Result()), `{"detected":false,"width":500,"height":375}`; got != want {
		t.Errorf("undetected result %s, want %s", got, want)
	}
	for k, v := range map[string]float64{FieldX: 1.5, FieldY: 2.25, FieldRadius: 7, FieldCenterX: 1, FieldCenterY: 2} {
		s.SetNum(k, v)
	}
	if _, err := k.Process(ctx, s); err != nil {
		t.Fatal(err)
	}
	want := `{"detected":true,"x":1.5,"y":2.25,"radius":7,"center_x":1,"center_y":2,"width":500,"height":375}`
	if got := string(s.Result()); got != want {
		t.Errorf("result %s, want %s", got, want)
	}
}

func TestSinkRateLimitsAnnotatedFrames(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	o := DefaultOptions()
	o.Annotate = true
	o.AnnotatedRate = 0.001 // one per 1000 s: only the first frame per device
	k := stage(t, "sink", o)
	got := map[string]int{}
	for i, dev := range []string{"a", "a", "b", "a", "b"} {
		s := tasks.NewState(dev, uint64(i))
		cvmat.Set(s, FieldFrame, grey(20, 20))
		if _, err := k.Process(ctx, s); err != nil {
			t.Fatal(err)
		}
		if img := s.Annotated(); img != nil {
			if img[0] != 0xFF || img[1] != 0xD8 {
				t.Error("annotated frame is not a JPEG")
			}
			got[dev]++
		}
		s.Close()
	}
	if got["a"] != 1 || got["b"] != 1 {
		t.Errorf("annotated frames per device %v, want one each", got)
	}
}

// runLocal runs the whole pipeline on one frame and returns the result.
func runLocal(t *testing.T, p *tasks.Pipeline, frame gocv.Mat) (Result, string) {
	t.Helper()
	s := tasks.NewState("d", 0)
	defer s.Close()
	cvmat.Set(s, tasks.FieldSource, frame)
	filtered, err := p.Run(ctx, s, 0, p.Len()-1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(ctx, s, p.Len()-1, p.Len(), nil); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(s.Result(), &r); err != nil {
		t.Fatal(err)
	}
	return r, filtered
}

func TestPipelineFindsSyntheticBall(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	o := source.SyntheticOptions{Width: 640, Height: 480, Seed: 7, Frames: source.Period}
	src := source.NewSynthetic(o)
	defer src.Close()
	scale := 500.0 / 640
	for n := 0; n < o.Frames; n++ {
		f, err := src.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, filtered := runLocal(t, p, f)
		truth := o.TruthAt(n)
		switch {
		case !truth.Visible:
			if r.Detected || filtered != "contours" {
				t.Errorf("frame %d: no ball, got detected=%v filtered at %q", n, r.Detected, filtered)
			}
		case truth.Full:
			if !r.Detected {
				t.Errorf("frame %d: ball at (%d,%d) r %d not detected (filtered at %q)", n, truth.X, truth.Y, truth.Radius, filtered)
				continue
			}
			tx, ty := (float64(truth.X)+0.5)*scale-0.5, (float64(truth.Y)+0.5)*scale-0.5
			if d := math.Hypot(*r.X-tx, *r.Y-ty); d > 2 {
				t.Errorf("frame %d: centre (%.2f,%.2f), truth (%.1f,%.1f): %.2f px off", n, *r.X, *r.Y, tx, ty, d)
			}
		}
	}
}
