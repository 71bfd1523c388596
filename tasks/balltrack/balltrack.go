// Package balltrack is the classic OpenCV green-ball tracker as a splitpoint
// pipeline of seven stages: capture → hsv → mask → contours → circle → draw
// → sink. Importing it registers the pipeline "balltrack".
package balltrack

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"gocv.io/x/gocv"
)

// Name is the pipeline's registered name.
const Name = "balltrack"

// Field names of the pipeline's state.
const (
	FieldFrame    = "frame"
	FieldWidth    = "width"
	FieldHeight   = "height"
	FieldHSV      = "hsv"
	FieldMask     = "mask"
	FieldContours = "contours"
	FieldX        = "x"
	FieldY        = "y"
	FieldRadius   = "radius"
	FieldCenterX  = "center_x"
	FieldCenterY  = "center_y"
)

// The algorithm's constants, as in the classic tracker.
var (
	// GreenLower and GreenUpper bound the ball's colour in HSV.
	GreenLower = gocv.NewScalar(29, 86, 6, 0)
	GreenUpper = gocv.NewScalar(64, 255, 255, 0)
)

const (
	blurSize        = 11
	morphIterations = 2
	// MinRadius is the largest enclosing-circle radius that is filtered as
	// noise: a detection needs radius > MinRadius.
	MinRadius = 5
)

// Options configure the pipeline ([balltrack] in the device's config).
type Options struct {
	// Width is the width frames are resized to (height keeps the aspect).
	Width int `toml:"width" cbor:"1,keyasint" doc:"frames are resized to this width, px (16..4096); the height keeps the aspect"`
	// Annotate draws the circle and centroid and publishes the frame.
	Annotate bool `toml:"annotate" cbor:"2,keyasint" doc:"draw the circle and centroid and publish JPEG frames on the device's annotated topic"`
	// AnnotatedRate bounds the annotated frames per second per device.
	AnnotatedRate float64 `toml:"annotated_rate" cbor:"3,keyasint" doc:"annotated frames per second per device, at most (> 0, ≤ 100)"`
	// AnnotatedQuality is the JPEG quality of annotated frames.
	AnnotatedQuality int `toml:"annotated_quality" cbor:"4,keyasint" doc:"JPEG quality of annotated frames (1..100)"`
}

// DefaultOptions returns the documented defaults.
func DefaultOptions() *Options {
	return &Options{Width: 500, Annotate: false, AnnotatedRate: 2, AnnotatedQuality: 80}
}

// Validate implements tasks.Options.
func (o *Options) Validate() error {
	switch {
	case o.Width < 16 || o.Width > 4096:
		return fmt.Errorf("width: must be 16..4096 (got %d)", o.Width)
	case o.AnnotatedRate <= 0 || o.AnnotatedRate > 100:
		return fmt.Errorf("annotated_rate: must be > 0 and ≤ 100 per second (got %g)", o.AnnotatedRate)
	case o.AnnotatedQuality < 1 || o.AnnotatedQuality > 100:
		return fmt.Errorf("annotated_quality: must be 1..100 (got %d)", o.AnnotatedQuality)
	}
	return nil
}

func init() {
	tasks.Register(tasks.Spec{
		Name:       Name,
		Summary:    "green ball tracker: resize, blur+HSV, mask, contours, enclosing circle, draw, sink",
		NewOptions: func() tasks.Options { return DefaultOptions() },
		Stages: func(o tasks.Options) ([]tasks.Stage, error) {
			opts, ok := o.(*Options)
			if !ok {
				return nil, fmt.Errorf("balltrack: options of type %T", o)
			}
			return Stages(opts), nil
		},
		CheckSource:   source.ValidateURI,
		OpenSource:    openSource,
		HomeAssistant: tasks.HomeAssistant{Frames: true},
	})
}

// Stages returns the seven stages for the given options.
func Stages(o *Options) []tasks.Stage {
	return []tasks.Stage{
		&capture{width: o.Width},
		hsvStage{},
		maskStage{},
		contoursStage{},
		circleStage{},
		&drawStage{annotate: o.Annotate},
		newSink(o),
	}
}

