package tasks_test

import (
	"testing"

	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// fakeNative counts its closes.
type fakeNative struct{ closes *int }

func (f fakeNative) Array() (tasks.Array, error) {
	return tasks.Array{DType: tasks.Uint8, Shape: []int{1}, Data: []byte{7}}, nil
}
func (f fakeNative) Close() error { *f.closes++; return nil }
func (f fakeNative) Same(n tasks.Native) bool {
	o, ok := n.(fakeNative)
	return ok && o.closes == f.closes
}

// Native values are closed exactly once: replaced, deleted, inside a list,
// or with the state; storing the same value again closes nothing.
func TestNativeValuesAreClosedOnce(t *testing.T) {
	var a, b, c int
	s := tasks.NewState("d", 1)
	na := fakeNative{&a}
	s.SetNative("x", na)
	s.SetNative("x", na) // the same value again
	if a != 0 {
		t.Fatalf("re-storing the same native closed it %d times", a)
	}
	s.SetNative("x", fakeNative{&b}) // replaces: closes a
	s.SetList("l", []any{1.0, fakeNative{&c}, "s"})
	s.Close()
	if a != 1 || b != 1 || c != 1 {
		t.Fatalf("closes: replaced %d, stored %d, in a list %d; want 1 each", a, b, c)
	}
}

// Arrays in a list cross the wire raw, whatever the encoding, and the
// decoder refuses a list array in another codec.
func TestListArraysAreRaw(t *testing.T) {
	s := tasks.NewState("d", 1)
	defer s.Close()
	s.SetList("l", []any{tasks.Array{DType: tasks.Uint8, Shape: []int{2, 2}, Data: []byte{1, 2, 3, 4}}})
	f, err := tasks.EncodeFields(s, []string{"l"}, tasks.Encoding{Codec: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	if c := f["l"].List[0].Array.Codec; c != wire.CodecRaw {
		t.Fatalf("list array encoded as %q", c)
	}
	f["l"].List[0].Array.Codec = "png"
	e := &wire.Envelope{Version: wire.Version, Pipeline: "p", Device: "d", Run: "r", Split: 1, Next: "n", Fields: f}
	if err := e.Validate(); err == nil {
		t.Fatal("a png array in a list validated")
	}
}
