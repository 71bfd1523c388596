package passwd

import (
	"container/heap"
	"container/list"
	"math"
	"sync"
	"time"
)

// Limiter rate-limits failed logins per remote address (token bucket: Burst
// failures, then one more per Every). Bounded: it remembers at most Max
// addresses; when full, an entry whose bucket is full again (idle) is
// evicted, else the oldest entry.
//
// "Oldest" is the address whose last failure is the longest ago. Each call
// costs O(log Max). Safe for concurrent use.
type Limiter struct {
	burst  int
	every  time.Duration
	window time.Duration // burst*every: from an empty bucket to a full one
	max    int

	mu     sync.Mutex
	addrs  map[string]*bucket
	byTime *list.List // of *bucket, least recently failed first
	byFull fullHeap   // the bucket that is full again first on top
}

// bucket is one address's token bucket, kept as the time at which it is
// full again: at now it holds burst-(full-now)/every tokens (all of them
// once full is not after now).
type bucket struct {
	addr string
	full time.Time
	elem *list.Element
	idx  int // in Limiter.byFull
}

// NewLimiter returns a limiter that allows burst failed logins from an
// address, then one more per every, remembering at most max addresses. It
// panics unless all three are positive.
func NewLimiter(burst int, every time.Duration, max int) *Limiter {
	if burst < 1 || every <= 0 || max < 1 {
		panic("passwd: NewLimiter needs a positive burst, every and max")
	}
	window := time.Duration(math.MaxInt64)
	if every <= window/time.Duration(burst) {
		window = every * time.Duration(burst)
	}
	return &Limiter{burst: burst, every: every, window: window, max: max,
		addrs: make(map[string]*bucket), byTime: list.New()}
}

// Allow reports whether addr may try a password now (it does not consume a token).
func (l *Limiter) Allow(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.addrs[addr]
	// At least one token: the bucket is less than one token from full.
	return !ok || b.full.Sub(now) <= l.window-l.every
}

// Fail records a failed login from addr (consumes a token).
func (l *Limiter) Fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.addrs[addr]
	if !ok {
		if len(l.addrs) >= l.max {
			victim := l.byFull[0]
			if victim.full.After(now) {
				victim = l.byTime.Front().Value.(*bucket)
			}
			l.remove(victim)
		}
		b = &bucket{addr: addr, full: now}
		l.addrs[addr] = b
		b.elem = l.byTime.PushBack(b)
		heap.Push(&l.byFull, b)
	}
	// Take a token; an empty bucket stays empty (full at most a window
	// away).
	full := b.full
	if full.Before(now) {
		full = now
	}
	full = full.Add(l.every)
	if limit := now.Add(l.window); full.After(limit) {
		full = limit
	}
	b.full = full
	heap.Fix(&l.byFull, b.idx)
	l.byTime.MoveToBack(b.elem)
}

func (l *Limiter) remove(b *bucket) {
	delete(l.addrs, b.addr)
	l.byTime.Remove(b.elem)
	heap.Remove(&l.byFull, b.idx)
}

// Len is the number of addresses remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}

// fullHeap orders buckets by the time they are full again (container/heap).
type fullHeap []*bucket

func (h fullHeap) Len() int           { return len(h) }
func (h fullHeap) Less(i, j int) bool { return h[i].full.Before(h[j].full) }
func (h fullHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *fullHeap) Push(x any) {
	b := x.(*bucket)
	b.idx = len(*h)
	*h = append(*h, b)
}
func (h *fullHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}
