package cloudproc

import (
	"context"

	"github.com/splitpoint/splitpoint/internal/notify"
	"sync"
)

// key identifies one frame of one device process.
type key struct {
	device, run string
	seq         uint64
}

// claimState is what seen knows about a frame.
type claimState int

const (
	claimNew      claimState = iota // not seen (or forgotten): process it
	claimBusy                       // being processed: its result is coming
	claimAnswered                   // answered: replay the remembered result
)

// seen remembers the frames being processed and the results of recently
// answered ones, so that a redelivered or resent frame is answered again
// with the same result instead of being processed twice or ignored (a
// device whose result was lost must get it again). It keeps at most
// maxResults answered frames and maxBytes of their results, forgetting the
// oldest first; a resend of a forgotten frame is processed again.
type seen struct {
	mu         sync.Mutex
	busy       map[key]*memo
	answered   []key // ring of answered keys, oldest at next
	next       int
	maxResults int
	maxBytes   int
	bytes      int
}

// memo is one remembered frame; result is nil while it is processed.
type memo struct {
	result []byte
}

func newSeen(maxResults, maxBytes int) *seen {
	return &seen{busy: map[key]*memo{}, maxResults: maxResults, maxBytes: maxBytes}
}

// claim marks k as being processed when it is new. For an answered frame
// it returns the result to publish again.
func (s *seen) claim(k key) (claimState, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.busy[k]; ok {
		if m.result == nil {
			return claimBusy, nil
		}
		return claimAnswered, m.result
	}
	s.busy[k] = &memo{}
	return claimNew, nil
}

// unclaim forgets a claim whose result was not published.
func (s *seen) unclaim(k key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.busy[k]; ok && m.result == nil {
		delete(s.busy, k)
	}
}

// done records k's published result.
func (s *seen) done(k key, result []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.busy[k]
	if !ok || m.result != nil {
		return
	}
	m.result = result
	s.bytes += len(result)
	s.answered = append(s.answered, k)
	for len(s.answered)-s.next > s.maxResults || (s.bytes > s.maxBytes && len(s.answered)-s.next > 1) {
		old := s.answered[s.next]
		s.answered[s.next] = key{}
		s.next++
		if om, ok := s.busy[old]; ok {
			s.bytes -= len(om.result)
			delete(s.busy, old)
		}
	}
	if s.next > 1024 && s.next*2 > len(s.answered) { // compact the ring's consumed head
		s.answered = append(s.answered[:0:0], s.answered[s.next:]...)
		s.next = 0
	}
}

// size is the number of remembered results and their bytes.
func (s *seen) size() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.answered) - s.next, s.bytes
}

// maxQueuedDevices bounds the devices with queued jobs.
const maxQueuedDevices = maxTrackedDevices

// fairQueue holds jobs per device and hands them out round-robin, so one
// device that floods cannot starve the others. Each device's queue is
// bounded (limit), and so is the number of devices with queued jobs
// (maxQueuedDevices).
type fairQueue struct {
	mu      sync.Mutex
	per     map[string][]*job
	ring    []string // devices with queued jobs, in service order
	limit   int
	active  int // jobs popped and not yet finished
	changed notify.Cond
}

func newFairQueue(limit int) *fairQueue {
	return &fairQueue{per: map[string][]*job{}, limit: limit}
}

// push queues j; false when the device's queue is full.
func (q *fairQueue) push(device string, j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	jobs := q.per[device]
	if len(jobs) >= q.limit || (len(jobs) == 0 && len(q.per) >= maxQueuedDevices) {
		return false
	}
	if len(jobs) == 0 {
		q.ring = append(q.ring, device)
	}
	q.per[device] = append(jobs, j)
	q.changed.Broadcast()
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
		ch := q.changed.C()
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
	q.changed.Broadcast()
	q.mu.Unlock()
}

// waitEmpty waits until no job is queued or being handled, or ctx ends.
func (q *fairQueue) waitEmpty(ctx context.Context) {
	for {
		q.mu.Lock()
		empty := len(q.ring) == 0 && q.active == 0
		ch := q.changed.C()
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
