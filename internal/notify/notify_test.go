package notify

import (
	"testing"
	"time"
)

func TestBroadcastWakesEveryWaiterOfThatChannel(t *testing.T) {
	var c Cond
	a, b := c.C(), c.C()
	if a != b {
		t.Fatal("two waiters before a broadcast got different channels")
	}
	c.Broadcast()
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		case <-time.After(time.Second):
			t.Fatal("a waiter was not woken")
		}
	}
	next := c.C()
	select {
	case <-next:
		t.Fatal("a channel taken after the broadcast is already closed")
	default:
	}
	c.Broadcast()
	c.Broadcast() // no waiter: nothing to close twice
	<-next
}
