package source

import (
	"github.com/splitpoint/splitpoint/tasks"
	"log/slog"
	"time"
)

// Options configure how a source recovers. Zero values take the defaults.
type Options struct {
	ReopenBackoffMax time.Duration // cap of the exponential reopen backoff (default 30s)
	ReopenGiveUp     time.Duration // a live source that cannot be reopened for this long fails (default 5m; negative: never)
	MaxBadFrames     int           // consecutive undecodable frames before a source fails (default 25)
	Log              *slog.Logger  // nil: slog.Default()
}

// Stats are a source's counters since it was opened.
type Stats struct {
	Reopens int64 // successful reopens of a live source after it dropped
	Errors  int64 // frames that could not be read or decoded and were skipped
}

// Defaults of Options' zero values, and the first delay of the reopen
// backoff (it doubles after each failed attempt, up to ReopenBackoffMax).
const (
	DefaultReopenBackoffMax = tasks.DefaultReopenBackoffMax
	DefaultReopenGiveUp     = tasks.DefaultReopenGiveUp
	DefaultMaxBadFrames     = tasks.DefaultMaxBadFrames
	ReopenBackoffInitial    = 250 * time.Millisecond
)

// withDefaults fills the zero values of o.
func (o Options) withDefaults() Options {
	if o.ReopenBackoffMax <= 0 {
		o.ReopenBackoffMax = DefaultReopenBackoffMax
	}
	if o.ReopenGiveUp == 0 {
		o.ReopenGiveUp = DefaultReopenGiveUp
	}
	if o.MaxBadFrames <= 0 {
		o.MaxBadFrames = DefaultMaxBadFrames
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}
