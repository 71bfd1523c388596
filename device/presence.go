package device

import (
	"context"

	"github.com/splitpoint/splitpoint/internal/notify"
	"math"
	"sync"
)

// maxClouds bounds the cloudprocs a device tracks; status messages of more
// are ignored (logged once, see onMessage).
const maxClouds = 1024

// presence tracks which cloudprocs are online, from their retained status.
// It holds at most maxClouds.
type presence struct {
	mu      sync.Mutex
	online  map[string]bool
	changed notify.Cond
}

func newPresence() *presence {
	return &presence{online: map[string]bool{}}
}

// set records a cloudproc's status; false when it is new and the bound is
// reached.
func (p *presence) set(id string, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if !p.online[id] && len(p.online) >= maxClouds {
			return false
		}
		p.online[id] = true
	} else {
		delete(p.online, id)
	}
	p.changed.Broadcast()
	return true
}

// clear forgets every cloudproc: on a lost connection nothing is known
// until the retained statuses come again with the resubscription.
func (p *presence) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.online)
	p.changed.Broadcast()
}

func (p *presence) any() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.online) > 0
}

// wait returns once at least one cloudproc is online.
func (p *presence) wait(ctx context.Context) error {
	for {
		p.mu.Lock()
		n, ch := len(p.online), p.changed.C()
		p.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func floatBits(f float64) uint64 { return math.Float64bits(f) }
func floatFrom(b uint64) float64 { return math.Float64frombits(b) }
