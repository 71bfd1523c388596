package cloudproc

import (
	"context"
	"sync"
)

// key identifies one frame of one device process.
type key struct {
	device, run string
	seq         uint64
}

// seen remembers the frames being processed or answered, so a redelivered
// or resent frame never yields a second result. It remembers a bounded
// number of answered frames, forgetting the oldest first.
type seen struct {
	mu       sync.Mutex
	busy     map[key]bool // true: answered; false: being processed
	answered []key        // ring of answered keys, oldest at next
	next     int
	cap      int
}

func newSeen(capacity int) *seen {
	return &seen{busy: map[key]bool{}, cap: capacity}
}

// claim marks k as being processed; false when it is processed or answered.
func (s *seen) claim(k key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.busy[k]; ok {
		return false
	}
	s.busy[k] = false
	return true
}

// unclaim forgets a claim whose result was not published.
func (s *seen) unclaim(k key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if done := s.busy[k]; !done {
		delete(s.busy, k)
	}
}

// answered records that k's result is published.
func (s *seen) done(k key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy[k] = true
	if len(s.answered) < s.cap {
		s.answered = append(s.answered, k)
		return
	}
	delete(s.busy, s.answered[s.next])
	s.answered[s.next] = k
	s.next = (s.next + 1) % s.cap
}

// fairQueue holds jobs per device and hands them out round-robin, so one
// device that floods cannot starve the others. Each device's queue is
// bounded.
type fairQueue struct {
	mu      sync.Mutex
	per     map[string][]*job
	ring    []string // devices with queued jobs, in service order
	limit   int
	active  int // jobs popped and not yet finished
	changed chan struct{}
}

func newFairQueue(limit int) *fairQueue {
	return &fairQueue{per: map[string][]*job{}, limit: limit, changed: make(chan struct{})}
}

// push queues j; false when the device's queue is full.
func (q *fairQueue) push(device string, j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	jobs := q.per[device]
	if len(jobs) >= q.limit {
		return false
	}
	if len(jobs) == 0 {
		q.ring = append(q.ring, device)
	}
	q.per[device] = append(jobs, j)
	close(q.changed)
	q.changed = make(chan struct{})
	return true
}

// pop waits for a job; false when ctx ends.
func (q *fairQueue) pop(ctx context.Context) (*job, bool) {
	for {
		q.mu.Lock()
		if len(q.ring) > 0 {
			dev := q.ring[0]
			q.ring = q.ring[1:]
			jobs := q.per[dev]
			j := jobs[0]
			jobs[0] = nil
			jobs = jobs[1:]
			if len(jobs) == 0 {
				delete(q.per, dev)
			} else {
				q.per[dev] = jobs
				q.ring = append(q.ring, dev)
			}
			q.active++
			q.mu.Unlock()
			return j, true
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false
		}
	}
}

// finish marks one popped job as done.
func (q *fairQueue) finish() {
	q.mu.Lock()
	q.active--
	close(q.changed)
	q.changed = make(chan struct{})
	q.mu.Unlock()
}

// waitEmpty waits until no job is queued or being handled, or ctx ends.
func (q *fairQueue) waitEmpty(ctx context.Context) {
	for {
		q.mu.Lock()
		empty := len(q.ring) == 0 && q.active == 0
		ch := q.changed
		q.mu.Unlock()
		if empty {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// len is the number of queued jobs.
func (q *fairQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, jobs := range q.per {
		n += len(jobs)
	}
	return n
}
