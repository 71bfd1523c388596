// Package cvmat is the OpenCV edge of vision pipelines: it stores gocv
// matrices in a task state as native values, converts them to and from the
// framework's arrays, and registers OpenCV's PNG and JPEG as array codecs
// (faster than Go's image/png, and the byte counts the controller is tuned
// on). Importing it registers the codecs "png" (lossless; "auto" uses it
// for single-channel 8-bit images) and "jpeg" (lossy, opt-in).
package cvmat

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"slices"

	"github.com/splitpoint/splitpoint/tasks"
	"gocv.io/x/gocv"
)

// Mat is a gocv matrix as a native state value. The state owns it.
type Mat struct{ gocv.Mat }

// Array implements tasks.Native: a copy of the elements with the matrix's
// element type and shape [rows cols] or [rows cols channels].
func (m Mat) Array() (tasks.Array, error) { return ToArray(m.Mat) }

// ArrayView implements tasks.ArrayViewer: the array form of a continuous
// matrix, its Data the matrix's own memory (valid until the matrix is
// changed or closed); false for an empty or non-continuous matrix or an
// element type arrays lack.
func (m Mat) ArrayView() (tasks.Array, bool) {
	dt, shape, err := describe(m.Mat)
	if err != nil {
		return tasks.Array{}, false
	}
	data, err := m.DataPtrUint8() // fails for a non-continuous matrix
	if err != nil {
		return tasks.Array{}, false
	}
	return tasks.Array{DType: dt, Shape: shape, Data: data}, true
}

// Close implements tasks.Native.
func (m Mat) Close() error { return m.Mat.Close() }

// Same reports whether n is this very matrix, so that storing a matrix
// obtained with Get again (after changing it in place) does not close it.
func (m Mat) Same(n tasks.Native) bool {
	o, ok := n.(Mat)
	return ok && o.Mat.Ptr() == m.Mat.Ptr()
}

var depthTypes = map[gocv.MatType]tasks.DType{
	gocv.MatTypeCV8U: tasks.Uint8, gocv.MatTypeCV8S: tasks.Int8, gocv.MatTypeCV16U: tasks.Uint16,
	gocv.MatTypeCV16S: tasks.Int16, gocv.MatTypeCV32S: tasks.Int32, gocv.MatTypeCV32F: tasks.Float32,
	gocv.MatTypeCV64F: tasks.Float64,
}

// ToArray copies a matrix into an array.
func ToArray(m gocv.Mat) (tasks.Array, error) {
	dt, shape, err := describe(m)
	if err != nil {
		return tasks.Array{}, err
	}
	return tasks.Array{DType: dt, Shape: shape, Data: m.ToBytes()}, nil
}

// describe is the array element type and shape of a matrix.
func describe(m gocv.Mat) (tasks.DType, []int, error) {
	if m.Empty() {
		return "", nil, errors.New("matrix is empty")
	}
	dt, ok := depthTypes[m.Type()&7]
	if !ok {
		return "", nil, fmt.Errorf("matrix type %v has no array element type", m.Type())
	}
	shape := []int{m.Rows(), m.Cols()}
	if ch := m.Channels(); ch > 1 {
		shape = append(shape, ch)
	}
	return dt, shape, nil
}

// matType is the OpenCV type of an array of shape [rows cols] or
// [rows cols channels] (1..4 channels).
func matType(dt tasks.DType, shape []int) (gocv.MatType, error) {
	if len(shape) < 2 || len(shape) > 3 || (len(shape) == 3 && (shape[2] < 1 || shape[2] > 4)) {
		return 0, fmt.Errorf("array shape %v is not an image ([rows cols] or [rows cols 1..4])", shape)
	}
	for depth, d := range depthTypes {
		if d == dt {
			ch := 1
			if len(shape) == 3 {
				ch = shape[2]
			}
			return depth + gocv.MatType((ch-1)*8), nil
		}
	}
	return 0, fmt.Errorf("array element type %q has no OpenCV depth", dt)
}

// FromArray copies an array into a new matrix the caller owns.
func FromArray(a tasks.Array) (gocv.Mat, error) {
	if err := a.Validate(); err != nil {
		return gocv.Mat{}, err
	}
	mt, err := matType(a.DType, a.Shape)
	if err != nil {
		return gocv.Mat{}, err
	}
	m := gocv.NewMatWithSize(a.Shape[0], a.Shape[1], mt)
	dst, err := m.DataPtrUint8()
	if err != nil || len(dst) != len(a.Data) {
		m.Close()
		return gocv.Mat{}, fmt.Errorf("array %v: cannot copy %d bytes into a matrix: %v", a.Shape, len(a.Data), err)
	}
	copy(dst, a.Data)
	return m, nil
}

