package tasks

import (
	"fmt"

	"github.com/splitpoint/splitpoint/wire"
)

// DType is an array's element type, named as NumPy names it (the form
// NumPy, ONNX and OpenCV all map onto).
type DType string

// Element types a state may carry.
const (
	Uint8   DType = "uint8"
	Int8    DType = "int8"
	Uint16  DType = "uint16"
	Int16   DType = "int16"
	Int32   DType = "int32"
	Float32 DType = "float32"
	Float64 DType = "float64"
)

// Size is the element size in bytes (0 for an unknown type).
func (d DType) Size() int {
	n, _ := wire.DTypeSize(string(d))
	return n
}

// Array is an n-dimensional array: element type, shape (row-major, C
// order) and the elements, little-endian. An image of H×W pixels with C
// channels has shape [H W C] (or [H W] for one channel).
type Array struct {
	DType DType
	Shape []int
	Data  []byte
}

// Elements is the number of elements the shape holds.
func (a Array) Elements() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// Validate checks the type, the shape against the wire's bounds, and that
// Data holds exactly the elements.
func (a Array) Validate() error {
	size := a.DType.Size()
	if size == 0 {
		return fmt.Errorf("array element type %q not supported", a.DType)
	}
	if len(a.Shape) < 1 || len(a.Shape) > wire.MaxDims {
		return fmt.Errorf("array has %d dimensions (allowed 1..%d)", len(a.Shape), wire.MaxDims)
	}
	for _, d := range a.Shape {
		if d < 1 || d > wire.MaxDim {
			return fmt.Errorf("array shape %v out of range (each 1..%d)", a.Shape, wire.MaxDim)
		}
	}
	if want := a.Elements() * size; len(a.Data) != want {
		return fmt.Errorf("%s array %v has %d bytes, want %d", a.DType, a.Shape, len(a.Data), want)
	}
	return nil
}

// Native is a value in a pipeline's own representation (an OpenCV matrix,
// say) that the framework stores without knowing it. The framework asks
// for its array form when the value crosses the wire, and closes it with
// the state.
type Native interface {
	// Array returns the value as an array; the result must stay valid
	// after Close (copy what the native value owns).
	Array() (Array, error)
	// Close releases what the value owns.
	Close() error
}

// ArrayViewer is implemented by a Native value that can lend its elements
// without copying them. EncodeFields uses it when the value crosses the
// wire, so that the elements are copied once, into the message, instead of
// first into an Array.
type ArrayViewer interface {
	// ArrayView returns the value's array form with Data referring to the
	// value's own memory, valid until the value is changed or closed; ok is
	// false when the value cannot lend it (Array is used then).
	ArrayView() (a Array, ok bool)
}
