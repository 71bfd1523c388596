package tasks

import (
	"encoding/json"
	"fmt"
	"sort"
)

// FieldSource is the field the framework fills with the captured input
// before the first stage runs. The first stage owns it from then on.
const FieldSource = "source"

// State is one frame's task state: typed values plus the outputs the sink
// produces. A value is a number, a string, an Array, a list of those, or a
// pipeline's Native value. A State owns its native values: SetNative takes
// ownership, and Delete, replacing the value and Close release them.
type State struct {
	// Device and Seq identify the frame; stages may use them (for example to
	// rate-limit per device) but must not change them.
	Device string
	Seq    uint64

	vals      map[string]any // float64, string, Array, []any, Native
	result    json.RawMessage
	annotated []byte
}

// NewState returns an empty state for one frame of a device.
func NewState(device string, seq uint64) *State {
	return &State{Device: device, Seq: seq, vals: map[string]any{}}
}

func (s *State) set(name string, v any) {
	if old, ok := s.vals[name].(Native); ok && sameNative(old, v) {
		return // storing again what is stored: nothing to close
	}
	s.Delete(name)
	s.vals[name] = v
}

// sameNative reports whether v is the native value old (a pipeline's
// native type may say so with a Same method; otherwise they differ).
func sameNative(old Native, v any) bool {
	n, ok := v.(Native)
	if !ok {
		return false
	}
	if s, ok := old.(interface{ Same(Native) bool }); ok {
		return s.Same(n)
	}
	return false
}

// SetNum stores a number under name.
func (s *State) SetNum(name string, v float64) { s.set(name, v) }

// Num returns the number stored under name.
func (s *State) Num(name string) (float64, bool) {
	v, ok := s.vals[name].(float64)
	return v, ok
}

// SetString stores a string under name.
func (s *State) SetString(name, v string) { s.set(name, v) }

// String returns the string stored under name.
func (s *State) String(name string) (string, bool) {
	v, ok := s.vals[name].(string)
	return v, ok
}

// SetArray stores an array under name. The state keeps a reference to its
// Data: the caller must not change it afterwards.
func (s *State) SetArray(name string, a Array) { s.set(name, a) }

// Array returns the array stored under name; a native value is converted
// (a copy). The array must not be changed.
func (s *State) Array(name string) (Array, bool, error) {
	switch v := s.vals[name].(type) {
	case Array:
		return v, true, nil
	case Native:
		a, err := v.Array()
		return a, err == nil, err
	}
	return Array{}, false, nil
}

// SetInput stores a source's input (an Array or a Native, see Source)
// under name; the state owns a Native from then on.
func (s *State) SetInput(name string, v any) error {
	switch v := v.(type) {
	case Array:
		s.SetArray(name, v)
	case Native:
		s.SetNative(name, v)
	default:
		return errKind(v)
	}
	return nil
}

// SetNative stores a pipeline's native value and takes ownership of it.
func (s *State) SetNative(name string, v Native) { s.set(name, v) }

// Native returns the native value stored under name; the state keeps
// ownership.
func (s *State) Native(name string) (Native, bool) {
	v, ok := s.vals[name].(Native)
	return v, ok
}

// SetList stores a list of numbers (float64), strings, Arrays and native
// values (closed with the list). Arrays in a list cross the wire raw.
func (s *State) SetList(name string, l []any) { s.set(name, l) }

// List returns the list stored under name.
func (s *State) List(name string) ([]any, bool) {
	v, ok := s.vals[name].([]any)
	return v, ok
}

// Has reports whether any value is stored under name.
func (s *State) Has(name string) bool {
	_, ok := s.vals[name]
	return ok
}

// Names lists the stored field names in sorted order.
func (s *State) Names() []string {
	out := make([]string, 0, len(s.vals))
	for k := range s.vals {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Delete removes the value stored under name, closing a native one (also
// one inside a list).
func (s *State) Delete(name string) {
	closeValue(s.vals[name])
	delete(s.vals, name)
}

// closeValue closes a native value, or the native values of a list.
func closeValue(v any) {
	switch v := v.(type) {
	case Native:
		_ = v.Close()
	case []any:
		for _, e := range v {
			if n, ok := e.(Native); ok {
				_ = n.Close()
			}
		}
	}
}

// Keep removes every value whose name is not in keep.
func (s *State) Keep(keep []string) {
	want := make(map[string]bool, len(keep))
	for _, k := range keep {
		want[k] = true
	}
	for _, name := range s.Names() {
		if !want[name] {
			s.Delete(name)
		}
	}
}

// SetResult records the sink's result: a JSON object of the pipeline's own
// fields, which the framework completes with the frame's identity.
func (s *State) SetResult(r json.RawMessage) { s.result = r }

// Result returns what SetResult recorded.
func (s *State) Result() json.RawMessage { return s.result }

// SetAnnotated records an encoded image (JPEG) that the framework publishes
// on the device's annotated topic.
func (s *State) SetAnnotated(jpeg []byte) { s.annotated = jpeg }

// Annotated returns what SetAnnotated recorded.
func (s *State) Annotated() []byte { return s.annotated }

// Close releases every native value. The state is empty afterwards.
func (s *State) Close() {
	for name := range s.vals {
		s.Delete(name)
	}
}

// errKind reports a value of a kind that cannot cross the wire.
func errKind(v any) error { return fmt.Errorf("value of type %T cannot be encoded", v) }
