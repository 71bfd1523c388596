// Package gateway runs splitpoint's gateway: the embedded MQTT broker that
// devices and cloudprocs connect to.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/wire"
)

// Config is the gateway's configuration (configs/gateway.toml).
type Config struct {
	// Listen is the broker's TCP address; port 0 picks a free port.
	Listen string `toml:"listen"`
	// AllowAnonymous must be true to listen on a non-loopback address
	// without users.
	AllowAnonymous bool `toml:"allow_anonymous"`
	// MaxMessageBytes bounds every message's payload.
	MaxMessageBytes int `toml:"max_message_bytes"`
	// StatsInterval is how often broker counters are logged; 0 disables.
	StatsInterval config.Duration `toml:"stats_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// DefaultConfig returns the defaults, equal to configs/gateway.toml.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:1883",
		MaxMessageBytes: wire.DefaultMaxMessageBytes,
		StatsInterval:   config.Duration(60 * time.Second),
		LogLevel:        "info",
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
	if c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 256<<20 {
		return config.Errorf("max_message_bytes", "must be 1024..268435456 (got %d)", c.MaxMessageBytes)
	}
	if c.StatsInterval < 0 {
		return config.Errorf("stats_interval", "must not be negative")
	}
	if _, err := config.ParseLevel(c.LogLevel); err != nil {
		return config.Errorf("log_level", "%v", err)
	}
	return nil
}

// Run starts the broker, writes "gateway listening on ADDR" as the first
// line of out, and serves until ctx is done.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	b, err := broker.Start(broker.Config{
		Listen:          cfg.Listen,
		AllowAnonymous:  cfg.AllowAnonymous,
		MaxMessageBytes: cfg.MaxMessageBytes,
	}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Fprintf(out, "gateway listening on %s\n", b.Addr())
	log.Info("gateway started", "listen", b.Addr(), "max_message_bytes", cfg.MaxMessageBytes)

	var tick <-chan time.Time
	if cfg.StatsInterval > 0 {
		t := time.NewTicker(cfg.StatsInterval.D())
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("gateway stopping")
			return nil
		case <-tick:
			i := b.Info()
			log.Info("broker", "clients", i.ClientsConnected, "inflight", i.Inflight,
				"received", i.MessagesReceived, "sent", i.MessagesSent,
				"dropped", i.MessagesDropped, "inflight_dropped", i.InflightDropped)
		}
	}
}