type capture struct{ width int }

func (*capture) Name() string     { return "capture" }
func (*capture) Reads() []string  { return []string{tasks.FieldSource} }
func (*capture) Writes() []string { return []string{FieldFrame, FieldWidth, FieldHeight} }

func (c *capture) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	src, err := cvmat.Get(s, tasks.FieldSource)
	if err != nil || src.Empty() {
		return 0, fmt.Errorf("no source frame: %w", err)
	}
	if src.Type() != gocv.MatTypeCV8UC3 {
		return 0, fmt.Errorf("source frame has type %v, want 8-bit BGR", src.Type())
	}
	w, h := src.Cols(), src.Rows()
	nh := h * c.width / w
	if nh < 1 {
		return 0, fmt.Errorf("source frame %dx%d too flat to resize to width %d", w, h, c.width)
	}
	frame := gocv.NewMat()
	gocv.Resize(src, &frame, image.Pt(c.width, nh), 0, 0, gocv.InterpolationArea)
	s.Delete(tasks.FieldSource)
	cvmat.Set(s, FieldFrame, frame)
	s.SetNum(FieldWidth, float64(c.width))
	s.SetNum(FieldHeight, float64(nh))
	return tasks.Continue, nil
}

type hsvStage struct{}

func (hsvStage) Name() string     { return "hsv" }
func (hsvStage) Reads() []string  { return []string{FieldFrame} }
func (hsvStage) Writes() []string { return []string{FieldHSV} }

func (hsvStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	frame, err := cvmat.Get(s, FieldFrame)
	if err != nil {
		return 0, err
	}
	blurred := gocv.NewMat()
	defer blurred.Close()
	gocv.GaussianBlur(frame, &blurred, image.Pt(blurSize, blurSize), 0, 0, gocv.BorderDefault)
	hsv := gocv.NewMat()
	gocv.CvtColor(blurred, &hsv, gocv.ColorBGRToHSV)
	cvmat.Set(s, FieldHSV, hsv)
	return tasks.Continue, nil
}

type maskStage struct{}

func (maskStage) Name() string     { return "mask" }
func (maskStage) Reads() []string  { return []string{FieldHSV} }
func (maskStage) Writes() []string { return []string{FieldMask} }

func (maskStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	hsv, err := cvmat.Get(s, FieldHSV)
	if err != nil {
		return 0, err
	}
	inRange := gocv.NewMat()
	defer inRange.Close()
	gocv.InRangeWithScalar(hsv, GreenLower, GreenUpper, &inRange)
	kernel := gocv.NewMat() // empty: OpenCV's default 3×3 rectangle
	defer kernel.Close()
	eroded := gocv.NewMat()
	defer eroded.Close()
	gocv.ErodeWithParams(inRange, &eroded, kernel, image.Pt(-1, -1), morphIterations, int(gocv.BorderConstant))
	mask := gocv.NewMat()
	// A constant 0 border never wins a maximum, which is what OpenCV's
	// default border value means for dilation.
	gocv.DilateWithParams(eroded, &mask, kernel, image.Pt(-1, -1), morphIterations, gocv.BorderConstant, color.RGBA{})
	s.Delete(FieldHSV)
	cvmat.Set(s, FieldMask, mask)
	return tasks.Continue, nil
}

type contoursStage struct{}

func (contoursStage) Name() string     { return "contours" }
func (contoursStage) Reads() []string  { return []string{FieldMask} }
func (contoursStage) Writes() []string { return []string{FieldContours} }

func (contoursStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	mask, err := cvmat.Get(s, FieldMask)
	if err != nil {
		return 0, err
	}
	pv := gocv.FindContours(mask, gocv.RetrievalExternal, gocv.ChainApproxSimple)
	contours := pv.ToPoints()
	pv.Close()
	s.Delete(FieldMask)
	if len(contours) == 0 {
		return tasks.Filtered, nil
	}
	s.SetList(FieldContours, contoursToList(contours))
	return tasks.Continue, nil
}

