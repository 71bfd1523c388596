package device

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestWindowBlocksUntilAResultFreesASlot(t *testing.T) {
	w := newWindow(2)
	ctx := context.Background()
	for seq := uint64(0); seq < 2; seq++ {
		if err := w.acquire(ctx); err != nil {
			t.Fatal(err)
		}
		w.register(&flight{seq: seq})
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := w.acquire(short); err == nil {
		t.Fatal("acquired a slot in a full window")
	}
	done := make(chan error)
	go func() { done <- w.acquire(ctx) }()
	if !w.complete(1, func(*flight) {}) {
		t.Fatal("seq 1 not in flight")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.complete(1, func(*flight) { t.Error("done ran for a duplicate") }) {
		t.Error("a second result completed seq 1 again")
	}
}

func TestWindowEvictsOldest(t *testing.T) {
	w := newWindow(3)
	ctx := context.Background()
	for _, seq := range []uint64{5, 3, 4} {
		if ev, _ := w.acquireEvicting(ctx); ev != nil {
			t.Fatalf("evicted %d from a window with room", ev.seq)
		}
		w.register(&flight{seq: seq})
	}
	ev, _ := w.acquireEvicting(ctx)
	if ev == nil || ev.seq != 3 {
		t.Fatalf("evicted %+v, want seq 3", ev)
	}
	if w.complete(3, func(*flight) { t.Error("done ran for an evicted frame") }) {
		t.Error("an evicted frame's late result completed it")
	}
	w.release()
	if n := w.inFlight(); n != 2 {
		t.Errorf("%d in flight, want 2", n)
	}
}

func TestStaleReturnsOverdueFramesOnce(t *testing.T) {
	w := newWindow(4)
	now := time.Now()
	for i, age := range []time.Duration{time.Second, 10 * time.Second, 20 * time.Second} {
		_ = w.acquire(context.Background())
		w.register(&flight{seq: uint64(i), sent: now.Add(-age)})
	}
	got, _ := w.stale(now.Add(-5*time.Second), now, 0)
	if len(got) != 2 {
		t.Fatalf("%d stale frames, want 2", len(got))
	}
	if again, _ := w.stale(now.Add(-5*time.Second), now, 0); len(again) != 0 {
		t.Errorf("resent frames are stale again at once: %d", len(again))
	}
}

// A frame resent max_resends times without a result leaves the window
// (and is counted dropped by the caller): nothing stays in flight forever.
func TestStaleGivesUpAfterMaxResends(t *testing.T) {
	w := newWindow(2)
	start := time.Now()
	_ = w.acquire(context.Background())
	w.register(&flight{seq: 7, sent: start})
	for i := 1; i <= 3; i++ {
		now := start.Add(time.Duration(i) * time.Minute)
		resend, gaveUp := w.stale(now.Add(-time.Second), now, 3)
		if len(resend) != 1 || len(gaveUp) != 0 {
			t.Fatalf("round %d: %d resent, %d given up; want 1, 0", i, len(resend), len(gaveUp))
		}
	}
	now := start.Add(4 * time.Minute)
	resend, gaveUp := w.stale(now.Add(-time.Second), now, 3)
	if len(resend) != 0 || len(gaveUp) != 1 || gaveUp[0].seq != 7 || w.used() != 0 {
		t.Fatalf("after 3 resends: %d resent, %d given up, %d slots used; want 0, 1, 0", len(resend), len(gaveUp), w.used())
	}
}

func TestPercentiles(t *testing.T) {
	st := newStats("d", "r")
	for i := 1; i <= 100; i++ {
		st.result(time.Duration(i) * time.Millisecond)
	}
	s := st.snapshot()
	if s.LatencyP50 != 50*time.Millisecond || s.LatencyP99 != 99*time.Millisecond || s.Results != 100 {
		t.Errorf("p50 %v p99 %v results %d", s.LatencyP50, s.LatencyP99, s.Results)
	}
}

// The drain waits for an empty window and then reads the counters: a
// result must be counted before its slot frees the window.
func TestCompleteCountsBeforeTheWindowEmpties(t *testing.T) {
	w := newWindow(1)
	_ = w.acquire(context.Background())
	w.register(&flight{seq: 7})
	var mu sync.Mutex
	counted := false
	emptied := make(chan bool)
	go func() {
		w.waitEmpty(context.Background())
		mu.Lock()
		defer mu.Unlock()
		emptied <- counted
	}()
	w.complete(7, func(*flight) {
		time.Sleep(20 * time.Millisecond) // a slow counter must still win
		mu.Lock()
		counted = true
		mu.Unlock()
	})
	if !<-emptied {
		t.Error("the window emptied before the result was counted")
	}
}

// With several workers every slot may be held by a frame still in the
// local stages: drop-oldest has nothing to evict and must wait rather than
// exceed the window.
func TestEvictingWaitsWhenNothingIsInFlightYet(t *testing.T) {
	w := newWindow(2)
	ctx := context.Background()
	for range 2 {
		if ev, err := w.acquireEvicting(ctx); ev != nil || err != nil {
			t.Fatal(ev, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := w.acquireEvicting(short); err == nil || w.used() != 2 {
		t.Fatalf("took a third slot of 2 (used %d)", w.used())
	}
	got := make(chan *flight)
	go func() {
		ev, _ := w.acquireEvicting(ctx)
		got <- ev
	}()
	time.Sleep(10 * time.Millisecond)
	w.register(&flight{seq: 9}) // a worker finished: now there is one to evict
	if ev := <-got; ev == nil || ev.seq != 9 || w.used() != 2 {
		t.Fatalf("evicted %+v, used %d; want seq 9 evicted and 2 used", ev, w.used())
	}
	if w.holds(&flight{seq: 9}) {
		t.Error("an evicted frame is still held")
	}
}
