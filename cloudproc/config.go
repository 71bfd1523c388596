// Package cloudproc runs a splitpoint cloud processor: it takes stage
// messages from a shared subscription, runs the remaining stages and
// publishes one result per frame.
package cloudproc

import (
	"runtime"
	"time"

	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/internal/metrics"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/wire"
)

// Config is cloudproc's configuration (configs/cloud.toml).
type Config struct {
	ID     string `toml:"id"`
	Broker string `toml:"broker"`
	// Credentials: username, password_file, ca_file, cert_file,
	// key_file.
	mqttc.Credentials
	// Password is refused: a secret belongs in password_file.
	Password string `toml:"password"`
	// Group is the shared-subscription group; cloudprocs in one group
	// share the work.
	Group string `toml:"group"`
	// TopicPrefix is put before every device topic it reads and answers:
	// "" on a LAN (today's topics), "sites/+/" to serve every site behind
	// an upstream broker (answers go to the same site's prefix).
	TopicPrefix string `toml:"topic_prefix"`
	// Workers process frames in parallel; 0 means one per CPU.
	Workers int `toml:"workers"`
	// Queue bounds the frames waiting per device; more is shed (and
	// recovered by the device's resend).
	Queue int `toml:"queue"`
	// Remember is how many answered frames are remembered, with their
	// results, so that a resent or redelivered frame gets the same result
	// again without being processed twice.
	Remember int `toml:"remember"`
	// RememberBytes bounds the remembered results' bytes.
	RememberBytes int `toml:"remember_bytes"`
	// TakeoverLimit: the broker closing the connection this many times
	// within TakeoverWindow means another client uses this cloudproc's
	// client id; it then exits with an error (0: never).
	TakeoverLimit   int             `toml:"takeover_limit"`
	TakeoverWindow  config.Duration `toml:"takeover_window"`
	MaxMessageBytes int             `toml:"max_message_bytes"`
	StatsInterval   config.Duration `toml:"stats_interval"`
	// TelemetryInterval is the period of offload/_cloud/<id>/telemetry.
	TelemetryInterval config.Duration `toml:"telemetry_interval"`
	LogLevel          string          `toml:"log_level"`
	// LogFormat is "text" (key=value lines) or "json" (one object a line).
	LogFormat string `toml:"log_format"`
	// MetricsListen is the address of the Prometheus metrics, served on
	// /metrics: host:port, port 0 picks a free one, "" (the default) turns
	// them off. Beyond loopback anyone who can reach it reads the device
	// names.
	MetricsListen string `toml:"metrics_listen"`
	// MetricsMaxDevices bounds the devices with per-device series;
	// MetricsForgetAfter removes the series of a device not heard from for
	// this long.
	MetricsMaxDevices  int             `toml:"metrics_max_devices"`
	MetricsForgetAfter config.Duration `toml:"metrics_forget_after"`
	// Ready, if set, is called once, when cloudproc has announced itself
	// online (its subscriptions acknowledged).
	Ready func() `toml:"-"`
	// MetricsReady, if set, is called once the metrics listen, with their
	// host:port (the real port when port 0 was asked for).
	MetricsReady func(addr string) `toml:"-"`

	Emulate struct {
		// Slowdown emulates a slower cloud, as on the device.
		Slowdown float64 `toml:"slowdown"`
	} `toml:"emulate"`
}

// DefaultConfig returns the defaults, equal to configs/cloud.toml.
func DefaultConfig() Config {
	c := Config{
		ID:                "cloud1",
		Broker:            "tcp://127.0.0.1:1883",
		Group:             wire.DefaultShareGroup,
		Queue:             64,
		Remember:          65536,
		RememberBytes:     32 << 20,
		TakeoverLimit:     mqttc.DefaultTakeoverLimit,
		TakeoverWindow:    config.Duration(mqttc.DefaultTakeoverWindow),
		MaxMessageBytes:   wire.DefaultMaxMessageBytes,
		StatsInterval:     config.Duration(60 * time.Second),
		TelemetryInterval: config.Duration(2 * time.Second),
		LogLevel:          "info",
		LogFormat:         "text",
	}
	c.MetricsMaxDevices = metrics.DefaultMaxDevices
	c.MetricsForgetAfter = config.Duration(metrics.DefaultForgetAfter)
	c.Emulate.Slowdown = 1
	return c
}

func (c *Config) workers() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return runtime.NumCPU()
}

// Validate checks every field.
func (c *Config) Validate() error {
	if err := wire.ValidateName(c.ID); err != nil {
		return config.Errorf("id", "%v", err)
	}
	if err := mqttc.ValidateBroker(c.Broker); err != nil {
		return config.Errorf("broker", "%v", err)
	}
	if c.Password != "" {
		return config.Errorf("password", "a secret does not belong in the config: write it to a file only this user can read (chmod 600) and set password_file")
	}
	if key, err := c.Credentials.Check(c.Broker); err != nil {
		return config.Errorf(key, "%v", err)
	}
	if key, err := mqttc.CheckTakeover(c.TakeoverLimit, c.TakeoverWindow.D()); err != nil {
		return config.Errorf(key, "%v", err)
	}
	if err := wire.ValidateName(c.Group); err != nil {
		return config.Errorf("group", "%v", err)
	}
	if err := wire.ValidateTopicPrefix(c.TopicPrefix); err != nil {
		return config.Errorf("topic_prefix", "%v", err)
	}
	switch {
	case c.Workers < 0 || c.Workers > 256:
		return config.Errorf("workers", "must be 0 (one per CPU) to 256 (got %d)", c.Workers)
	case c.Queue < 1 || c.Queue > 65536:
		return config.Errorf("queue", "must be 1..65536 (got %d)", c.Queue)
	case c.Remember < 16 || c.Remember > 1<<24:
		return config.Errorf("remember", "must be 16..16777216 (got %d)", c.Remember)
	case c.RememberBytes < 1<<16 || c.RememberBytes > 1<<32:
		return config.Errorf("remember_bytes", "must be 65536..4294967296 (got %d)", c.RememberBytes)
	case c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 256<<20:
		return config.Errorf("max_message_bytes", "must be 1024..268435456 (got %d)", c.MaxMessageBytes)
	case c.TelemetryInterval.D() < 100*time.Millisecond:
		return config.Errorf("telemetry_interval", "must be at least 100ms (got %v)", c.TelemetryInterval.D())
	case c.StatsInterval < 0:
		return config.Errorf("stats_interval", "must not be negative")
	case !(c.Emulate.Slowdown >= 1 && c.Emulate.Slowdown <= 1000):
		return config.Errorf("emulate.slowdown", "must be 1..1000 (got %g)", c.Emulate.Slowdown)
	}
	if key, err := config.CheckLog(c.LogLevel, c.LogFormat); err != nil {
		return config.Errorf(key, "%v", err)
	}
	if err := metrics.CheckListen(c.MetricsListen); err != nil {
		return config.Errorf("metrics_listen", "%v", err)
	}
	if key, err := metrics.CheckBounds(c.MetricsMaxDevices, c.MetricsForgetAfter.D()); err != nil {
		return config.Errorf(key, "%v", err)
	}
	return nil
}

// LoadConfig loads a cloudproc config file over the defaults.
func LoadConfig(path string) (Config, *config.File, error) {
	cfg := DefaultConfig()
	f, err := config.Load(path, &cfg)
	return cfg, f, err
}
