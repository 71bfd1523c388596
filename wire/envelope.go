package wire

import (
	"errors"
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// Version is the envelope format version this build writes and reads.
// Version 2 carries typed values (numbers, strings, n-dimensional arrays,
// lists) instead of version 1's OpenCV matrices and point lists.
const Version = 2

// Limits a decoder enforces besides the message size.
const (
	MaxFields    = 64      // typed fields in one state
	MaxTimings   = 32      // per-stage timings in one state
	MaxDims      = 4       // dimensions of an array
	MaxDim       = 16384   // length of one dimension
	MaxListLen   = 4096    // values in a list
	MaxListElems = 1 << 21 // array elements over all arrays of one list
	MaxStringLen = 4096    // bytes of a string value
	MaxOptsBytes = 4096    // encoded pipeline options
)

// DefaultMaxMessageBytes is the default bound on one encoded state.
const DefaultMaxMessageBytes = 2 << 20

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
	KindArray  Kind = 2
	KindString Kind = 3
	KindList   Kind = 4
)

// CodecRaw is the array codec every build knows: the elements in row-major
// (C) order, little-endian. Pipelines register others (package tasks).
const CodecRaw = "raw"

// dtypeSizes are the element types an array may have, named as NumPy names
// them, with their sizes in bytes.
var dtypeSizes = map[string]int{
	"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "int32": 4, "float32": 4, "float64": 8,
}

// DTypeSize returns the size in bytes of an element type, and false for a
// type a state may not carry.
func DTypeSize(dtype string) (int, bool) {
	n, ok := dtypeSizes[dtype]
	return n, ok
}

// Array is an n-dimensional array on the wire: its element type, its shape
// (row-major), and its data encoded with Codec. Raw data is the product of
// the shape times the element size, little-endian.
type Array struct {
	DType string `cbor:"1,keyasint"`
	Shape []int  `cbor:"2,keyasint"`
	Codec string `cbor:"3,keyasint"`
	Data  Bytes  `cbor:"4,keyasint"`
}

// Bytes is an array's encoded data. It encodes as a CBOR byte string like
// a []byte, but decodes without a copy: Decode leaves it referring to the
// message it decoded, so that a raw frame is not copied once more between
// the MQTT payload and the matrix a stage reads (issue 10). The message
// must therefore not be changed while the envelope is in use.
type Bytes []byte

// UnmarshalCBOR implements cbor.Unmarshaler: data is one well-formed CBOR
// data item (the decoder has checked it), a definite-length byte string,
// null or undefined (nil, as for a []byte); b refers to the string's bytes
// inside data. (fxamacker/cbor passes a slice of the message being decoded
// and asks Unmarshalers to copy; not copying is the point, and
// TestDecodeArrayDataRefersToTheMessage checks the library still does so.)
func (b *Bytes) UnmarshalCBOR(data []byte) error {
	if len(data) == 1 && (data[0] == 0xf6 || data[0] == 0xf7) { // null or undefined, as a []byte decodes them
		*b = nil
		return nil
	}
	if len(data) == 0 || data[0]>>5 != 2 {
		return errors.New("cbor: array data is not a byte string")
	}
	n, hdr := uint64(data[0]&0x1f), 1
	switch {
	case n < 24:
	case n <= 27:
		hdr += 1 << (n - 24) // 1, 2, 4 or 8 length bytes follow
		if len(data) < hdr {
			return errors.New("cbor: truncated byte string")
		}
		n = 0
		for _, c := range data[1:hdr] {
			n = n<<8 | uint64(c)
		}
	default: // 28..30 are reserved, 31 is an indefinite length
		return errors.New("cbor: array data is not a definite-length byte string")
	}
	if uint64(len(data)-hdr) != n {
		return errors.New("cbor: byte string length does not match its data")
	}
	*b = Bytes(data[hdr:len(data):len(data)])
	return nil
}

// Elements is the number of elements the shape holds.
func (a *Array) Elements() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// Field is one typed value of a task state.
type Field struct {
	Kind  Kind    `cbor:"1,keyasint"`
	Num   float64 `cbor:"2,keyasint,omitempty"`
	Array *Array  `cbor:"3,keyasint,omitempty"`
	Str   string  `cbor:"4,keyasint,omitempty"`
	List  []Field `cbor:"5,keyasint,omitempty"` // numbers, strings or raw arrays; no nested list
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
		MaxArrayElements:  MaxListLen,
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

// Decode decodes and validates an envelope of at most maxBytes bytes. The
// arrays' data refer to b (see Bytes): b must not change while the
// envelope is in use.
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
		MaxArrayElements: MaxListLen,
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

func (f *Field) validate() error { return f.check(true) }

// check validates a field; inList is false for a value inside a list.
func (f *Field) check(top bool) error {
	set := 0
	if f.Num != 0 {
		set |= 1 << KindNumber
	}
	if f.Array != nil {
		set |= 1 << KindArray
	}
	if f.Str != "" {
		set |= 1 << KindString
	}
	if f.List != nil {
		set |= 1 << KindList
	}
	if set&^(1<<f.Kind) != 0 {
		return fmt.Errorf("%s field carries other data", f.Kind)
	}
	switch f.Kind {
	case KindNumber:
		if math.IsNaN(f.Num) || math.IsInf(f.Num, 0) {
			return errors.New("number is not finite")
		}
	case KindString:
		if len(f.Str) > MaxStringLen {
			return fmt.Errorf("string of %d bytes (max %d)", len(f.Str), MaxStringLen)
		}
	case KindArray:
		if f.Array == nil {
			return errors.New("array field without an array")
		}
		return f.Array.validate()
	case KindList:
		if !top {
			return errors.New("list inside a list")
		}
		if len(f.List) > MaxListLen {
			return fmt.Errorf("list of %d values (max %d)", len(f.List), MaxListLen)
		}
		total := 0
		for i := range f.List {
			if err := f.List[i].check(false); err != nil {
				return fmt.Errorf("list value %d: %w", i, err)
			}
			if a := f.List[i].Array; a != nil {
				if a.Codec != CodecRaw {
					return fmt.Errorf("list value %d: arrays in a list are raw, not %s", i, a.Codec)
				}
				// Raw data was checked against the shape: total stays small.
				if total += a.Elements(); total > MaxListElems {
					return fmt.Errorf("list arrays hold more than %d elements", MaxListElems)
				}
			}
		}
	default:
		return fmt.Errorf("unknown field kind %d", f.Kind)
	}
	return nil
}

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindNumber:
		return "number"
	case KindArray:
		return "array"
	case KindString:
		return "string"
	case KindList:
		return "list"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (a *Array) validate() error {
	size, ok := DTypeSize(a.DType)
	if !ok {
		return fmt.Errorf("array element type %q not supported", a.DType)
	}
	if len(a.Shape) < 1 || len(a.Shape) > MaxDims {
		return fmt.Errorf("array has %d dimensions (allowed 1..%d)", len(a.Shape), MaxDims)
	}
	for _, d := range a.Shape {
		if d < 1 || d > MaxDim {
			return fmt.Errorf("array shape %v out of range (each 1..%d)", a.Shape, MaxDim)
		}
	}
	if a.Codec == CodecRaw {
		if want := a.Elements() * size; len(a.Data) != want {
			return fmt.Errorf("raw %s array %v has %d bytes, want %d", a.DType, a.Shape, len(a.Data), want)
		}
		return nil
	}
	if err := ValidateName(a.Codec); err != nil {
		return fmt.Errorf("array codec: %w", err)
	}
	if len(a.Data) == 0 {
		return fmt.Errorf("%s array has no data", a.Codec)
	}
	return nil
}
