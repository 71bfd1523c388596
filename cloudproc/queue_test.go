package cloudproc

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A frame in progress is claimed once; an answered frame is answered again
// with the same result; the memory forgets the oldest beyond its bounds of
// count and bytes.
func TestSeenReplaysAnsweredAndForgetsOldest(t *testing.T) {
	s := newSeen(16, 1<<20)
	k := key{"d", "r", 1}
	if st, _ := s.claim(k); st != claimNew {
		t.Fatal("a new frame is not claimed")
	}
	if st, _ := s.claim(k); st != claimBusy {
		t.Fatal("a frame in progress was claimed twice")
	}
	s.unclaim(k)
	if st, _ := s.claim(k); st != claimNew {
		t.Fatal("an unclaimed frame cannot be claimed again")
	}
	s.done(k, []byte("result-1"))
	if st, res := s.claim(k); st != claimAnswered || string(res) != "result-1" {
		t.Fatalf("an answered frame: %v %q, want its result again", st, res)
	}
	for i := uint64(100); i < 116; i++ {
		s.claim(key{"d", "r", i})
		s.done(key{"d", "r", i}, []byte("r"))
	}
	if st, _ := s.claim(k); st != claimNew {
		t.Error("the oldest answered frame is still remembered beyond the count bound")
	}
	if n, _ := s.size(); n != 16 || len(s.busy) > 17 {
		t.Errorf("remembers %d results (%d keys), bound 16", n, len(s.busy))
	}
	// The byte bound: 10 results of 100 bytes in 512 bytes keep the last 5.
	b := newSeen(1000, 512)
	for i := uint64(0); i < 10; i++ {
		b.claim(key{"d", "r", i})
		b.done(key{"d", "r", i}, make([]byte, 100))
	}
	if n, bytes := b.size(); n != 5 || bytes != 500 {
		t.Errorf("byte bound: %d results, %d bytes; want 5, 500", n, bytes)
	}
	if st, _ := b.claim(key{"d", "r", 4}); st != claimNew {
		t.Error("a result beyond the byte bound is still remembered")
	}
	if st, _ := b.claim(key{"d", "r", 5}); st != claimAnswered {
		t.Error("a result within the byte bound was forgotten")
	}
}

// The number of devices with queued jobs is bounded too.
func TestFairQueueBoundsDevices(t *testing.T) {
	q := newFairQueue(1)
	for i := 0; i < maxQueuedDevices; i++ {
		if !q.push(fmt.Sprint("d", i), &job{}) {
			t.Fatalf("device %d refused", i)
		}
	}
	if q.push("one-too-many", &job{}) {
		t.Fatal("a device beyond maxQueuedDevices was queued")
	}
}

func TestFairQueueRoundRobinAndBound(t *testing.T) {
	q := newFairQueue(2)
	push := func(dev string, seq uint64) bool { return q.push(dev, &job{key: key{device: dev, seq: seq}}) }
	if !push("a", 1) || !push("a", 2) || push("a", 3) {
		t.Fatal("per-device bound not enforced")
	}
	push("b", 1)
	var order []string
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		j, _ := q.pop(ctx)
		order = append(order, j.key.device)
		q.finish()
	}
	if order[0] != "a" || order[1] != "b" || order[2] != "a" {
		t.Errorf("order %v, want a b a", order)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, ok := q.pop(short); ok {
		t.Error("popped from an empty queue")
	}
	q.waitEmpty(ctx)
}
