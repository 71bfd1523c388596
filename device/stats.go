package device

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Reasons a captured frame is dropped. Every drop is counted with one.
const (
	DropWindowFull    = "window_full"    // drop-oldest evicted it from a full window
	DropNoCloud       = "no_cloud"       // drop-oldest and no cloudproc online
	DropTooLarge      = "too_large"      // its state exceeds max_message_bytes
	DropStageError    = "stage_error"    // a local stage failed
	DropEncodeError   = "encode_error"   // its state could not be encoded
	DropResultTimeout = "result_timeout" // no result before the drain timeout
	DropDisconnected  = "disconnected"   // in flight when the device gave up its connection (client-id conflict)
	DropCloudError    = "cloud_error"    // a cloud stage failed on it (the result says why)
	DropUnanswered    = "unanswered"     // no result after max_resends resends
)

// Summary is the device's account of a run: captured = results + dropped.
type Summary struct {
	Device        string
	Run           string
	Captured      int
	FilteredLocal int
	Sent          int
	BytesSent     int64 // state bytes published, resends not included
	Resent        int
	Spooled       int // frames sent while no cloudproc was reachable (offline = "spool")
	Results       int
	Duplicates    int // results for a frame already answered or dropped
	BadResults    int // malformed or foreign messages on the result topic
	Profiled      int // frames also run through every stage to profile them
	Dropped       map[string]int
	SourceReopens int64 // reopens of a live source after it dropped
	SourceErrors  int64 // undecodable frames the source skipped
	LatencyP50    time.Duration
	LatencyP99    time.Duration
	Elapsed       time.Duration
}

// DroppedTotal sums the drops over every reason.
func (s Summary) DroppedTotal() int {
	n := 0
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// String is the one-line summary the device prints at exit.
func (s Summary) String() string {
	reasons := make([]string, 0, len(s.Dropped))
	for k, v := range s.Dropped {
		reasons = append(reasons, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(reasons)
	fps := 0.0
	if s.Elapsed > 0 {
		fps = float64(s.Captured) / s.Elapsed.Seconds()
	}
	return fmt.Sprintf("summary device=%s run=%s captured=%d filtered_local=%d sent=%d resent=%d results=%d dropped=%d [%s] duplicates=%d bad_results=%d fps=%.1f latency_p50=%s latency_p99=%s bytes_sent=%d source_reopens=%d source_errors=%d spooled=%d",
		s.Device, s.Run, s.Captured, s.FilteredLocal, s.Sent, s.Resent, s.Results, s.DroppedTotal(), strings.Join(reasons, " "),
		s.Duplicates, s.BadResults, fps, s.LatencyP50.Round(100*time.Microsecond), s.LatencyP99.Round(100*time.Microsecond), s.BytesSent, s.SourceReopens, s.SourceErrors, s.Spooled)
}

// maxLatencySamples bounds the latency record; older samples are overwritten.
const maxLatencySamples = 1 << 16

type stats struct {
	// source reports the source's counters; set once before capture.
	source  func() (reopens, errors int64)
	mu      sync.Mutex
	s       Summary
	lat     []time.Duration
	latNext int
	recent  []time.Duration // since the last recentLatency call
}

func newStats(device, run string) *stats {
	return &stats{s: Summary{Device: device, Run: run, Dropped: map[string]int{}}}
}

func (st *stats) add(f func(*Summary)) {
	st.mu.Lock()
	f(&st.s)
	st.mu.Unlock()
}

func (st *stats) drop(reason string) { st.add(func(s *Summary) { s.Dropped[reason]++ }) }

func (st *stats) result(latency time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Results++
	if len(st.recent) < maxLatencySamples {
		st.recent = append(st.recent, latency)
	}
	if len(st.lat) < maxLatencySamples {
		st.lat = append(st.lat, latency)
	} else {
		st.lat[st.latNext] = latency
		st.latNext = (st.latNext + 1) % maxLatencySamples
	}
}

// counters returns the counts without the latency percentiles (which
// take a sort of every sample).
func (st *stats) counters() Summary {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.countersLocked()
}

func (st *stats) countersLocked() Summary {
	s := st.s
	s.Dropped = maps.Clone(st.s.Dropped)
	if st.source != nil {
		s.SourceReopens, s.SourceErrors = st.source()
	}
	return s
}

// snapshot returns the counts and the latency percentiles over the kept
// samples.
func (st *stats) snapshot() Summary {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.countersLocked()
	if n := len(st.lat); n > 0 {
		sorted := slices.Clone(st.lat)
		slices.Sort(sorted)
		s.LatencyP50 = sorted[percentileIndex(n, 0.50)]
		s.LatencyP99 = sorted[percentileIndex(n, 0.99)]
	}
	return s
}

// percentileIndex is the nearest-rank index of quantile q among n samples.
func percentileIndex(n int, q float64) int {
	i := int(float64(n)*q+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= n {
		i = n - 1
	}
	return i
}

// recentLatency returns the p50 and p99 latency, in ms, of the results
// since its previous call.
func (st *stats) recentLatency() (p50, p99 float64, ok bool) {
	st.mu.Lock()
	r := st.recent
	st.recent = nil
	st.mu.Unlock()
	if len(r) == 0 {
		return 0, 0, false
	}
	slices.Sort(r)
	return ms(r[percentileIndex(len(r), 0.5)]), ms(r[percentileIndex(len(r), 0.99)]), true
}
