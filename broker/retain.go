package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults of the retained-message bounds. splitpoint retains about four
// small messages per device (status, state, decision, Home Assistant
// discovery); 10,000 messages serve 2,500 devices.
const (
	DefaultMaxRetained      = 10000
	DefaultMaxRetainedBytes = 64 << 20
)

// RetainedStats are the retained-message counters.
type RetainedStats struct {
	Messages int   `json:"messages"` // retained messages now
	Bytes    int64 `json:"bytes"`    // their topic and payload bytes
	// Refused counts publishes whose retain flag was dropped because a
	// bound was reached (the message itself was delivered).
	Refused int64 `json:"refused"`
}

// retainHook bounds the retained messages by count and payload bytes.
// mochi keeps every retained message forever; a client publishing retained
// messages on ever new topics would grow the broker without bound. Past a
// bound a new retained message is delivered to current subscribers but not
// kept (its retain flag is dropped), counted and logged (rate-limited).
// Replacing or clearing a retained message is always allowed. The gateway's
// own (inline) publishes are never refused, and the broker's own $SYS/
// topics (a fixed set) are not counted. A message costs its topic and
// payload bytes. Concurrent publishers may
// overshoot a bound by one message each.
type retainHook struct {
	mqtt.HookBase
	maxCount int
	maxBytes int64
	log      *slog.Logger
	lim      *limiter

	mu      sync.Mutex
	sizes   map[string]int // topic → retained payload bytes (bounded by maxCount, plus the gateway's own)
	bytes   int64
	refused int64
}

func newRetainHook(maxCount int, maxBytes int64, log *slog.Logger) *retainHook {
	if maxCount <= 0 {
		maxCount = DefaultMaxRetained
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRetainedBytes
	}
	return &retainHook{maxCount: maxCount, maxBytes: maxBytes, log: log, lim: newLimiter(dropLogEvery), sizes: map[string]int{}}
}

func (h *retainHook) ID() string { return "splitpoint-retained" }

func (h *retainHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnRetainMessage}, []byte{b})
}

// OnPublish drops the retain flag of a publish that would pass a bound.
func (h *retainHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 || cl.Net.Inline {
		return pk, nil
	}
	h.mu.Lock()
	old, exists := h.sizes[pk.TopicName]
	over := (!exists && len(h.sizes) >= h.maxCount) || h.bytes-int64(old)+int64(retainedSize(pk)) > h.maxBytes
	if over {
		h.refused++
	}
	n := h.refused
	h.mu.Unlock()
	if over {
		pk.FixedHeader.Retain = false
		if ok, _ := h.lim.allow("retained"); ok {
			h.log.Warn("retained-message bound reached; message delivered but not retained",
				"client", cl.ID, "topic", pk.TopicName, "max_retained_messages", h.maxCount, "max_retained_bytes", h.maxBytes, "refused", n)
		}
	}
	return pk, nil
}

// OnRetainMessage keeps the count and bytes of what mochi retained.
func (h *retainHook) OnRetainMessage(_ *mqtt.Client, pk packets.Packet, r int64) {
	if strings.HasPrefix(pk.TopicName, "$SYS/") {
		return // the broker's own, a fixed set
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.sizes[pk.TopicName]
	if r < 0 || len(pk.Payload) == 0 {
		h.bytes -= int64(old)
		delete(h.sizes, pk.TopicName)
		return
	}
	n := retainedSize(pk)
	h.bytes += int64(n - old)
	h.sizes[pk.TopicName] = n
}

// retainedSize is what a retained message costs: its topic and payload.
func retainedSize(pk packets.Packet) int { return len(pk.TopicName) + len(pk.Payload) }

func (h *retainHook) stats() RetainedStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return RetainedStats{Messages: len(h.sizes), Bytes: h.bytes, Refused: h.refused}
}
