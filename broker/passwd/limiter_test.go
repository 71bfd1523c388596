package passwd

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fails records n failures of addr at now, each allowed first.
func fails(t *testing.T, l *Limiter, addr string, now time.Time, n int) {
	t.Helper()
	for i := range n {
		if !l.Allow(addr, now) {
			t.Fatalf("%s: failure %d of %d refused", addr, i+1, n)
		}
		l.Fail(addr, now)
	}
}

// remembered reports whether l has an entry for each of addrs.
func remembered(l *Limiter, addrs ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range addrs {
		if l.addrs[a] == nil {
			return false
		}
	}
	return true
}

// addrs returns the addresses l remembers, least recently failed first.
func addrs(l *Limiter) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []string
	for e := l.byTime.Front(); e != nil; e = e.Next() {
		s = append(s, e.Value.(*bucket).addr)
	}
	return s
}

func TestLimiterBurstAndRefill(t *testing.T) {
	l := NewLimiter(3, time.Minute, 10)
	const a = "192.0.2.1"
	if !l.Allow(a, t0) || l.Len() != 0 {
		t.Fatal("a new address is refused, or Allow remembered it")
	}
	fails(t, l, a, t0, 3)
	for _, d := range []time.Duration{0, time.Second, time.Minute - time.Nanosecond} {
		if l.Allow(a, t0.Add(d)) {
			t.Errorf("allowed %v after the burst", d)
		}
	}
	if !l.Allow("192.0.2.2", t0) {
		t.Error("another address is refused")
	}
	// Allow does not take a token.
	for range 5 {
		if !l.Allow(a, t0.Add(time.Minute)) {
			t.Fatal("refused one minute after the burst")
		}
	}
	// One token per minute.
	l.Fail(a, t0.Add(time.Minute))
	if l.Allow(a, t0.Add(time.Minute+59*time.Second)) {
		t.Error("allowed twice in one minute after the burst")
	}
	if !l.Allow(a, t0.Add(2*time.Minute)) {
		t.Error("refused two minutes after the burst")
	}
	// A long pause refills the bucket to Burst, no more.
	later := t0.Add(time.Hour)
	fails(t, l, a, later, 3)
	if l.Allow(a, later) {
		t.Error("more than Burst failures allowed after a long pause")
	}
	// Failures recorded while refused (the caller did not ask) do not push
	// the bucket below empty.
	for range 100 {
		l.Fail(a, later)
	}
	if !l.Allow(a, later.Add(time.Minute)) {
		t.Error("refused one minute after the bucket was emptied many times over")
	}
}

func TestLimiterBound(t *testing.T) {
	l := NewLimiter(2, time.Minute, 3)
	// a, b and c each used up their burst.
	fails(t, l, "a", t0, 2)
	fails(t, l, "b", t0.Add(time.Second), 2)
	fails(t, l, "c", t0.Add(2*time.Second), 2)
	if l.Len() != 3 {
		t.Fatalf("Len() = %d, want 3", l.Len())
	}
	// None is idle: d evicts the oldest, a.
	l.Fail("d", t0.Add(3*time.Second))
	if l.Len() != 3 || !remembered(l, "b", "c", "d") || !l.Allow("a", t0.Add(3*time.Second)) || l.Allow("b", t0.Add(3*time.Second)) {
		t.Fatalf("d did not evict a: %q", addrs(l))
	}

	// At +2m10s all are full again; b and d fail again, so c is both the
	// oldest and the only idle one, and e takes its place.
	now := t0.Add(2*time.Minute + 10*time.Second)
	fails(t, l, "b", now, 2)
	fails(t, l, "d", now, 2)
	l.Fail("e", now)
	if !remembered(l, "b", "d", "e") || remembered(l, "c") || l.Len() != 3 {
		t.Errorf("e did not evict c: %q", addrs(l))
	}

	// An idle entry goes before an older busy one.
	l2 := NewLimiter(2, time.Minute, 3)
	fails(t, l2, "old-busy", t0, 2)                     // full again at t0+2m
	fails(t, l2, "idle", t0.Add(time.Second), 1)        // full again at t0+1m1s
	fails(t, l2, "new-busy", t0.Add(90*time.Second), 2) // full again at t0+3m30s
	l2.Fail("newcomer", t0.Add(100*time.Second))        // full again at t0+2m40s
	if !remembered(l2, "old-busy", "new-busy", "newcomer") || remembered(l2, "idle") {
		t.Errorf("newcomer did not evict the idle address: %q", addrs(l2))
	}
	// With no idle entry, the oldest goes: old-busy (last failure at t0).
	l2.Fail("another", t0.Add(101*time.Second))
	if !remembered(l2, "new-busy", "newcomer", "another") || remembered(l2, "old-busy") {
		t.Errorf("another did not evict the oldest address: %q", addrs(l2))
	}

	// Many addresses: never more than Max.
	l3 := NewLimiter(1, time.Hour, 100)
	for i := range 10_000 {
		l3.Fail(fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0.Add(time.Duration(i)*time.Millisecond))
		if l3.Len() > 100 {
			t.Fatalf("Len() = %d after %d addresses", l3.Len(), i+1)
		}
	}
	// The last 100 are the ones remembered.
	if got := addrs(l3); len(got) != 100 || got[0] != "10.0.38.172" || got[99] != "10.0.39.15" || l3.Allow("10.0.39.15", t0.Add(10*time.Second)) {
		t.Errorf("not the most recent addresses remembered: %q...", got[:3])
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := NewLimiter(5, time.Second, 50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				addr := fmt.Sprintf("198.51.100.%d", (g*7+i)%80)
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if l.Allow(addr, now) {
					l.Fail(addr, now)
				}
				if n := l.Len(); n > 50 {
					t.Errorf("Len() = %d", n)
				}
			}
		}()
	}
	wg.Wait()
}

func TestNewLimiterPanics(t *testing.T) {
	for _, args := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {-1, 1, 1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewLimiter%v did not panic", args)
				}
			}()
			NewLimiter(args[0], time.Duration(args[1]), args[2])
		}()
	}
	// A huge burst*every does not overflow into a negative window.
	l := NewLimiter(1<<30, 1<<40, 1)
	l.Fail("a", t0)
	if !l.Allow("a", t0) {
		t.Error("refused after one failure of a huge burst")
	}
}
