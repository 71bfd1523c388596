package cloudproc

import (
	"context"
	"testing"
	"time"
)

func TestSeenNeverAnswersTwiceAndForgetsOldest(t *testing.T) {
	s := newSeen(16)
	k := key{"d", "r", 1}
	if !s.claim(k) || s.claim(k) {
		t.Fatal("a frame in progress was claimed twice")
	}
	s.unclaim(k)
	if !s.claim(k) {
		t.Fatal("an unclaimed frame cannot be claimed again")
	}
	s.done(k)
	if s.claim(k) {
		t.Fatal("an answered frame was claimed again")
	}
	for i := uint64(100); i < 116; i++ {
		s.claim(key{"d", "r", i})
		s.done(key{"d", "r", i})
	}
	if !s.claim(k) {
		t.Error("the oldest answered frame is still remembered beyond the bound")
	}
	if len(s.busy) > 17 {
		t.Errorf("remembers %d frames, bound 16", len(s.busy))
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
