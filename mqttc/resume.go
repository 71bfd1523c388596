package mqttc

import (
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// resumeGate works around a data race in paho.mqtt.golang (upstream issue
// #703): with a persistent session, paho starts the OnConnect handler and
// then resume(), which takes the list of stored packets and marks each
// stored publish as a duplicate while the network goroutine may be writing
// it. A publish made by OnConnect before resume() lists the store is such a
// packet. The gate is the client's store: it counts the calls to All() —
// with ConnectRetry one when Connect starts, then one per resume — and
// OnConnect waits until its connection's resume has taken the list, after
// which paho leaves new packets alone.
type resumeGate struct {
	*paho.MemoryStore
	mu       sync.Mutex
	cond     *sync.Cond
	lists    int // calls to All()
	connects int // OnConnect handlers started
	before   int // listings before the first resume
}

// newResumeGate returns a gate for a client whose Connect lists the store
// `before` times before its first resume (1 with ConnectRetry, else 0).
func newResumeGate(before int) *resumeGate {
	g := &resumeGate{MemoryStore: paho.NewMemoryStore(), before: before}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// All implements paho.Store.
func (g *resumeGate) All() []string {
	keys := g.MemoryStore.All()
	g.mu.Lock()
	g.lists++
	g.cond.Broadcast()
	g.mu.Unlock()
	return keys
}

// wait blocks the n-th OnConnect handler until its resume has listed the
// store (All() called before+n times), or until timeout.
func (g *resumeGate) wait(timeout time.Duration) {
	g.mu.Lock()
	g.connects++
	want := g.before + g.connects
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer t.Stop()
	for g.lists < want && time.Now().Before(deadline) {
		g.cond.Wait()
	}
	g.mu.Unlock()
}
