// Package notify is the one broadcast primitive of splitpoint: waiters take
// a channel that the next Broadcast closes, so they can wait for a change
// together with a context in one select.
package notify

import "sync"

// Cond broadcasts changes. The zero value is ready to use.
type Cond struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns the channel the next Broadcast closes. Take it while holding
// whatever guards the condition, check the condition, then wait.
func (c *Cond) C() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Broadcast wakes every waiter of the current channel.
func (c *Cond) Broadcast() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}
