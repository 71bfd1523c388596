package device

import (
	"context"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/internal/notify"
)

// flight is a frame whose result has not come back yet.
type flight struct {
	seq      uint64
	topic    string
	payload  []byte
	captured time.Time // monotonic: when the frame was captured
	sent     time.Time // monotonic: last (re)publish
	resends  int       // times republished
}

// window tracks the frames in flight, end to end: a slot is taken when a
// frame is captured and given back when its result arrives or the frame is
// dropped. Nothing else frees it, so a PUBACK proves nothing to it.
type window struct {
	mu      sync.Mutex
	size    int
	reserve int // slots taken but not yet registered
	flights map[uint64]*flight
	changed notify.Cond // on every release
}

func newWindow(size int) *window {
	return &window{size: size, flights: map[uint64]*flight{}}
}

func (w *window) used() int { return w.reserve + len(w.flights) }

func (w *window) signal() { w.changed.Broadcast() }

// acquire waits for a free slot.
func (w *window) acquire(ctx context.Context) error {
	for {
		w.mu.Lock()
		if w.used() < w.size {
			w.reserve++
			w.mu.Unlock()
			return nil
		}
		ch := w.changed.C()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// acquireEvicting takes a slot, evicting the oldest frame in flight when
// the window is full. When every slot is held by a frame that is not in
// flight yet (still in the local stages: nothing to evict), it waits until
// one is registered or released. It returns the evicted frame, or nil.
func (w *window) acquireEvicting(ctx context.Context) (*flight, error) {
	for {
		w.mu.Lock()
		if w.used() < w.size {
			w.reserve++
			w.mu.Unlock()
			return nil, nil
		}
		if len(w.flights) > 0 {
			var evicted *flight
			for _, f := range w.flights {
				if evicted == nil || f.seq < evicted.seq {
					evicted = f
				}
			}
			delete(w.flights, evicted.seq)
			w.reserve++
			w.mu.Unlock()
			return evicted, nil
		}
		ch := w.changed.C()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release gives back a reserved slot that was never registered.
func (w *window) release() {
	w.mu.Lock()
	w.reserve--
	w.signal()
	w.mu.Unlock()
}

// register turns a reserved slot into a frame in flight (which
// acquireEvicting may then evict).
func (w *window) register(f *flight) {
	w.mu.Lock()
	w.reserve--
	w.flights[f.seq] = f
	w.signal()
	w.mu.Unlock()
}

// holds reports whether f is still in flight (not answered, evicted or
// given up).
func (w *window) holds(f *flight) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flights[f.seq] == f
}

// complete removes the frame whose result arrived and runs done on it
// before the slot is given back, so that whoever waits for an empty window
// also sees the result counted. It returns false when the frame is not in
// flight (a duplicate, or a frame already dropped).
func (w *window) complete(seq uint64, done func(*flight)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.flights[seq]
	if ok {
		delete(w.flights, seq)
		done(f)
		w.signal()
	}
	return ok
}

// stale returns the frames last sent before cutoff and marks them sent
// now. A frame already resent maxResends times is removed instead and
// returned in gaveUp, with its slot given back (maxResends 0: no limit).
func (w *window) stale(cutoff, now time.Time, maxResends int) (resend, gaveUp []*flight) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for seq, f := range w.flights {
		if !f.sent.Before(cutoff) {
			continue
		}
		if maxResends > 0 && f.resends >= maxResends {
			delete(w.flights, seq)
			gaveUp = append(gaveUp, f)
			continue
		}
		f.sent = now
		f.resends++
		resend = append(resend, f)
	}
	if len(gaveUp) > 0 {
		w.signal()
	}
	return resend, gaveUp
}

// inFlight is the number of frames in flight.
func (w *window) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.flights)
}

// waitEmpty waits until no frame is in flight or ctx ends.
func (w *window) waitEmpty(ctx context.Context) bool {
	for {
		w.mu.Lock()
		if w.used() == 0 {
			w.mu.Unlock()
			return true
		}
		ch := w.changed.C()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// abandon removes and returns every frame still in flight.
func (w *window) abandon() []*flight {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*flight, 0, len(w.flights))
	for seq, f := range w.flights {
		out = append(out, f)
		delete(w.flights, seq)
	}
	w.signal()
	return out
}
