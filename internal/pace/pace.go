// Package pace paces a generator to a rate: sources that make their inputs
// (synthetic frames, synthetic sensor windows) deliver them no faster than
// a real device would.
package pace

import (
	"context"
	"time"
)

// Pacer spaces calls to Wait 1/FPS apart. It does not burst to catch up
// after falling more than a second behind. The zero FPS does not pace.
type Pacer struct {
	FPS  float64
	next time.Time
}

// Wait waits until the next input is due, or returns ctx's error.
func (p *Pacer) Wait(ctx context.Context) error {
	if p.FPS <= 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.IsZero() {
		p.next = now
	}
	if d := p.next.Sub(now); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	} else if d < -time.Second { // fell far behind: do not burst to catch up
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(time.Second) / max(p.FPS, 1e-3))) // at most 1000 s apart
	return nil
}
