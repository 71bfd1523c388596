package cvmat

import (
	"bytes"
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
