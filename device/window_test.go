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

// Offline (offline = "spool"), frames leave their slot when registered, so
// a full window of unanswerable frames does not stop capture; they stay in
// flight for results, the drain and abandon, bounded by their bytes.
func TestWindowOfflineFramesHoldNoSlot(t *testing.T) {
	w := newWindow(2)
	ctx := context.Background()
	w.register(func() *flight { _ = w.acquire(ctx); return &flight{seq: 0, payload: make([]byte, 10)} }())
	if moved := w.setOffline(true); moved != 1 {
		t.Fatalf("moved %d frames in flight to spooled, want 1", moved)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		short, cancel := context.WithTimeout(ctx, time.Second)
		if err := w.acquire(short); err != nil {
			t.Fatalf("seq %d: offline frames held the window: %v", seq, err)
		}
		cancel()
		w.register(&flight{seq: seq, payload: make([]byte, 10)})
	}
	if n, b := w.spooledSize(); n != 6 || b != 60 {
		t.Fatalf("spooled %d frames, %d bytes; want 6, 60", n, b)
	}
	if n := w.inFlight(); n != 6 {
		t.Errorf("%d in flight, want 6 (spooled ones count)", n)
	}
	w.setOffline(false)
	_ = w.acquire(ctx)
	w.register(&flight{seq: 6, payload: make([]byte, 10)})
	if n, _ := w.spooledSize(); n != 6 {
		t.Errorf("a frame registered online went to spooled")
	}
	var got []uint64
	for _, seq := range []uint64{3, 6} {
		if !w.complete(seq, func(f *flight) { got = append(got, f.seq) }) {
			t.Fatalf("seq %d not in flight", seq)
		}
	}
	if n, b := w.spooledSize(); n != 5 || b != 50 {
		t.Errorf("after a result: %d spooled, %d bytes; want 5, 50", n, b)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if w.waitEmpty(short) {
		t.Fatal("waitEmpty returned with spooled frames unanswered")
	}
	if ab := w.abandon(); len(ab) != 5 {
		t.Errorf("abandoned %d, want 5", len(ab))
	}
	if n, b := w.spooledSize(); n != 0 || b != 0 {
		t.Errorf("after abandon: %d spooled, %d bytes", n, b)
	}
}

// Spooled frames are resent oldest first with at most budget outstanding,
// and given up after maxResends.
func TestStaleSpooledIsBudgeted(t *testing.T) {
	w := newWindow(1)
	w.setOffline(true)
	t0 := time.Now()
	for seq := uint64(0); seq < 5; seq++ {
		_ = w.acquire(context.Background())
		w.register(&flight{seq: seq, sent: t0})
	}
	t1 := t0.Add(time.Minute)
	re, gave := w.staleSpooled(t1, t1, 2, 2)
	if len(re) != 2 || re[0].seq != 0 || re[1].seq != 1 || len(gave) != 0 {
		t.Fatalf("first round resent %v gave up %v; want seqs 0, 1", seqs(re), seqs(gave))
	}
	// The two resent are outstanding: no budget left.
	if re, _ := w.staleSpooled(t1, t1.Add(time.Second), 2, 2); len(re) != 0 {
		t.Fatalf("resent %v with the budget used", seqs(re))
	}
	w.complete(0, func(*flight) {})
	re, _ = w.staleSpooled(t1, t1.Add(time.Second), 2, 2)
	if len(re) != 1 || re[0].seq != 2 {
		t.Fatalf("after one answer resent %v, want seq 2", seqs(re))
	}
	t2 := t1.Add(time.Hour)
	re, gave = w.staleSpooled(t2, t2, 10, 1)
	if len(gave) != 2 || len(re) != 2 {
		t.Fatalf("resent %v gave up %v; want 1 and 2 given up (resent once), 3 and 4 resent", seqs(re), seqs(gave))
	}
}

func seqs(fs []*flight) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.seq)
	}
	return out
}

func TestAcquireUnlessGivesUpWhenStopped(t *testing.T) {
	w := newWindow(1)
	ctx := context.Background()
	if got, err := w.acquireUnless(ctx, nil); !got || err != nil {
		t.Fatalf("first slot: %v, %v", got, err)
	}
	stop := make(chan struct{})
	done := make(chan bool)
	go func() { got, _ := w.acquireUnless(ctx, stop); done <- got }()
	close(stop)
	if <-done {
		t.Fatal("took a slot of a full window")
	}
}
