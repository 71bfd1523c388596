package cvmat

import (
	"bytes"
	"image"
	"testing"

	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/tasks"
	"gocv.io/x/gocv"
)

// A matrix becomes an array of shape [rows cols channels] and back, element
// for element; a state converts a wire array into a matrix once, on first
// use, and owns it.
func TestMatArrayRoundTrip(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(1, 2, 3, 0), 4, 5, gocv.MatTypeCV8UC3)
	defer m.Close()
	a, err := ToArray(m)
	if err != nil || a.DType != tasks.Uint8 || len(a.Shape) != 3 || a.Shape[0] != 4 || a.Shape[1] != 5 || a.Shape[2] != 3 {
		t.Fatalf("%+v %v", a.Shape, err)
	}
	back, err := FromArray(a)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Type() != m.Type() || !bytes.Equal(back.ToBytes(), m.ToBytes()) {
		t.Error("round trip changed the matrix")
	}
	s := tasks.NewState("d", 0)
	defer s.Close()
	s.SetArray("img", a)
	g1, err := Get(s, "img")
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := Get(s, "img")
	if g1.Ptr() != g2.Ptr() {
		t.Error("the array was converted twice")
	}
	if _, err := FromArray(tasks.Array{DType: tasks.Float64, Shape: []int{2, 2, 5}, Data: make([]byte, 160)}); err == nil {
		t.Error("5 channels accepted")
	}
}

// PNG is lossless and preferred for single-channel 8-bit images only;
// decoding checks the image against the array's shape.
func TestImageCodecs(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	mask := tasks.Array{DType: tasks.Uint8, Shape: []int{3, 4}, Data: []byte{0, 255, 0, 255, 1, 2, 3, 4, 9, 8, 7, 6}}
	var png, jpg tasks.Codec = imageCodec{name: "png", ext: gocv.PNGFileExt, lossless: true}, imageCodec{name: "jpeg", ext: gocv.JPEGFileExt}
	if !png.Preferred(mask) || jpg.Preferred(mask) || png.Preferred(tasks.Array{DType: tasks.Uint8, Shape: []int{3, 4, 3}}) {
		t.Error("preference")
	}
	if png.Accepts(tasks.Array{DType: tasks.Int32, Shape: []int{3, 2}}) {
		t.Error("png accepts int32")
	}
	data, err := png.Encode(mask, 0)
	if err != nil {
		t.Fatal(err)
	}
	v, err := png.Decode(data, tasks.Uint8, []int{3, 4})
	if err != nil {
		t.Fatal(err)
	}
	m := v.(Mat)
	if !bytes.Equal(m.ToBytes(), mask.Data) {
		t.Error("png is not lossless")
	}
	m.Close()
	if _, err := png.Decode(data, tasks.Uint8, []int{300, 400}); err == nil {
		t.Error("a png decoded under a shape it does not have")
	}
}

// A matrix crossing the wire is copied once, into the message: a raw field
// refers to the matrix's own memory and a PNG field is encoded from the
// matrix itself, with the same bytes as from its array form. A matrix that
// cannot lend its memory (a region of a wider one) is copied as before.
func TestEncodeFieldsReadsMatricesInPlace(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(10, 20, 30, 0), 6, 8, gocv.MatTypeCV8UC3)
	mask := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(0, 0, 0, 0), 6, 8, gocv.MatTypeCV8UC1)
	mask.SetUCharAt(2, 3, 255)
	wide := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(7, 0, 0, 0), 6, 8, gocv.MatTypeCV8UC1)
	defer wide.Close()
	wide.SetUCharAt(1, 2, 9)
	region := wide.Region(image.Rect(1, 1, 5, 4)) // 3 rows × 4 cols, rows 8 bytes apart
	if region.IsContinuous() {
		t.Fatal("the region is continuous; the test needs one that is not")
	}
	s := tasks.NewState("d", 0)
	defer s.Close()
	Set(s, "img", img)
	Set(s, "mask", mask)
	Set(s, "region", region)
	fields, err := tasks.EncodeFields(s, []string{"img", "mask", "region"}, tasks.Encoding{Codec: tasks.EncodingAuto})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := img.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	if f := fields["img"].Array; f.Codec != "raw" || len(f.Data) != len(mem) || &f.Data[0] != &mem[0] {
		t.Errorf("img: codec %s, %d bytes: not the matrix's memory", f.Codec, len(f.Data))
	}
	a, err := ToArray(mask)
	if err != nil {
		t.Fatal(err)
	}
	want, err := imageCodec{name: "png", ext: gocv.PNGFileExt, lossless: true}.Encode(a, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f := fields["mask"].Array; f.Codec != "png" || !bytes.Equal(f.Data, want) {
		t.Errorf("mask: codec %s, %d bytes, want png of %d bytes", f.Codec, len(f.Data), len(want))
	}
	f := fields["region"].Array
	wantRegion := []byte{7, 9, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}
	if f.Codec != "png" {
		t.Fatalf("region: codec %s", f.Codec)
	}
	v, err := imageCodec{name: "png", ext: gocv.PNGFileExt, lossless: true}.Decode(f.Data, tasks.Uint8, []int{3, 4})
	if err != nil {
		t.Fatal(err)
	}
	got := v.(Mat)
	defer got.Close()
	if !bytes.Equal(got.ToBytes(), wantRegion) {
		t.Errorf("region: %v, want %v", got.ToBytes(), wantRegion)
	}
	raw, err := tasks.EncodeFields(s, []string{"region"}, tasks.Encoding{Codec: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	if d := raw["region"].Array.Data; !bytes.Equal(d, wantRegion) {
		t.Errorf("raw region: %v, want %v", []byte(d), wantRegion)
	}
}
