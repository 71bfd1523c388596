package tasks

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"

	"github.com/splitpoint/splitpoint/wire"
	"gocv.io/x/gocv"
)

// MatEncoding chooses how matrices are encoded on the wire. The zero value
// is raw.
type MatEncoding struct {
	Codec       wire.MatCodec
	JPEGQuality int // 1..100, for CodecJPEG
}

// EncodeFields encodes the named fields of s. A name that s lacks is skipped:
// a stage that filtered the frame may not have written every field.
func EncodeFields(s *State, names []string, enc MatEncoding) (map[string]wire.Field, error) {
	out := make(map[string]wire.Field, len(names))
	for _, name := range names {
		if m, ok := s.mats[name]; ok {
			wm, err := encodeMat(m, enc)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", name, err)
			}
			out[name] = wire.Field{Kind: wire.KindMat, Mat: wm}
		} else if v, ok := s.nums[name]; ok {
			out[name] = wire.Field{Kind: wire.KindNumber, Num: v}
		} else if p, ok := s.points[name]; ok {
			lists := make([][]int32, len(p))
			for i, l := range p {
				flat := make([]int32, 0, 2*len(l))
				for _, pt := range l {
					flat = append(flat, int32(pt.X), int32(pt.Y))
				}
				lists[i] = flat
			}
			out[name] = wire.Field{Kind: wire.KindPoints, Points: lists}
		}
	}
	return out, nil
}

func encodeMat(m gocv.Mat, enc MatEncoding) (*wire.Mat, error) {
	if m.Empty() {
		return nil, fmt.Errorf("matrix is empty")
	}
	codec := enc.Codec
	if codec == wire.CodecAuto {
		codec = wire.CodecRaw
		if m.Type() == gocv.MatTypeCV8UC1 {
			codec = wire.CodecPNG
		}
	}
	wm := &wire.Mat{Rows: m.Rows(), Cols: m.Cols(), Type: int(m.Type()), Codec: codec}
	switch codec {
	case wire.CodecRaw:
		if !m.IsContinuous() {
			c := m.Clone()
			defer c.Close()
			m = c
		}
		wm.Data = m.ToBytes()
	case wire.CodecPNG, wire.CodecJPEG:
		ext, params := gocv.PNGFileExt, []int{gocv.IMWritePngCompression, 1}
		if codec == wire.CodecJPEG {
			ext, params = gocv.JPEGFileExt, []int{gocv.IMWriteJpegQuality, enc.JPEGQuality}
		}
		buf, err := gocv.IMEncodeWithParams(ext, m, params)
		if err != nil {
			return nil, err
		}
		wm.Data = append([]byte(nil), buf.GetBytes()...)
		buf.Close()
	default:
		return nil, fmt.Errorf("unknown codec %d", enc.Codec)
	}
	return wm, nil
}

// DecodeFields fills s from wire fields. Matrices are copied into memory
// that the state owns. On error s may hold some fields; the caller closes it.
func DecodeFields(s *State, fields map[string]wire.Field) error {
	for name, f := range fields {
		switch f.Kind {
		case wire.KindNumber:
			s.SetNum(name, f.Num)
		case wire.KindPoints:
			lists := make([][]image.Point, len(f.Points))
			for i, flat := range f.Points {
				l := make([]image.Point, len(flat)/2)
				for j := range l {
					l[j] = image.Pt(int(flat[2*j]), int(flat[2*j+1]))
				}
				lists[i] = l
			}
			s.SetPoints(name, lists)
		case wire.KindMat:
			m, err := decodeMat(f.Mat)
			if err != nil {
				return fmt.Errorf("field %s: %w", name, err)
			}
			s.SetMat(name, m)
		default:
			return fmt.Errorf("field %s: unknown kind %d", name, f.Kind)
		}
	}
	return nil
}

func decodeMat(wm *wire.Mat) (gocv.Mat, error) {
	switch wm.Codec {
	case wire.CodecRaw:
		m := gocv.NewMatWithSize(wm.Rows, wm.Cols, gocv.MatType(wm.Type))
		dst, err := m.DataPtrUint8()
		if err != nil || len(dst) != len(wm.Data) {
			m.Close()
			return gocv.Mat{}, fmt.Errorf("raw matrix: cannot copy %d bytes: %v", len(wm.Data), err)
		}
		copy(dst, wm.Data)
		return m, nil
	case wire.CodecPNG, wire.CodecJPEG:
		// Check the image header with Go's decoders before OpenCV sees the
		// data, so a small message cannot announce a huge image.
		var cfg image.Config
		var err error
		if wm.Codec == wire.CodecPNG {
			cfg, err = png.DecodeConfig(bytes.NewReader(wm.Data))
		} else {
			cfg, err = jpeg.DecodeConfig(bytes.NewReader(wm.Data))
		}
		if err != nil {
			return gocv.Mat{}, fmt.Errorf("%s matrix: %w", wm.Codec, err)
		}
		if cfg.Width != wm.Cols || cfg.Height != wm.Rows {
			return gocv.Mat{}, fmt.Errorf("%s matrix is %dx%d, header says %dx%d", wm.Codec, cfg.Height, cfg.Width, wm.Rows, wm.Cols)
		}
		m, err := gocv.IMDecode(wm.Data, gocv.IMReadUnchanged)
		if err != nil {
			return gocv.Mat{}, err
		}
		if m.Empty() || m.Rows() != wm.Rows || m.Cols() != wm.Cols || int(m.Type()) != wm.Type {
			m.Close()
			return gocv.Mat{}, fmt.Errorf("%s matrix decoded to a different size or type", wm.Codec)
		}
		return m, nil
	}
	return gocv.Mat{}, fmt.Errorf("unknown codec %d", wm.Codec)
}
