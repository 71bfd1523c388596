package gateway

import (
	"time"

	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/wire"
)

// Control configures the automatic split controller ([control]).
type Control struct {
	// Period is the control period.
	Period config.Duration `toml:"period"`
	// Margin: a split qualifies when predicted fps ≥ target × (1 + margin).
	Margin float64 `toml:"margin"`
	// Headroom: moving work back needs predicted fps ≥ target × (1 + headroom).
	Headroom float64 `toml:"headroom"`
	// Dwell: how long a split must hold, at target, before work moves back.
	Dwell config.Duration `toml:"dwell"`
	// Shortfall: consecutive periods below target that trigger an offload.
	Shortfall int `toml:"shortfall"`
	// Verify: periods a move back is on probation.
	Verify int `toml:"verify"`
	// Smoothing weighs the previous measured fps (0: none, up to 0.9).
	Smoothing float64 `toml:"smoothing"`
}

// HomeAssistant configures MQTT discovery ([homeassistant]).
type HomeAssistant struct {
	Enabled bool   `toml:"enabled"`
	Prefix  string `toml:"prefix"`
}

// Config is the gateway's configuration (configs/gateway.toml).
type Config struct {
	// Listen is the broker's TCP address; port 0 picks a free port.
	Listen string `toml:"listen"`
	// AllowAnonymous must be true to listen on a non-loopback address
	// without users.
	AllowAnonymous bool `toml:"allow_anonymous"`
	// MaxMessageBytes bounds every message's payload.
	MaxMessageBytes int `toml:"max_message_bytes"`
	// DefaultTargetFPS is the target of a device that never set one.
	DefaultTargetFPS float64 `toml:"default_target_fps"`
	// SessionExpiry: a persistent session whose client has been gone this
	// long is deleted, with its subscriptions and queued messages.
	SessionExpiry config.Duration `toml:"session_expiry"`
	// MaxQueuedMessages bounds the messages kept for one offline session;
	// the oldest are discarded first.
	MaxQueuedMessages int `toml:"max_queued_messages"`
	// MaxQueuedBytes bounds the bytes kept for one offline session (topic,
	// payload and 1 KiB of bookkeeping per message); oldest first.
	MaxQueuedBytes int64 `toml:"max_queued_bytes"`
	// MaxQueuedBytesTotal bounds the bytes kept for all offline sessions
	// together; the oldest message of any of them goes first.
	MaxQueuedBytesTotal int64 `toml:"max_queued_bytes_total"`
	// MaxOfflineSessions bounds the offline sessions kept; the one offline
	// the longest is deleted first.
	MaxOfflineSessions int `toml:"max_offline_sessions"`
	// MaxRetainedMessages and MaxRetainedBytes bound the retained messages
	// (count, payload bytes); past them a new retained message is delivered
	// but not kept.
	MaxRetainedMessages int   `toml:"max_retained_messages"`
	MaxRetainedBytes    int64 `toml:"max_retained_bytes"`
	// StatsInterval is how often broker counters are logged; 0 disables.
	StatsInterval config.Duration `toml:"stats_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel      string        `toml:"log_level"`
	Control       Control       `toml:"control"`
	HomeAssistant HomeAssistant `toml:"homeassistant"`

	// Ready, if set, is called once the broker listens, with its address
	// (host:port, the real port when Listen asked for port 0).
	Ready func(addr string) `toml:"-"`
}

// SessionLimits are the broker's limits for offline sessions.
func (c *Config) SessionLimits() broker.Limits {
	return broker.Limits{
		Expiry:             c.SessionExpiry.D(),
		MaxMessages:        c.MaxQueuedMessages,
		MaxBytes:           c.MaxQueuedBytes,
		MaxBytesTotal:      c.MaxQueuedBytesTotal,
		MaxOfflineSessions: c.MaxOfflineSessions,
	}
}

// Ranges of the session limits.
const (
	maxSessionExpiry   = 8760 * time.Hour // a year
	minQueuedBytes     = 64 << 10         // below this a typo ("32" for 32 MiB) is likelier than intent
	maxQueuedBytes     = 1 << 40
	maxOfflineSessions = 100000
)

// DefaultConfig returns the defaults, equal to configs/gateway.toml.
func DefaultConfig() Config {
	return Config{
		Listen:           "127.0.0.1:1883",
		MaxMessageBytes:  wire.DefaultMaxMessageBytes,
		DefaultTargetFPS: 15,
		// Sized for a Raspberry Pi with 1 GB of RAM (see broker.Default*).
		SessionExpiry:       config.Duration(broker.DefaultSessionExpiry),
		MaxQueuedMessages:   broker.DefaultMaxQueuedMessages,
		MaxQueuedBytes:      broker.DefaultMaxQueuedBytes,
		MaxQueuedBytesTotal: broker.DefaultMaxQueuedBytesAll,
		MaxOfflineSessions:  broker.DefaultMaxOfflineSessions,
		MaxRetainedMessages: broker.DefaultMaxRetained,
		MaxRetainedBytes:    broker.DefaultMaxRetainedBytes,
		StatsInterval:       config.Duration(60 * time.Second),
		LogLevel:            "info",
		Control: Control{
			Period:    config.Duration(2 * time.Second),
			Margin:    0.10,
			Headroom:  0.20,
			Dwell:     config.Duration(10 * time.Second),
			Shortfall: 2,
			Verify:    2,
			Smoothing: 0,
		},
		HomeAssistant: HomeAssistant{Enabled: true, Prefix: "homeassistant"},
	}
}

// Validate checks every field.
func (c *Config) Validate() error {
	loop, err := broker.IsLoopback(c.Listen)
	if err != nil {
		return config.Errorf("listen", "%v (want host:port, e.g. 127.0.0.1:1883)", err)
	}
	if !loop && !c.AllowAnonymous {
		return config.Errorf("listen", "%s is not a loopback address: anonymous access there needs allow_anonymous = true", c.Listen)
	}
	k := c.Control
	switch {
	case c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 256<<20:
		return config.Errorf("max_message_bytes", "must be 1024..268435456 (got %d)", c.MaxMessageBytes)
	case !(c.DefaultTargetFPS > 0 && c.DefaultTargetFPS <= wire.MaxTargetFPS):
		return config.Errorf("default_target_fps", "must be > 0 and ≤ %d (got %g)", wire.MaxTargetFPS, c.DefaultTargetFPS)
	case c.SessionExpiry.D() < time.Second || c.SessionExpiry.D() > maxSessionExpiry || c.SessionExpiry.D()%time.Second != 0:
		return config.Errorf("session_expiry", "must be whole seconds from 1s to 8760h (got %v)", c.SessionExpiry.D())
	case c.MaxQueuedMessages < 1 || c.MaxQueuedMessages > broker.MaxQueuedMessagesLimit:
		return config.Errorf("max_queued_messages", "must be 1..%d (got %d)", broker.MaxQueuedMessagesLimit, c.MaxQueuedMessages)
	case c.MaxQueuedBytesTotal < minQueuedBytes || c.MaxQueuedBytesTotal > maxQueuedBytes:
		return config.Errorf("max_queued_bytes_total", "must be %d..%d (got %d)", minQueuedBytes, int64(maxQueuedBytes), c.MaxQueuedBytesTotal)
	case c.MaxQueuedBytes < minQueuedBytes || c.MaxQueuedBytes > c.MaxQueuedBytesTotal:
		return config.Errorf("max_queued_bytes", "must be %d..max_queued_bytes_total (%d) (got %d)", minQueuedBytes, c.MaxQueuedBytesTotal, c.MaxQueuedBytes)
	case c.MaxOfflineSessions < 1 || c.MaxOfflineSessions > maxOfflineSessions:
		return config.Errorf("max_offline_sessions", "must be 1..%d (got %d)", maxOfflineSessions, c.MaxOfflineSessions)
	case c.MaxRetainedMessages < 16 || c.MaxRetainedMessages > 10000000:
		return config.Errorf("max_retained_messages", "must be 16..10000000 (got %d)", c.MaxRetainedMessages)
	case c.MaxRetainedBytes < minQueuedBytes || c.MaxRetainedBytes > maxQueuedBytes:
		return config.Errorf("max_retained_bytes", "must be %d..%d (got %d)", minQueuedBytes, int64(maxQueuedBytes), c.MaxRetainedBytes)
	case c.StatsInterval < 0:
		return config.Errorf("stats_interval", "must not be negative")
	case k.Period.D() < 100*time.Millisecond:
		return config.Errorf("control.period", "must be at least 100ms (got %v)", k.Period.D())
	case !(k.Margin > 0 && k.Margin < 1):
		return config.Errorf("control.margin", "must be between 0 and 1 (got %g)", k.Margin)
	case !(k.Headroom > 0 && k.Headroom < 2):
		return config.Errorf("control.headroom", "must be between 0 and 2 (got %g)", k.Headroom)
	case k.Dwell.D() < k.Period.D():
		return config.Errorf("control.dwell", "must be at least one period (got %v)", k.Dwell.D())
	case k.Shortfall < 1 || k.Shortfall > 100:
		return config.Errorf("control.shortfall", "must be 1..100 periods (got %d)", k.Shortfall)
	case k.Verify < 1 || k.Verify > 100:
		return config.Errorf("control.verify", "must be 1..100 periods (got %d)", k.Verify)
	case !(k.Smoothing >= 0 && k.Smoothing <= 0.9):
		return config.Errorf("control.smoothing", "must be 0..0.9 (got %g)", k.Smoothing)
	}
	if c.HomeAssistant.Enabled && (c.HomeAssistant.Prefix == "" || !validTopicLevel(c.HomeAssistant.Prefix)) {
		return config.Errorf("homeassistant.prefix", "must be a topic level without +, # or / (got %q)", c.HomeAssistant.Prefix)
	}
	if _, err := config.ParseLevel(c.LogLevel); err != nil {
		return config.Errorf("log_level", "%v", err)
	}
	return nil
}

func validTopicLevel(s string) bool {
	for _, r := range s {
		if r == '+' || r == '#' || r == '/' || r == 0 {
			return false
		}
	}
	return true
}