// Get returns the matrix stored under name, converting an array (as the
// wire delivers it) into a matrix the state then keeps. The state keeps
// ownership: the caller must not close it.
func Get(s *tasks.State, name string) (gocv.Mat, error) {
	if n, ok := s.Native(name); ok {
		if m, ok := n.(Mat); ok {
			return m.Mat, nil
		}
	}
	a, ok, err := s.Array(name)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("field %s: %w", name, err)
	}
	if !ok {
		return gocv.Mat{}, fmt.Errorf("no field %s", name)
	}
	m, err := FromArray(a)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("field %s: %w", name, err)
	}
	s.SetNative(name, Mat{m})
	return m, nil
}

// Set stores m under name; the state takes ownership.
func Set(s *tasks.State, name string, m gocv.Mat) { s.SetNative(name, Mat{m}) }

// imageCodec is OpenCV's PNG or JPEG encoder for 8-bit images.
type imageCodec struct {
	name     string
	ext      gocv.FileExt
	lossless bool
}

func init() {
	tasks.RegisterCodec(imageCodec{name: "png", ext: gocv.PNGFileExt, lossless: true})
	tasks.RegisterCodec(imageCodec{name: "jpeg", ext: gocv.JPEGFileExt})
}

func (c imageCodec) Name() string { return c.name }

// Accepts 8-bit images with 1 or 3 channels (and 4 for PNG).
func (c imageCodec) Accepts(a tasks.Array) bool {
	if a.DType != tasks.Uint8 || len(a.Shape) < 2 || len(a.Shape) > 3 {
		return false
	}
	if len(a.Shape) == 3 {
		ch := a.Shape[2]
		return ch == 1 || ch == 3 || (ch == 4 && c.lossless)
	}
	return true
}

// Preferred: "auto" sends single-channel 8-bit images (masks) as PNG; a
// 500×375 mask shrinks from 187 kB to about 1.4 kB.
func (c imageCodec) Preferred(a tasks.Array) bool {
	return c.lossless && a.DType == tasks.Uint8 && len(a.Shape) == 2
}

func (c imageCodec) Encode(a tasks.Array, quality int) ([]byte, error) {
	m, err := FromArray(a)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return c.encode(m, quality)
}

// EncodeNative implements tasks.NativeEncoder: a matrix is encoded as it
// is, without the copy into an array and back that Encode makes.
func (c imageCodec) EncodeNative(n tasks.Native, quality int) ([]byte, bool, error) {
	m, ok := n.(Mat)
	if !ok {
		return nil, false, nil
	}
	b, err := c.encode(m.Mat, quality)
	return b, true, err
}

func (c imageCodec) encode(m gocv.Mat, quality int) ([]byte, error) {
	params := []int{gocv.IMWritePngCompression, 1}
	if !c.lossless {
		params = []int{gocv.IMWriteJpegQuality, quality}
	}
	buf, err := gocv.IMEncodeWithParams(c.ext, m, params)
	if err != nil {
		return nil, err
	}
	defer buf.Close()
	return slices.Clone(buf.GetBytes()), nil
}

// Decode checks the image header with Go's decoders before OpenCV sees the
// data, so that a small message cannot announce a huge image, and returns
// a Mat.
func (c imageCodec) Decode(data []byte, dt tasks.DType, shape []int) (any, error) {
	mt, err := matType(dt, shape)
	if err != nil || dt != tasks.Uint8 {
		return nil, fmt.Errorf("%s carries 8-bit images, not %s %v", c.name, dt, shape)
	}
	var cfg image.Config
	if c.lossless {
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	} else {
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return nil, err
	}
	if cfg.Width != shape[1] || cfg.Height != shape[0] {
		return nil, fmt.Errorf("image is %dx%d, its array says %dx%d", cfg.Height, cfg.Width, shape[0], shape[1])
	}
	m, err := gocv.IMDecode(data, gocv.IMReadUnchanged)
	if err != nil {
		return nil, err
	}
	if m.Empty() || m.Rows() != shape[0] || m.Cols() != shape[1] || m.Type() != mt {
		m.Close()
		return nil, fmt.Errorf("image decoded to a different size or type than its array says")
	}
	return Mat{m}, nil
}
