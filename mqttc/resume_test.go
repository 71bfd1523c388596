package mqttc

import (
	"testing"
	"time"
)

func TestResumeGateWaitsForTheConnectionsListing(t *testing.T) {
	g := newResumeGate(1)
	g.All() // Connect reserving stored ids
	done := make(chan struct{})
	go func() { g.wait(10 * time.Second); close(done) }()
	select {
	case <-done:
		t.Fatal("OnConnect went ahead before resume listed the store")
	case <-time.After(50 * time.Millisecond):
	}
	g.All() // resume of the first connection
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnConnect still waiting after resume listed the store")
	}
	// A reconnect: one more listing is needed.
	g.All()
	start := time.Now()
	g.wait(10 * time.Second)
	if time.Since(start) > time.Second {
		t.Error("waited although the reconnect's resume had listed the store")
	}
	// Without a listing it gives up after the timeout.
	start = time.Now()
	g.wait(100 * time.Millisecond)
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("timeout wait took %v", d)
	}
}
