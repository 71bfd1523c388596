package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/splitpoint/splitpoint/wire"
)

// The frame protocol, in one place: what a device runs and ships for a
// frame at split k (Offload), and what the cloud runs on what arrives and
// answers (Finish). Device and cloudproc only do MQTT, windows and
// accounting around these two calls.
//
// Rules:
//   - Split k runs stages [0, k) on the device; the state for stage k
//     crosses, holding only the fields stage k and later read (Needs).
//   - A frame a stage filters skips every later stage but the sink: its
//     state goes to the sink, which reports the filtering stage in the
//     result's filtered_at.
//   - The result is one JSON object: the frame's identity (device, run,
//     seq), the pipeline's fields, filtered_at, split and capture_ts (the
//     wall clock at capture).

// Errors of the frame protocol; each wraps the cause.
var (
	// ErrEncode: the state could not be encoded.
	ErrEncode = errors.New("cannot encode state")
	// ErrWrongStage: the state names a stage the cloud cannot start at.
	ErrWrongStage = errors.New("wrong stage")
	// ErrBadState: the state's fields cannot be decoded.
	ErrBadState = errors.New("bad state")
	// ErrResult: the result cannot be made (not a JSON object, too large).
	ErrResult = errors.New("bad result")
)

// Frame names one frame of one device run.
type Frame struct {
	Device string
	Run    string
	Seq    uint64
	// Captured is the wall clock when the frame was captured: the
	// result's capture_ts.
	Captured time.Time
}

// Offloaded is a frame ready to cross to the cloud.
type Offloaded struct {
	// Next is the stage that continues the frame: k, or the sink for a
	// frame filtered on the device.
	Next int
	// FilteredAt is the stage that filtered the frame on the device, or "".
	FilteredAt string
	// Payload is the encoded state (wire envelope).
	Payload []byte
}

// Offload runs stages [0, k) on st and encodes the state for the stage
// that continues the frame, with the time each stage took (wall time
// around wrap, which may emulate a slower device). Errors wrap ErrStage or
// ErrEncode; ctx cancels between stages.
func (p *Pipeline) Offload(ctx context.Context, st *State, f Frame, k int, enc Encoding, wrap Wrap) (Offloaded, error) {
	if err := p.CheckSplit(k); err != nil {
		return Offloaded{}, err
	}
	var timings []wire.Timing
	timed := func(stage string, run func() (Outcome, error)) (Outcome, error) {
		start := time.Now()
		var out Outcome
		var err error
		if wrap != nil {
			out, err = wrap(stage, run)
		} else {
			out, err = run()
		}
		timings = append(timings, wire.Timing{Stage: stage, Nanos: int64(time.Since(start)), Where: wire.OnDevice})
		return out, err
	}
	filteredAt, err := p.Run(ctx, st, 0, k, timed)
	if err != nil {
		return Offloaded{}, err
	}
	next := k
	if filteredAt != "" {
		next = p.Len() - 1 // the sink reports the filtered frame
	}
	st.Keep(p.Needs(next))
	payload, err := p.Envelope(st, f, k, next, filteredAt, timings, enc)
	if err != nil {
		return Offloaded{}, err
	}
	return Offloaded{Next: next, FilteredAt: filteredAt, Payload: payload}, nil
}

// Envelope encodes the state of a frame processed at split k for stage
// next. Errors wrap ErrEncode.
func (p *Pipeline) Envelope(st *State, f Frame, k, next int, filteredAt string, timings []wire.Timing, enc Encoding) ([]byte, error) {
	fields, err := EncodeFields(st, p.Needs(next), enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	b, err := wire.Encode(&wire.Envelope{
		Version: wire.Version, Pipeline: p.name, Opts: p.opts,
		Device: f.Device, Run: f.Run, Seq: f.Seq, Split: k, Next: p.stages[next].Name(),
		CaptureTS: f.Captured.UnixNano(), FilteredAt: filteredAt, Timings: timings, Fields: fields,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	return b, nil
}

// Finished is a frame's answer.
type Finished struct {
	// Result is the result JSON object.
	Result []byte
	// Annotated is the image the sink asked to publish, or nil.
	Annotated []byte
}

// Finish runs the rest of the frame in env — from env.Next to the sink, or
// only the sink for a frame filtered earlier — and makes its result. p must
// be the pipeline env names, built from env.Opts. Errors wrap
// ErrWrongStage, ErrBadState, ErrStage or ErrResult; ctx cancels between
// stages.
func Finish(ctx context.Context, p *Pipeline, env *wire.Envelope, wrap Wrap) (Finished, error) {
	from, sink := p.Index(env.Next), p.Len()-1
	switch {
	case from < 1:
		return Finished{}, fmt.Errorf("%w: stage %q does not run in the cloud in pipeline %s", ErrWrongStage, env.Next, p.name)
	case env.FilteredAt != "" && from != sink:
		return Finished{}, fmt.Errorf("%w: filtered state sent to stage %q instead of the sink", ErrWrongStage, env.Next)
	case env.Split < 1 || env.Split > p.MaxSplit():
		return Finished{}, fmt.Errorf("%w: split %d out of range 1..%d", ErrWrongStage, env.Split, p.MaxSplit())
	}
	st := NewState(env.Device, env.Seq)
	defer st.Close()
	if err := DecodeFields(st, env.Fields); err != nil {
		return Finished{}, fmt.Errorf("%w: %w", ErrBadState, err)
	}
	filteredAt := env.FilteredAt
	var err error
	if filteredAt == "" {
		filteredAt, err = p.Run(ctx, st, from, sink, wrap)
	}
	if err == nil {
		_, err = p.Run(ctx, st, sink, sink+1, wrap)
	}
	if err != nil {
		return Finished{}, err
	}
	head := wire.ResultHead{Device: env.Device, Run: env.Run, Seq: env.Seq, Split: env.Split, CaptureTS: time.Unix(0, env.CaptureTS)}
	if filteredAt != "" {
		head.FilteredAt = &filteredAt
	}
	res, err := wire.MarshalResult(head, st.Result())
	if err != nil {
		return Finished{}, fmt.Errorf("%w: %w", ErrResult, err)
	}
	if len(res) > wire.MaxResultBytes { // the device would refuse it
		return Finished{}, fmt.Errorf("%w: result of %d bytes exceeds %d", ErrResult, len(res), wire.MaxResultBytes)
	}
	return Finished{Result: res, Annotated: st.Annotated()}, nil
}

// RoundTrip runs one input as a device and the cloud would at split k, in
// one process: Offload on a fresh state, the wire (encode, decode, the
// pipeline rebuilt from the state's options), Finish. Pipeline authors test
// their pipeline at every split with it; the frame is device "dev", run
// "r1", seq 3, captured at the Unix epoch.
func RoundTrip(ctx context.Context, p *Pipeline, input any, k int, enc Encoding) (Finished, Offloaded, error) {
	st := NewState("dev", 3)
	defer st.Close()
	if err := st.SetInput(FieldSource, input); err != nil {
		return Finished{}, Offloaded{}, err
	}
	off, err := p.Offload(ctx, st, Frame{Device: "dev", Run: "r1", Seq: 3, Captured: time.Unix(0, 0)}, k, enc, nil)
	if err != nil {
		return Finished{}, off, err
	}
	env, err := wire.Decode(off.Payload, wire.DefaultMaxMessageBytes)
	if err != nil {
		return Finished{}, off, err
	}
	q, err := BuildEncoded(env.Pipeline, env.Opts)
	if err != nil {
		return Finished{}, off, err
	}
	done, err := Finish(ctx, q, env, nil)
	return done, off, err
}
