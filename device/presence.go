package device

import (
	"math"
	"sync"

	"github.com/splitpoint/splitpoint/internal/notify"
)

// maxClouds bounds the cloudprocs a device tracks; status messages of more
// are ignored (logged once, see onMessage).
const maxClouds = 1024

// presence tracks which cloudprocs are online, from their retained status,
// and whether the gateway bridges to an upstream broker (its retained
// offload/_bridge/status), which is where an offline = "spool" device's
// states wait while no cloudproc is reachable. It holds at most maxClouds.
type presence struct {
	mu      sync.Mutex
	online  map[string]bool
	bridge  bool
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

// setBridge records whether the gateway has a bridge.
func (p *presence) setBridge(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bridge = on
	p.changed.Broadcast()
}

// clear forgets every cloudproc and the bridge: on a lost connection
// nothing is known until the retained statuses come again with the
// resubscription.
func (p *presence) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.online)
	p.bridge = false
	p.changed.Broadcast()
}

// bridged reports whether the gateway announced a bridge.
func (p *presence) bridged() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bridge
}

func (p *presence) any() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.online) > 0
}

// changedC returns a channel closed at the next change.
func (p *presence) changedC() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed.C()
}

func floatBits(f float64) uint64 { return math.Float64bits(f) }
func floatFrom(b uint64) float64 { return math.Float64frombits(b) }
