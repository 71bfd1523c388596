package bridge

import (
	"sort"
	"sync"
	"time"
)

// largeMessage is the size from which a publish's PUBACK time measures the
// link's capacity rather than its round trip.
const largeMessage = 32 << 10

// capacityWindow: capacity samples older than this are forgotten.
const capacityWindow = 30 * time.Second

// Link is what the bridge knows about its link to the upstream broker.
type Link struct {
	// RTTms is the median PUBACK time of small publishes, ms (0: unknown).
	RTTms float64 `json:"rtt_ms"`
	// CapacityBps is the link's capacity estimate, bytes/s (0: unknown):
	// the larger of the median of recent samples of bytes ÷ (PUBACK time −
	// RTT) of large publishes sent while nothing else was in flight
	// (probes, or a quiet link), and the rate of acknowledged bytes of
	// publishes sent while others were in flight (a busy link delivers
	// its capacity).
	CapacityBps float64 `json:"capacity_bps"`
	// CapacityAgeS is the age of the newest capacity sample, s.
	CapacityAgeS float64 `json:"capacity_age_s"`
	// AckedBps is the rate of acknowledged bytes over the last few
	// seconds, bytes/s: what the link delivers now.
	AckedBps float64 `json:"acked_bps"`
	// BacklogBytes is what waits in the spool.
	BacklogBytes int64 `json:"backlog_bytes"`
}

type capSample struct {
	at  time.Time
	bps float64
}

// linkEstimator collects PUBACK timings (bounded rings).
type linkEstimator struct {
	mu      sync.Mutex
	rtt     [64]float64 // ms, ring
	nrtt    int
	caps    [32]capSample // ring
	ncaps   int
	acked   [64]capSample // (time, bytes) of recent acks, ring
	nacked  int
	busy    [64]capSample // (time, bytes) of acks of publishes sent while others were in flight
	nbusy   int
	lastCap time.Time
}

func newLinkEstimator() *linkEstimator { return &linkEstimator{} }

// observe records one acknowledged publish of n bytes that took took;
// busy says another publish was in flight when it was sent.
func (l *linkEstimator) observe(n int, took time.Duration, busy bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[l.nacked%len(l.acked)] = capSample{at: now, bps: float64(n)}
	l.nacked++
	if busy {
		l.busy[l.nbusy%len(l.busy)] = capSample{at: now, bps: float64(n)}
		l.nbusy++
	}
	ms := float64(took) / 1e6
	if n < largeMessage {
		l.rtt[l.nrtt%len(l.rtt)] = ms
		l.nrtt++
		return
	}
	if busy {
		return // queued behind others: the busy rate measures the link
	}
	rtt := l.rttLocked()
	transfer := ms - rtt
	if transfer <= 0 {
		transfer = ms
	}
	if transfer <= 0 {
		return
	}
	l.caps[l.ncaps%len(l.caps)] = capSample{at: now, bps: float64(n) / (transfer / 1000)}
	l.ncaps++
	l.lastCap = now
}

// rateLocked is the rate of the bytes in ring acknowledged within the last
// 5 s (at least 4 acks over at least 0.5 s), bytes/s.
func rateLocked(ring []capSample, n int, now time.Time) float64 {
	var bytes float64
	var oldest time.Time
	count := 0
	for i := 0; i < min(n, len(ring)); i++ {
		if s := ring[i]; now.Sub(s.at) <= 5*time.Second {
			bytes += s.bps
			count++
			if oldest.IsZero() || s.at.Before(oldest) {
				oldest = s.at
			}
		}
	}
	if span := now.Sub(oldest).Seconds(); count >= 4 && span >= 0.5 {
		return bytes / span
	}
	return 0
}

func (l *linkEstimator) rttLocked() float64 {
	n := min(l.nrtt, len(l.rtt))
	if n == 0 {
		return 0
	}
	v := append([]float64(nil), l.rtt[:n]...)
	sort.Float64s(v)
	return v[n/2]
}

func (l *linkEstimator) capacityAge(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastCap.IsZero() {
		return 1 << 62
	}
	return now.Sub(l.lastCap)
}

// snapshot returns the estimates now.
func (l *linkEstimator) snapshot(now time.Time) Link {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := Link{RTTms: l.rttLocked()}
	// Capacity: the median of the recent samples (a sample taken behind
	// a queue reads low, one that raced an idle moment high).
	var v []float64
	for i := 0; i < min(l.ncaps, len(l.caps)); i++ {
		if s := l.caps[i]; now.Sub(s.at) <= capacityWindow {
			v = append(v, s.bps)
		}
	}
	if len(v) > 0 {
		sort.Float64s(v)
		k.CapacityBps = v[len(v)/2]
		k.CapacityAgeS = now.Sub(l.lastCap).Seconds()
	}
	if busy := rateLocked(l.busy[:], l.nbusy, now); busy > k.CapacityBps {
		k.CapacityBps, k.CapacityAgeS = busy, 0
		l.lastCap = now
	}
	k.AckedBps = rateLocked(l.acked[:], l.nacked, now)
	return k
}
