package web

import (
	"encoding/json"
	"sync"
	"sync/atomic"
)

// Bounds of the live updates.
const (
	// DefaultMaxClients bounds the pages connected to /events at once;
	// past it /events answers 503.
	DefaultMaxClients = 32
	// DefaultClientQueue bounds the updates waiting to be written to one
	// page; a page that falls this far behind is dropped (its browser
	// reconnects and starts again from a snapshot).
	DefaultClientQueue = 64
)

// client is one page connected to /events.
type client struct {
	ch   chan []byte
	gone chan struct{} // closed when the hub dropped the client
	once sync.Once
}

func (c *client) drop() { c.once.Do(func() { close(c.gone) }) }

// hub fans updates out to the connected pages. Sending never blocks: a
// page whose queue is full is dropped.
type hub struct {
	max, queue int
	mu         sync.Mutex
	clients    map[*client]struct{}
	dropped    atomic.Int64 // pages dropped for falling behind
}

func newHub(max, queue int) *hub {
	if max <= 0 {
		max = DefaultMaxClients
	}
	if queue <= 0 {
		queue = DefaultClientQueue
	}
	return &hub{max: max, queue: queue, clients: map[*client]struct{}{}}
}

// add registers a page; nil when there are max already.
func (h *hub) add() *client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= h.max {
		return nil
	}
	c := &client{ch: make(chan []byte, h.queue), gone: make(chan struct{})}
	h.clients[c] = struct{}{}
	return c
}

func (h *hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	c.drop()
}

func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// broadcast queues msg for every page, dropping those whose queue is full.
func (h *hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- msg:
		default:
			delete(h.clients, c)
			c.drop()
			h.dropped.Add(1)
		}
	}
}

// sseEvent encodes v as one server-sent event of the given name.
func sseEvent(name string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+len(name)+16)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\ndata: "...)
	out = append(out, b...)
	return append(out, "\n\n"...), nil
}