type circleStage struct{}

func (circleStage) Name() string    { return "circle" }
func (circleStage) Reads() []string { return []string{FieldContours} }
func (circleStage) Writes() []string {
	return []string{FieldX, FieldY, FieldRadius, FieldCenterX, FieldCenterY}
}

func (circleStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	contours, err := listToContours(s, FieldContours)
	if err != nil {
		return 0, err
	}
	if len(contours) == 0 {
		return 0, errors.New("no contours")
	}
	best, bestArea := -1, -1.0
	for i, c := range contours {
		pv := gocv.NewPointVectorFromPoints(c)
		a := gocv.ContourArea(pv)
		pv.Close()
		if a > bestArea { // first of equal areas, as Python's max()
			best, bestArea = i, a
		}
	}
	c := contours[best]
	pv := gocv.NewPointVectorFromPoints(c)
	x, y, r := gocv.MinEnclosingCircle(pv)
	pv.Close()
	s.Delete(FieldContours)
	if r <= MinRadius {
		return tasks.Filtered, nil
	}
	m00, m10, m01, err := contourMoments(c)
	if err != nil {
		return 0, err
	}
	if m00 == 0 { // a degenerate (zero-area) contour has no centroid
		return tasks.Filtered, nil
	}
	s.SetNum(FieldX, float64(x))
	s.SetNum(FieldY, float64(y))
	s.SetNum(FieldRadius, float64(r))
	s.SetNum(FieldCenterX, float64(int(m10/m00)))
	s.SetNum(FieldCenterY, float64(int(m01/m00)))
	return tasks.Continue, nil
}

// contoursToList stores contours as a list of int32 arrays of shape [n 2]
// (x, y per point), the form OpenCV's Python API returns them in.
func contoursToList(contours [][]image.Point) []any {
	out := make([]any, len(contours))
	for i, c := range contours {
		b := make([]byte, 8*len(c))
		for j, p := range c {
			binary.LittleEndian.PutUint32(b[8*j:], uint32(int32(p.X)))
			binary.LittleEndian.PutUint32(b[8*j+4:], uint32(int32(p.Y)))
		}
		out[i] = tasks.Array{DType: tasks.Int32, Shape: []int{len(c), 2}, Data: b}
	}
	return out
}

// listToContours reads contours stored by contoursToList.
func listToContours(s *tasks.State, name string) ([][]image.Point, error) {
	l, ok := s.List(name)
	if !ok {
		return nil, fmt.Errorf("no %s", name)
	}
	out := make([][]image.Point, len(l))
	for i, v := range l {
		a, ok := v.(tasks.Array)
		if !ok || a.DType != tasks.Int32 || len(a.Shape) != 2 || a.Shape[1] != 2 || a.Validate() != nil {
			return nil, fmt.Errorf("%s: value %d is not an int32 array of shape [n 2]", name, i)
		}
		pts := make([]image.Point, a.Shape[0])
		for j := range pts {
			pts[j] = image.Pt(int(int32(binary.LittleEndian.Uint32(a.Data[8*j:]))), int(int32(binary.LittleEndian.Uint32(a.Data[8*j+4:]))))
		}
		out[i] = pts
	}
	return out, nil
}

// contourMoments computes cv::moments of a contour, as cv2.moments(c) does.
func contourMoments(c []image.Point) (m00, m10, m01 float64, err error) {
	m := gocv.NewMatWithSize(len(c), 1, gocv.MatTypeCV32SC2)
	defer m.Close()
	b, err := m.DataPtrUint8()
	if err != nil {
		return 0, 0, 0, err
	}
	for i, p := range c {
		binary.NativeEndian.PutUint32(b[8*i:], uint32(int32(p.X)))
		binary.NativeEndian.PutUint32(b[8*i+4:], uint32(int32(p.Y)))
	}
	mo := gocv.Moments(m, false)
	return mo["m00"], mo["m10"], mo["m01"], nil
}

