package tasks

import (
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/splitpoint/splitpoint/wire"
)

// Codec encodes arrays for the wire. The core knows only "raw" (the
// elements as they are); a pipeline registers others, for example OpenCV's
// PNG and JPEG for images.
type Codec interface {
	// Name is the codec's name on the wire and in configs.
	Name() string
	// Accepts reports whether the codec can encode a.
	Accepts(a Array) bool
	// Preferred reports whether "auto" should use this codec for a (only
	// lossless codecs should prefer anything).
	Preferred(a Array) bool
	// Encode encodes a; quality (1..100) applies to lossy codecs.
	Encode(a Array, quality int) ([]byte, error)
	// Decode decodes data announced as dtype and shape and returns an
	// Array or a Native of exactly that type and shape. It must check the
	// data's own header against them before decoding, so that a small
	// message cannot announce a huge image.
	Decode(data []byte, dtype DType, shape []int) (any, error)
}

// NativeEncoder is implemented by a codec that can encode a native value
// itself (OpenCV's PNG encoder, a matrix), without the value being copied
// into an Array first. EncodeFields calls EncodeNative for a native value
// the codec was chosen for (by the value's array form); handled is false
// when the codec does not know the value, and Encode is used then.
type NativeEncoder interface {
	EncodeNative(n Native, quality int) (data []byte, handled bool, err error)
}

var (
	codecMu sync.RWMutex
	codecs  []Codec // in registration order
)

// RegisterCodec adds an array codec. It panics on an invalid or duplicate
// name; registration happens in init functions.
func RegisterCodec(c Codec) {
	if err := wire.ValidateName(c.Name()); err != nil || c.Name() == wire.CodecRaw || c.Name() == EncodingAuto {
		panic(fmt.Sprintf("tasks.RegisterCodec: invalid codec name %q", c.Name()))
	}
	codecMu.Lock()
	defer codecMu.Unlock()
	for _, o := range codecs {
		if o.Name() == c.Name() {
			panic("tasks.RegisterCodec: codec registered twice: " + c.Name())
		}
	}
	codecs = append(codecs, c)
}

func lookupCodec(name string) (Codec, bool) {
	codecMu.RLock()
	defer codecMu.RUnlock()
	for _, c := range codecs {
		if c.Name() == name {
			return c, true
		}
	}
	return nil, false
}

// CodecNames lists the encodings a config may name: auto, raw and the
// registered codecs, sorted.
func CodecNames() []string {
	codecMu.RLock()
	defer codecMu.RUnlock()
	out := []string{EncodingAuto, wire.CodecRaw}
	for _, c := range codecs {
		out = append(out, c.Name())
	}
	sort.Strings(out[2:])
	return out
}

// EncodingAuto lets each array pick the first registered codec that
// prefers it, and raw otherwise.
const EncodingAuto = "auto"

// Encoding chooses how arrays are encoded on the wire.
type Encoding struct {
	// Codec is "auto", "raw" or a registered codec's name. A named codec
	// that does not accept an array leaves it raw.
	Codec string
	// Quality is the quality (1..100) of lossy codecs.
	Quality int
}

// ParseEncoding checks an encoding name against the registered codecs.
func ParseEncoding(name string, quality int) (Encoding, error) {
	if name != EncodingAuto && name != wire.CodecRaw {
		if _, ok := lookupCodec(name); !ok {
			return Encoding{}, fmt.Errorf("unknown codec %q (allowed: %v)", name, CodecNames())
		}
	}
	return Encoding{Codec: name, Quality: quality}, nil
}

func (e Encoding) codecFor(a Array) Codec {
	if e.Codec == EncodingAuto {
		codecMu.RLock()
		defer codecMu.RUnlock()
		for _, c := range codecs {
			if c.Preferred(a) {
				return c
			}
		}
		return nil
	}
	if c, ok := lookupCodec(e.Codec); ok && c.Accepts(a) {
		return c
	}
	return nil // raw
}

// EncodeFields encodes the named fields of s. A name that s lacks is skipped:
// a stage that filtered the frame may not have written every field. Raw
// arrays of native values that lend their memory (ArrayViewer) refer to
// it: the fields are valid until s is changed or closed.
func EncodeFields(s *State, names []string, enc Encoding) (map[string]wire.Field, error) {
	out := make(map[string]wire.Field, len(names))
	for _, name := range names {
		v, ok := s.vals[name]
		if !ok {
			continue
		}
		f, err := encodeValue(v, enc, true)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", name, err)
		}
		out[name] = f
	}
	return out, nil
}

