package wire

import (
	"errors"
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// Version is the envelope format version this build writes and reads.
const Version = 1

// Limits a decoder enforces besides the message size.
const (
	MaxFields      = 64      // typed fields in one state
	MaxTimings     = 32      // per-stage timings in one state
	MaxMatDim      = 16384   // rows or cols of a matrix
	MaxMatChannels = 4       // channels of a matrix
	MaxPointLists  = 4096    // point lists in one field
	MaxPoints      = 1 << 20 // points in one field, over all lists
	MaxOptsBytes   = 4096    // encoded pipeline options
)

// DefaultMaxMessageBytes is the default bound on one encoded state.
const DefaultMaxMessageBytes = 8 << 20

// Where a stage ran.
const (
	OnDevice = "device"
	OnCloud  = "cloud"
)

// Kind tells which member of a Field is set.
type Kind uint8

// Field kinds.
const (
	KindNumber Kind = 1
	KindMat    Kind = 2
	KindPoints Kind = 3
)

// MatCodec tells how a matrix's Data is encoded.
type MatCodec uint8

// Matrix codecs. Raw and PNG are lossless; JPEG is lossy and opt-in.
const (
	CodecRaw  MatCodec = 0
	CodecPNG  MatCodec = 1
	CodecJPEG MatCodec = 2
)

// String names the codec as the configuration spells it.
func (c MatCodec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecPNG:
		return "png"
	case CodecJPEG:
		return "jpeg"
	case CodecAuto:
		return "auto"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// CodecAuto is a configuration choice, never on the wire: PNG for
// single-channel 8-bit matrices (masks compress to a few hundred bytes),
// raw for the rest. Both are lossless.
const CodecAuto MatCodec = 255

// ParseMatCodec parses "auto", "raw", "png" or "jpeg".
func ParseMatCodec(s string) (MatCodec, error) {
	switch s {
	case "auto":
		return CodecAuto, nil
	case "raw":
		return CodecRaw, nil
	case "png":
		return CodecPNG, nil
	case "jpeg":
		return CodecJPEG, nil
	}
	return 0, fmt.Errorf("unknown matrix codec %q (allowed: auto, raw, png, jpeg)", s)
}

// Mat is a matrix on the wire: an OpenCV element type (depth and channels),
// its size, and its data encoded with Codec. Raw data is rows*cols*elemsize
// bytes, row-major and continuous.
type Mat struct {
	Rows  int      `cbor:"1,keyasint"`
	Cols  int      `cbor:"2,keyasint"`
	Type  int      `cbor:"3,keyasint"`
	Codec MatCodec `cbor:"4,keyasint"`
	Data  []byte   `cbor:"5,keyasint"`
}

// Field is one typed value of a task state.
type Field struct {
	Kind   Kind      `cbor:"1,keyasint"`
	Num    float64   `cbor:"2,keyasint,omitempty"`
	Mat    *Mat      `cbor:"3,keyasint,omitempty"`
	Points [][]int32 `cbor:"4,keyasint,omitempty"` // each list is x0,y0,x1,y1,...
}

// Timing is the time one stage took and where it ran.
type Timing struct {
	_     struct{} `cbor:",toarray"`
	Stage string
	Nanos int64
	Where string
}

// Envelope is the task state sent from one stage to the next.
type Envelope struct {
	Version    int              `cbor:"1,keyasint"`
	Pipeline   string           `cbor:"2,keyasint"`
	Opts       cbor.RawMessage  `cbor:"3,keyasint,omitempty"` // pipeline options, as the device configured them
	Device     string           `cbor:"4,keyasint"`
	Run        string           `cbor:"5,keyasint"`
	Seq        uint64           `cbor:"6,keyasint"`
	Split      int              `cbor:"7,keyasint"`
	Next       string           `cbor:"8,keyasint"`            // the stage that consumes this state
	CaptureTS  int64            `cbor:"9,keyasint"`            // device wall clock, Unix nanoseconds
	FilteredAt string           `cbor:"10,keyasint,omitempty"` // stage that ended the frame early
	Timings    []Timing         `cbor:"11,keyasint,omitempty"`
	Fields     map[string]Field `cbor:"12,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:   8,
		MaxArrayElements:  MaxPoints * 2,
		MaxMapPairs:       MaxFields,
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode validates e and encodes it. It does not check the size: callers
// compare the length against their max_message_bytes.
func Encode(e *Envelope) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return encMode.Marshal(e)
}

// ErrTooLarge is returned by Decode for input over the size bound.
var ErrTooLarge = errors.New("message larger than max_message_bytes")

// Decode decodes and validates an envelope of at most maxBytes bytes.
func Decode(b []byte, maxBytes int) (*Envelope, error) {
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w (%d > %d bytes)", ErrTooLarge, len(b), maxBytes)
	}
	var e Envelope
	if err := decMode.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Head is the part of an envelope that names the frame: enough to answer
// a state that cannot be decoded in full (a newer version, a bad field,
// too large) with an error result.
type Head struct {
	Version   int    `cbor:"1,keyasint"`
	Device    string `cbor:"4,keyasint"`
	Run       string `cbor:"5,keyasint"`
	Seq       uint64 `cbor:"6,keyasint"`
	Split     int    `cbor:"7,keyasint"`
	CaptureTS int64  `cbor:"9,keyasint"`
}

// headMode decodes a Head leniently: other keys are skipped, whatever they
// hold (bounded in nesting and size like a full decode).
var headMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		MaxNestedLevels:  8,
		MaxArrayElements: MaxPoints * 2,
		MaxMapPairs:      MaxFields,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// DecodeHead reads the frame's identity from a state, however large or
// otherwise invalid, and checks that device and run are well formed.
func DecodeHead(b []byte) (Head, error) {
	var h Head
	if err := headMode.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("decode state head: %w", err)
	}
	if err := ValidateName(h.Device); err != nil {
		return h, fmt.Errorf("state device: %w", err)
	}
	if len(h.Run) == 0 || len(h.Run) > MaxNameLen {
		return h, fmt.Errorf("state run id has length %d (allowed 1..%d)", len(h.Run), MaxNameLen)
	}
	return h, nil
}

// Validate checks every bound and invariant of the envelope.
func (e *Envelope) Validate() error {
	if e.Version != Version {
		return fmt.Errorf("state version %d, this build reads version %d", e.Version, Version)
	}
	for what, name := range map[string]string{"pipeline": e.Pipeline, "device": e.Device, "next stage": e.Next} {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("state %s: %w", what, err)
		}
	}
	if e.FilteredAt != "" {
		if err := ValidateName(e.FilteredAt); err != nil {
			return fmt.Errorf("state filtered_at: %w", err)
		}
	}
	if len(e.Run) == 0 || len(e.Run) > MaxNameLen {
		return fmt.Errorf("state run id has length %d (allowed 1..%d)", len(e.Run), MaxNameLen)
	}
	if e.Split < 1 || e.Split > 64 {
		return fmt.Errorf("state split %d out of range", e.Split)
	}
	if len(e.Opts) > MaxOptsBytes {
		return fmt.Errorf("state options are %d bytes (max %d)", len(e.Opts), MaxOptsBytes)
	}
	if len(e.Timings) > MaxTimings {
		return fmt.Errorf("state has %d timings (max %d)", len(e.Timings), MaxTimings)
	}
	if len(e.Fields) > MaxFields {
		return fmt.Errorf("state has %d fields (max %d)", len(e.Fields), MaxFields)
	}
	for name, f := range e.Fields {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("state field: %w", err)
		}
		if err := f.validate(); err != nil {
			return fmt.Errorf("state field %q: %w", name, err)
		}
	}
	return nil
}

func (f *Field) validate() error {
	switch f.Kind {
	case KindNumber:
		if f.Mat != nil || f.Points != nil {
			return errors.New("number field carries other data")
		}
		if math.IsNaN(f.Num) || math.IsInf(f.Num, 0) {
			return errors.New("number is not finite")
		}
	case KindMat:
		if f.Mat == nil || f.Points != nil {
			return errors.New("matrix field without exactly a matrix")
		}
		return f.Mat.validate()
	case KindPoints:
		if f.Mat != nil {
			return errors.New("points field carries a matrix")
		}
		if len(f.Points) > MaxPointLists {
			return fmt.Errorf("%d point lists (max %d)", len(f.Points), MaxPointLists)
		}
		total := 0
		for _, l := range f.Points {
			if len(l)%2 != 0 {
				return errors.New("point list has an odd number of coordinates")
			}
			total += len(l) / 2
		}
		if total > MaxPoints {
			return fmt.Errorf("%d points (max %d)", total, MaxPoints)
		}
	default:
		return fmt.Errorf("unknown field kind %d", f.Kind)
	}
	return nil
}

// Depth codes of OpenCV element types (type = depth + 8*(channels-1)).
var depthSize = map[int]int{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8}

// ElemSize returns the bytes per element of an OpenCV type, and false for a
// type outside the bounds a state may carry.
func ElemSize(typ int) (int, bool) {
	if typ < 0 {
		return 0, false
	}
	depth, ch := typ&7, typ>>3+1
	size, ok := depthSize[depth]
	if !ok || ch > MaxMatChannels {
		return 0, false
	}
	return size * ch, true
}

func (m *Mat) validate() error {
	if m.Rows < 1 || m.Rows > MaxMatDim || m.Cols < 1 || m.Cols > MaxMatDim {
		return fmt.Errorf("matrix size %dx%d out of range (1..%d)", m.Rows, m.Cols, MaxMatDim)
	}
	es, ok := ElemSize(m.Type)
	if !ok {
		return fmt.Errorf("matrix type %d not supported", m.Type)
	}
	switch m.Codec {
	case CodecRaw:
		if want := m.Rows * m.Cols * es; len(m.Data) != want {
			return fmt.Errorf("raw matrix %dx%d type %d has %d bytes, want %d", m.Rows, m.Cols, m.Type, len(m.Data), want)
		}
	case CodecPNG, CodecJPEG:
		if len(m.Data) == 0 {
			return fmt.Errorf("%s matrix has no data", m.Codec)
		}
		if m.Type&7 != 0 {
			return fmt.Errorf("%s matrix must have 8-bit depth, has type %d", m.Codec, m.Type)
		}
	default:
		return fmt.Errorf("unknown matrix codec %d", m.Codec)
	}
	return nil
}
