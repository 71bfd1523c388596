package wire_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/wire"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"pi1", "a", "0", "pi-kitchen_2"} {
		if err := wire.ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range append([]string{"", "Pi", "_cloud", "-a", "a/b", "a+", "a#", "a b", strings.Repeat("a", 65)}, wire.ReservedWords()...) {
		if err := wire.ValidateName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestTopics(t *testing.T) {
	for got, want := range map[string]string{
		wire.StageTopic("pi1", "hsv"):             "offload/pi1/hsv",
		wire.ResultTopic("pi1"):                   "offload/pi1/result",
		wire.StatusTopic("pi1"):                   "offload/pi1/status",
		wire.AnnotatedTopic("pi1"):                "offload/pi1/annotated",
		wire.TelemetryTopic("pi1"):                "offload/pi1/telemetry",
		wire.CloudStatusTopic("c1"):               "offload/_cloud/c1/status",
		wire.StageFilter("g", "", "mask"):         "$share/g/offload/+/mask",
		wire.StageFilter("", "", "mask"):          "offload/+/mask",
		wire.StageFilter("g", "sites/+/", "mask"): "$share/g/sites/+/offload/+/mask",
		wire.ResultFilter:                         "offload/+/result",
		wire.CloudStatusFilter:                    "offload/_cloud/+/status",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
	if d, l, err := wire.ParseDeviceTopic("offload/pi1/hsv"); err != nil || d != "pi1" || l != "hsv" {
		t.Errorf("parse: %q %q %v", d, l, err)
	}
	for _, bad := range []string{"offload/_cloud/hsv", "offload/pi1", "offload/pi1/hsv/x", "other/pi1/hsv", "offload//hsv"} {
		if _, _, err := wire.ParseDeviceTopic(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if id, err := wire.ParseCloudStatusTopic("offload/_cloud/c1/status"); err != nil || id != "c1" {
		t.Errorf("cloud status: %q %v", id, err)
	}
}

func valid() *wire.Envelope {
	return &wire.Envelope{
		Version: wire.Version, Pipeline: "balltrack", Device: "pi1", Run: "abc", Seq: 7, Split: 3,
		Next: "contours", CaptureTS: 1700000000000000000,
		Timings: []wire.Timing{{Stage: "capture", Nanos: 1000, Where: wire.OnDevice}},
		Fields: map[string]wire.Field{
			"width": {Kind: wire.KindNumber, Num: 500},
			"mask":  {Kind: wire.KindArray, Array: &wire.Array{DType: "uint8", Shape: []int{2, 3}, Codec: wire.CodecRaw, Data: []byte{1, 2, 3, 4, 5, 6}}},
			"pts": {Kind: wire.KindList, List: []wire.Field{
				{Kind: wire.KindArray, Array: &wire.Array{DType: "int32", Shape: []int{1, 2}, Codec: wire.CodecRaw, Data: []byte{1, 0, 0, 0, 4, 0, 0, 0}}},
				{Kind: wire.KindNumber, Num: 2}}},
			"name": {Kind: wire.KindString, Str: "left"},
		},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	b, err := wire.Encode(valid())
	if err != nil {
		t.Fatal(err)
	}
	e, err := wire.Decode(b, len(b))
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 7 || e.Fields["mask"].Array.Data[5] != 6 || e.Fields["pts"].List[0].Array.Data[4] != 4 || e.Fields["pts"].List[1].Num != 2 ||
		e.Fields["name"].Str != "left" || e.Timings[0].Stage != "capture" {
		t.Errorf("decoded %+v", e)
	}
	if _, err := wire.Decode(b, len(b)-1); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("size bound: %v", err)
	}
}

func TestEnvelopeValidation(t *testing.T) {
	for name, mutate := range map[string]func(*wire.Envelope){
		"version":    func(e *wire.Envelope) { e.Version = 1 },
		"device":     func(e *wire.Envelope) { e.Device = "_cloud" },
		"reserved":   func(e *wire.Envelope) { e.Next = "result" },
		"run":        func(e *wire.Envelope) { e.Run = "" },
		"split":      func(e *wire.Envelope) { e.Split = 0 },
		"raw size":   func(e *wire.Envelope) { e.Fields["mask"].Array.Shape[0] = 3 },
		"dims":       func(e *wire.Envelope) { e.Fields["mask"].Array.Shape[1] = 1 << 20 },
		"no dims":    func(e *wire.Envelope) { e.Fields["mask"].Array.Shape = nil },
		"many dims":  func(e *wire.Envelope) { e.Fields["mask"].Array.Shape = []int{1, 1, 1, 2, 3} },
		"dtype":      func(e *wire.Envelope) { e.Fields["mask"].Array.DType = "complex64" },
		"codec":      func(e *wire.Envelope) { e.Fields["mask"].Array.Codec = "Bad Codec" },
		"codec data": func(e *wire.Envelope) { e.Fields["mask"].Array.Codec, e.Fields["mask"].Array.Data = "png", nil },
		"kind":       func(e *wire.Envelope) { e.Fields["x"] = wire.Field{Kind: 9} },
		"list in list": func(e *wire.Envelope) {
			e.Fields["pts"].List[1] = wire.Field{Kind: wire.KindList, List: []wire.Field{}}
		},
		"number+array": func(e *wire.Envelope) { e.Fields["x"] = wire.Field{Kind: wire.KindNumber, Array: &wire.Array{}} },
		"string+num":   func(e *wire.Envelope) { e.Fields["x"] = wire.Field{Kind: wire.KindString, Str: "a", Num: 1} },
		"long string": func(e *wire.Envelope) {
			e.Fields["x"] = wire.Field{Kind: wire.KindString, Str: strings.Repeat("a", 4097)}
		},
		"field name":   func(e *wire.Envelope) { e.Fields["A"] = wire.Field{Kind: wire.KindNumber} },
		"filtered_at":  func(e *wire.Envelope) { e.FilteredAt = "Bad" },
		"too many tms": func(e *wire.Envelope) { e.Timings = make([]wire.Timing, 33) },
	} {
		e := valid()
		mutate(e)
		if _, err := wire.Encode(e); err == nil {
			t.Errorf("%s: invalid envelope encoded", name)
		}
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("hello"), {0xa1, 0x01}, {0xff}, {0x9f, 0xff}} {
		if _, err := wire.Decode(b, 1<<20); err == nil {
			t.Errorf("%x decoded", b)
		}
	}
}

func TestMarshalResult(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	f := "contours"
	b, err := wire.MarshalResult(wire.ResultHead{Device: "pi1", Run: "r", Seq: 4, Split: 2, CaptureTS: ts, FilteredAt: &f},
		json.RawMessage(`{"detected": false, "width":500}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"device":"pi1","run":"r","seq":4,"detected":false,"width":500,"filtered_at":"contours","split":2,"capture_ts":"2026-01-02T03:04:05.000006Z"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	h, err := wire.ParseResultHead(b)
	if err != nil || h.Seq != 4 || *h.FilteredAt != "contours" || !h.CaptureTS.Equal(ts) {
		t.Errorf("parse: %+v %v", h, err)
	}
	if _, err := wire.MarshalResult(wire.ResultHead{}, json.RawMessage(`{"seq":1}`)); err == nil {
		t.Error("app may not override seq")
	}
	if _, err := wire.MarshalResult(wire.ResultHead{}, json.RawMessage(`[1]`)); err == nil {
		t.Error("non-object accepted")
	}
	for _, bad := range []string{``, `{}`, `{"device":"a","run":"b","seq":-1,"split":1}`, `nonsense`} {
		if _, err := wire.ParseResultHead([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Array data decodes without a copy: it refers to the message, at every
// length encoding CBOR has (inline, 1, 2 and 4 length bytes).
func TestDecodeArrayDataRefersToTheMessage(t *testing.T) {
	for _, n := range []int{1, 23, 24, 255, 256, 16384, 66000, 300000} {
		shape := []int{n}
		if n > wire.MaxDim {
			shape = []int{n / 500, 500}
		}
		e := valid()
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		e.Fields = map[string]wire.Field{"f": {Kind: wire.KindArray, Array: &wire.Array{DType: "uint8", Shape: shape, Codec: wire.CodecRaw, Data: data}}}
		b, err := wire.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		d, err := wire.Decode(b, len(b))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got := d.Fields["f"].Array.Data
		if string(got) != string(data) {
			t.Fatalf("%d bytes: data differs after the round trip", n)
		}
		if cap(got) != len(got) {
			t.Errorf("%d bytes: cap %d, want %d (an append must not write into the message)", n, cap(got), len(got))
		}
		b[len(b)-1] ^= 0xff // the data is the message's last bytes
		if got[n-1] != data[n-1]^0xff {
			t.Errorf("%d bytes: the decoded data is a copy of the message", n)
		}
	}
}

// Anything but a definite-length byte string (or null) where array data
// belongs is refused, however the CBOR around it is well formed.
func TestBytesUnmarshalRefusesOtherItems(t *testing.T) {
	for _, bad := range [][]byte{
		{0x60},                // empty text string
		{0x01},                // unsigned 1
		{0x5f, 0x41, 0, 0xff}, // indefinite-length byte string
		{0x5c},                // reserved additional information
		{0x58},                // 1 length byte missing
		{0x42, 0x01},          // says 2, has 1
	} {
		var b wire.Bytes
		if err := b.UnmarshalCBOR(bad); err == nil {
			t.Errorf("% x accepted as %v", bad, []byte(b))
		}
	}
	for _, null := range []byte{0xf6, 0xf7} {
		var b wire.Bytes = []byte{1}
		if err := b.UnmarshalCBOR([]byte{null}); err != nil || b != nil {
			t.Errorf("% x: %v %v", null, []byte(b), err)
		}
	}
}
