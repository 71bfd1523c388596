package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Log rate limits. Everything the broker logs per message or per client
// event goes through a limiter, so that a flood of drops or a pair of
// clients fighting over one client id cannot flood the log (and the SD
// card of a Raspberry Pi).
const (
	// dropLogEvery: at most one line per kind of drop and interval; the
	// line says how many were not logged since the previous one.
	dropLogEvery = 10 * time.Second
	// takeoverLogEvery: at most one takeover line per client id and
	// interval (mqttc's client-id conflict detector uses the same window).
	takeoverLogEvery = time.Minute
	// maxLimiterKeys bounds the keys a limiter remembers (see limiter).
	maxLimiterKeys = 1024
)

// limiter allows one event per key and interval and counts the events it
// suppressed. Bound: it remembers at most maxLimiterKeys keys; when that
// many were seen within one interval, further new keys share one overflow
// key (""), so a flood of distinct keys is still limited, as a group.
type limiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*limitState // at most maxLimiterKeys + 1 (the overflow key)
}

type limitState struct {
	last       time.Time
	suppressed int64
}

func newLimiter(every time.Duration) *limiter {
	return &limiter{every: every, now: time.Now, keys: map[string]*limitState{}}
}

// allow reports whether an event for key may be logged now and, if so, how
// many events of that key were suppressed since the last logged one.
func (l *limiter) allow(key string) (ok bool, suppressed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.keys[key]
	if st == nil {
		if len(l.keys) >= maxLimiterKeys {
			for k, s := range l.keys { // forget keys whose interval is over: they would be allowed anyway
				if now.Sub(s.last) >= l.every {
					delete(l.keys, k)
				}
			}
		}
		if len(l.keys) >= maxLimiterKeys {
			key = ""
			st = l.keys[key]
		}
		if st == nil {
			st = &limitState{}
			l.keys[key] = st
			st.last = now
			return true, 0
		}
	}
	if now.Sub(st.last) < l.every {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}

// noisyMochiMessages are the messages mochi logs at Warn once per dropped
// message; quietHandler rate-limits them.
var noisyMochiMessages = map[string]bool{
	"client store quota reached": true, // MaximumInflight reached for one client
	"packet ids exhausted":       true,
}

// quietHandler passes mochi's log records through, except that the
// per-message warnings in noisyMochiMessages are limited to one line per
// message and dropLogEvery, with the count of suppressed lines.
type quietHandler struct {
	slog.Handler
	lim *limiter
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if noisyMochiMessages[r.Message] {
		ok, n := h.lim.allow(r.Message)
		if !ok {
			return nil
		}
		if n > 0 {
			r = r.Clone()
			r.AddAttrs(slog.Int64("suppressed", n))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{Handler: h.Handler.WithAttrs(as), lim: h.lim}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{Handler: h.Handler.WithGroup(name), lim: h.lim}
}
