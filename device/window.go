package device

import (
	"cmp"
	"context"
	"slices"
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
	spooled  bool      // sent while no cloudproc was reachable (held in window.spooled)
}

// window tracks the frames in flight, end to end: a slot is taken when a
// frame is captured and given back when its result arrives or the frame is
// dropped. Nothing else frees it, so a PUBACK proves nothing to it.
//
// While the window is offline (an offline = "spool" device sending into
// the gateway's bridge spool because no cloudproc is reachable), frames
// leave their slot when they are registered and wait for their results in
// spooled instead, bounded in bytes by the device (offline_max_bytes), so
// that results that cannot come yet do not stop capture. Going offline
// moves the frames already in flight there too. A spooled frame is still
// in flight for everything else: its result completes it, the drain waits
// for it, abandon returns it.
type window struct {
	mu           sync.Mutex
	size         int
	reserve      int // slots taken but not yet registered
	flights      map[uint64]*flight
	offline      bool
	spooled      map[uint64]*flight
	spooledBytes int
	changed      notify.Cond // on every release
}

func newWindow(size int) *window {
	return &window{size: size, flights: map[uint64]*flight{}, spooled: map[uint64]*flight{}}
}

// setOffline switches spooling on or off. Going offline moves every frame
// in flight to spooled; it returns how many moved.
func (w *window) setOffline(on bool) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.offline = on
	if !on {
		return 0
	}
	n := len(w.flights)
	for seq, f := range w.flights {
		delete(w.flights, seq)
		w.addSpooled(f)
	}
	if n > 0 {
		w.signal()
	}
	return n
}

func (w *window) addSpooled(f *flight) {
	f.spooled = true
	w.spooled[f.seq] = f
	w.spooledBytes += len(f.payload)
}

func (w *window) removeSpooled(f *flight) {
	delete(w.spooled, f.seq)
	w.spooledBytes -= len(f.payload)
}

// spooledSize returns the number of spooled frames and their state bytes.
func (w *window) spooledSize() (frames, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.spooled), w.spooledBytes
}

// changedC returns a channel closed at the next release.
func (w *window) changedC() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed.C()
}

func (w *window) used() int { return w.reserve + len(w.flights) }

func (w *window) signal() { w.changed.Broadcast() }

// await calls try with the lock held until it reports done, waiting for
// the next change between calls. It gives up (false) when stop is closed
// (a nil stop never is) or ctx ends (then with ctx's error).
func (w *window) await(ctx context.Context, stop <-chan struct{}, try func() bool) (bool, error) {
	for {
		w.mu.Lock()
		if try() {
			w.mu.Unlock()
			return true, nil
		}
		ch := w.changed.C()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// take reserves a free slot, if there is one; w.mu is held.
func (w *window) take() bool {
	if w.used() < w.size {
		w.reserve++
		return true
	}
	return false
}

// acquire waits for a free slot.
func (w *window) acquire(ctx context.Context) error {
	_, err := w.await(ctx, nil, w.take)
	return err
}

// acquireUnless waits for a free slot like acquire, but gives up (false)
// when stop is closed first.
func (w *window) acquireUnless(ctx context.Context, stop <-chan struct{}) (bool, error) {
	return w.await(ctx, stop, w.take)
}

// acquireEvicting takes a slot, evicting the oldest frame in flight when
// the window is full. When every slot is held by a frame that is not in
// flight yet (still in the local stages: nothing to evict), it waits until
// one is registered or released. It returns the evicted frame, or nil.
func (w *window) acquireEvicting(ctx context.Context) (*flight, error) {
	var evicted *flight
	_, err := w.await(ctx, nil, func() bool {
		if w.take() {
			return true
		}
		if len(w.flights) == 0 {
			return false
		}
		for _, f := range w.flights {
			if evicted == nil || f.seq < evicted.seq {
				evicted = f
			}
		}
		delete(w.flights, evicted.seq)
		w.reserve++
		return true
	})
	return evicted, err
}

// release gives back a reserved slot that was never registered.
func (w *window) release() {
	w.mu.Lock()
	w.reserve--
	w.signal()
	w.mu.Unlock()
}

// register turns a reserved slot into a frame in flight (which
// acquireEvicting may then evict), or, while offline, gives the slot back
// and keeps the frame in spooled.
func (w *window) register(f *flight) {
	w.mu.Lock()
	w.reserve--
	if w.offline {
		w.addSpooled(f)
	} else {
		w.flights[f.seq] = f
	}
	w.signal()
	w.mu.Unlock()
}

// holds reports whether f is still in flight (not answered, evicted or
// given up).
func (w *window) holds(f *flight) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flights[f.seq] == f || w.spooled[f.seq] == f
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
	} else if f, ok = w.spooled[seq]; ok {
		w.removeSpooled(f)
	}
	if ok {
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

// staleSpooled picks the spooled frames to resend once their results
// stopped coming (the caller decides when): the oldest last sent before
// cutoff, marked sent now, at most budget of them counting those resent
// since cutoff and still unanswered, so that recovery runs with at most a
// window's worth of resends outstanding. A frame already resent maxResends
// times is removed instead and returned in gaveUp (maxResends 0: no limit).
func (w *window) staleSpooled(cutoff, now time.Time, budget, maxResends int) (resend, gaveUp []*flight) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := make([]*flight, 0, len(w.spooled))
	for _, f := range w.spooled {
		if f.sent.Before(cutoff) {
			old = append(old, f)
		} else if f.resends > 0 {
			budget--
		}
	}
	slices.SortFunc(old, func(a, b *flight) int { return cmp.Compare(a.seq, b.seq) })
	for _, f := range old {
		if maxResends > 0 && f.resends >= maxResends {
			w.removeSpooled(f)
			gaveUp = append(gaveUp, f)
			continue
		}
		if budget <= 0 {
			continue
		}
		budget--
		f.sent = now
		f.resends++
		resend = append(resend, f)
	}
	if len(gaveUp) > 0 {
		w.signal()
	}
	return resend, gaveUp
}

// inFlight is the number of frames in flight, spooled ones included.
func (w *window) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.flights) + len(w.spooled)
}

// waitEmpty waits until no frame is in flight, spooled ones included, or
// ctx ends.
func (w *window) waitEmpty(ctx context.Context) bool {
	empty, _ := w.await(ctx, nil, func() bool { return w.used() == 0 && len(w.spooled) == 0 })
	return empty
}

// abandon removes and returns every frame still in flight.
func (w *window) abandon() []*flight {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*flight, 0, len(w.flights)+len(w.spooled))
	for seq, f := range w.flights {
		out = append(out, f)
		delete(w.flights, seq)
	}
	for _, f := range w.spooled {
		out = append(out, f)
		w.removeSpooled(f)
	}
	w.signal()
	return out
}
