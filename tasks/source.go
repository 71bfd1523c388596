package tasks

import (
	"context"
	"log/slog"
	"time"
)

// Source yields a pipeline's inputs, one per frame. A pipeline brings its
// own source kinds (Spec.OpenSource): a vision pipeline reads cameras and
// video files, a sensor pipeline CSV files or a generator.
type Source interface {
	// Read returns the next input — an Array, or a Native the caller then
	// owns — io.EOF when a finite source has ended, or ctx's error as soon
	// as ctx ends (whatever the source is doing).
	Read(ctx context.Context) (any, error)
	// Close releases the source; it returns at once.
	Close() error
}

// SourceStats is implemented by sources that count recoveries.
type SourceStats interface {
	// Counters returns the reopens of a live source after it dropped and
	// the inputs that could not be read and were skipped.
	Counters() (reopens, errors int64)
}

// SourceRate is implemented by sources with a known input rate.
type SourceRate interface {
	// FPS is the source's rate in inputs per second (0: unknown or as fast
	// as read).
	FPS() float64
}

// Defaults of the device's source settings.
const (
	DefaultReopenBackoffMax = 30 * time.Second
	DefaultReopenGiveUp     = 5 * time.Minute
	DefaultMaxBadFrames     = 25
)

// SourceOptions are the device's settings for how a source recovers.
type SourceOptions struct {
	ReopenBackoffMax time.Duration // cap of a live source's reopen backoff
	ReopenGiveUp     time.Duration // a live source not reopened for this long fails (negative: never)
	MaxBadFrames     int           // consecutive unreadable inputs before the source fails
	Log              *slog.Logger
}