type drawStage struct{ annotate bool }

func (*drawStage) Name() string { return "draw" }
func (d *drawStage) Reads() []string {
	if !d.annotate {
		return nil
	}
	return []string{FieldFrame, FieldX, FieldY, FieldRadius, FieldCenterX, FieldCenterY}
}
func (d *drawStage) Writes() []string {
	if !d.annotate {
		return nil
	}
	return []string{FieldFrame}
}

func (d *drawStage) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	if !d.annotate {
		return tasks.Continue, nil
	}
	frame, err := cvmat.Get(s, FieldFrame)
	if err != nil {
		return 0, err
	}
	x, _ := s.Num(FieldX)
	y, _ := s.Num(FieldY)
	r, _ := s.Num(FieldRadius)
	cx, _ := s.Num(FieldCenterX)
	cy, _ := s.Num(FieldCenterY)
	gocv.Circle(&frame, image.Pt(int(x), int(y)), int(r), color.RGBA{R: 255, G: 255, B: 0, A: 0}, 2)
	gocv.Circle(&frame, image.Pt(int(cx), int(cy)), 5, color.RGBA{R: 255, A: 0}, -1)
	return tasks.Continue, nil
}

// Result is the pipeline's part of a result.
type Result struct {
	Detected bool     `json:"detected"`
	X        *float64 `json:"x,omitempty"`
	Y        *float64 `json:"y,omitempty"`
	Radius   *float64 `json:"radius,omitempty"`
	CenterX  *int     `json:"center_x,omitempty"`
	CenterY  *int     `json:"center_y,omitempty"`
	Width    int      `json:"width"`
	Height   int      `json:"height"`
}

type sink struct {
	annotate bool
	interval time.Duration
	quality  int

	mu   sync.Mutex
	last map[string]time.Time // device → last annotated frame
}

func newSink(o *Options) *sink {
	return &sink{
		annotate: o.Annotate,
		interval: time.Duration(float64(time.Second) / o.AnnotatedRate),
		quality:  o.AnnotatedQuality,
		last:     map[string]time.Time{},
	}
}

func (*sink) Name() string { return "sink" }
func (k *sink) Reads() []string {
	r := []string{FieldWidth, FieldHeight, FieldX, FieldY, FieldRadius, FieldCenterX, FieldCenterY}
	if k.annotate {
		r = append(r, FieldFrame)
	}
	return r
}
func (*sink) Writes() []string { return nil }

func (k *sink) Process(_ context.Context, s *tasks.State) (tasks.Outcome, error) {
	var r Result
	w, _ := s.Num(FieldWidth)
	h, _ := s.Num(FieldHeight)
	r.Width, r.Height = int(w), int(h)
	if x, ok := s.Num(FieldX); ok {
		y, _ := s.Num(FieldY)
		rad, _ := s.Num(FieldRadius)
		cxf, _ := s.Num(FieldCenterX)
		cyf, _ := s.Num(FieldCenterY)
		cx, cy := int(cxf), int(cyf)
		r.Detected = true
		r.X, r.Y, r.Radius, r.CenterX, r.CenterY = &x, &y, &rad, &cx, &cy
	}
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	s.SetResult(b)
	if !s.Has(FieldFrame) || !k.annotate || !k.due(s.Device) {
		return tasks.Continue, nil
	}
	if frame, err := cvmat.Get(s, FieldFrame); err == nil {
		buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, frame, []int{gocv.IMWriteJpegQuality, k.quality})
		if err != nil {
			return 0, err
		}
		s.SetAnnotated(append([]byte(nil), buf.GetBytes()...))
		buf.Close()
	}
	return tasks.Continue, nil
}

// due reports whether an annotated frame of the device may be published now.
func (k *sink) due(device string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if now.Sub(k.last[device]) < k.interval {
		return false
	}
	if len(k.last) > 4096 { // bound the map however many devices come and go
		clear(k.last)
	}
	k.last[device] = now
	return true
}
