package tasks

import (
	"encoding/json"
	"image"
	"sort"

	"gocv.io/x/gocv"
)

// FieldSource is the field the framework fills with the captured frame
// before the first stage runs. The first stage owns it from then on.
const FieldSource = "source"

// State is one frame's task state: typed fields plus the outputs the sink
// produces. A State owns its matrices: SetMat takes ownership, Delete and
// Close release them, and a matrix obtained with Mat is borrowed and must not
// be closed by the caller.
type State struct {
	// Device and Seq identify the frame; stages may use them (for example to
	// rate-limit per device) but must not change them.
	Device string
	Seq    uint64

	mats      map[string]gocv.Mat
	nums      map[string]float64
	points    map[string][][]image.Point
	result    json.RawMessage
	annotated []byte
}

// NewState returns an empty state for one frame of a device.
func NewState(device string, seq uint64) *State {
	return &State{
		Device: device,
		Seq:    seq,
		mats:   map[string]gocv.Mat{},
		nums:   map[string]float64{},
		points: map[string][][]image.Point{},
	}
}

// SetMat stores m under name and takes ownership of it; a matrix already
// stored under that name is closed.
func (s *State) SetMat(name string, m gocv.Mat) {
	s.Delete(name)
	s.mats[name] = m
}

// Mat returns the matrix stored under name. The state keeps ownership.
func (s *State) Mat(name string) (gocv.Mat, bool) {
	m, ok := s.mats[name]
	return m, ok
}

// SetNum stores a number under name.
func (s *State) SetNum(name string, v float64) {
	s.Delete(name)
	s.nums[name] = v
}

// Num returns the number stored under name.
func (s *State) Num(name string) (float64, bool) {
	v, ok := s.nums[name]
	return v, ok
}

// SetPoints stores point lists (for example contours) under name.
func (s *State) SetPoints(name string, p [][]image.Point) {
	s.Delete(name)
	s.points[name] = p
}

// Points returns the point lists stored under name.
func (s *State) Points(name string) ([][]image.Point, bool) {
	p, ok := s.points[name]
	return p, ok
}

// Has reports whether any field is stored under name.
func (s *State) Has(name string) bool {
	_, m := s.mats[name]
	_, n := s.nums[name]
	_, p := s.points[name]
	return m || n || p
}

// Names lists the stored field names in sorted order.
func (s *State) Names() []string {
	var out []string
	for k := range s.mats {
		out = append(out, k)
	}
	for k := range s.nums {
		out = append(out, k)
	}
	for k := range s.points {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Delete removes the field stored under name, closing a matrix.
func (s *State) Delete(name string) {
	if m, ok := s.mats[name]; ok {
		m.Close()
		delete(s.mats, name)
	}
	delete(s.nums, name)
	delete(s.points, name)
}

// Keep removes every field whose name is not in keep.
func (s *State) Keep(keep []string) {
	want := make(map[string]bool, len(keep))
	for _, k := range keep {
		want[k] = true
	}
	for _, name := range s.Names() {
		if !want[name] {
			s.Delete(name)
		}
	}
}

// SetResult records the sink's result: a JSON object of the pipeline's own
// fields, which the framework completes with the frame's identity.
func (s *State) SetResult(r json.RawMessage) { s.result = r }

// Result returns what SetResult recorded.
func (s *State) Result() json.RawMessage { return s.result }

// SetAnnotated records an encoded image (JPEG) that the framework publishes
// on the device's annotated topic.
func (s *State) SetAnnotated(jpeg []byte) { s.annotated = jpeg }

// Annotated returns what SetAnnotated recorded.
func (s *State) Annotated() []byte { return s.annotated }

// Close releases every matrix. The state is empty afterwards.
func (s *State) Close() {
	for name := range s.mats {
		s.Delete(name)
	}
	s.nums = map[string]float64{}
	s.points = map[string][][]image.Point{}
}
