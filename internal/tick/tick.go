// Package tick runs a function on a ticker until its context ends: the
// shape of every periodic background loop (status lines, telemetry,
// probes).
package tick

import (
	"context"
	"time"
)

// Every runs f every period until ctx ends or f returns false.
func Every(ctx context.Context, period time.Duration, f func(now time.Time) bool) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !f(now) {
				return
			}
		}
	}
}