func encodeValue(v any, enc Encoding, top bool) (wire.Field, error) {
	switch v := v.(type) {
	case float64:
		return wire.Field{Kind: wire.KindNumber, Num: v}, nil
	case string:
		return wire.Field{Kind: wire.KindString, Str: v}, nil
	case Array:
		return encodeArray(v, nil, enc)
	case Native:
		a, ok := Array{}, false
		if lv, lends := v.(ArrayViewer); lends {
			a, ok = lv.ArrayView()
		}
		if !ok {
			var err error
			if a, err = v.Array(); err != nil {
				return wire.Field{}, err
			}
		}
		return encodeArray(a, v, enc)
	case []any:
		if !top {
			return wire.Field{}, fmt.Errorf("a list inside a list cannot be encoded")
		}
		l := make([]wire.Field, len(v))
		for i, e := range v {
			f, err := encodeValue(e, Encoding{Codec: wire.CodecRaw}, false) // lists carry raw arrays
			if err != nil {
				return wire.Field{}, fmt.Errorf("list value %d: %w", i, err)
			}
			l[i] = f
		}
		return wire.Field{Kind: wire.KindList, List: l}, nil
	}
	return wire.Field{}, errKind(v)
}

// encodeWith encodes a with c: through n itself when n is not nil and c
// can (NativeEncoder), else from a.
func encodeWith(c Codec, a Array, n Native, quality int) ([]byte, error) {
	if ne, ok := c.(NativeEncoder); ok && n != nil {
		if data, handled, err := ne.EncodeNative(n, quality); handled || err != nil {
			return data, err
		}
	}
	return c.Encode(a, quality)
}

// encodeArray encodes a, the array form of n when n is not nil.
func encodeArray(a Array, n Native, enc Encoding) (wire.Field, error) {
	if err := a.Validate(); err != nil {
		return wire.Field{}, err
	}
	wa := &wire.Array{DType: string(a.DType), Shape: slices.Clone(a.Shape), Codec: wire.CodecRaw, Data: a.Data}
	if c := enc.codecFor(a); c != nil {
		data, err := encodeWith(c, a, n, enc.Quality)
		if err != nil {
			return wire.Field{}, fmt.Errorf("%s: %w", c.Name(), err)
		}
		wa.Codec, wa.Data = c.Name(), data
	}
	return wire.Field{Kind: wire.KindArray, Array: wa}, nil
}

// DecodeFields fills s from wire fields. Raw arrays keep referring to the
// fields' data. On error s may hold some fields; the caller closes it.
func DecodeFields(s *State, fields map[string]wire.Field) error {
	for name, f := range fields {
		v, err := decodeValue(f)
		if err != nil {
			return fmt.Errorf("field %s: %w", name, err)
		}
		s.set(name, v)
	}
	return nil
}

func decodeValue(f wire.Field) (any, error) {
	switch f.Kind {
	case wire.KindNumber:
		return f.Num, nil
	case wire.KindString:
		return f.Str, nil
	case wire.KindArray:
		return decodeArray(f.Array)
	case wire.KindList:
		l := make([]any, len(f.List))
		for i, e := range f.List {
			v, err := decodeValue(e)
			if err != nil {
				closeValue(l[:i])
				return nil, fmt.Errorf("list value %d: %w", i, err)
			}
			l[i] = v
		}
		return l, nil
	}
	return nil, fmt.Errorf("unknown kind %d", f.Kind)
}

func decodeArray(wa *wire.Array) (any, error) {
	if wa == nil {
		return nil, fmt.Errorf("array field without an array")
	}
	dtype, shape := DType(wa.DType), slices.Clone(wa.Shape)
	if wa.Codec == wire.CodecRaw {
		a := Array{DType: dtype, Shape: shape, Data: wa.Data}
		return a, a.Validate()
	}
	c, ok := lookupCodec(wa.Codec)
	if !ok {
		return nil, fmt.Errorf("array codec %q is not registered here (registered: %v)", wa.Codec, CodecNames())
	}
	v, err := c.Decode(wa.Data, dtype, shape)
	if err != nil {
		return nil, fmt.Errorf("%s array: %w", wa.Codec, err)
	}
	return v, nil
}
