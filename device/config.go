// Package device runs a splitpoint device: it captures frames, runs the
// first k stages of the pipeline, publishes the state for the rest, and
// accounts for every frame it captured.
package device

import (
	"fmt"
	"runtime"
	"time"

	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/internal/metrics"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// Flow-control policies for a full window or an absent cloud.
const (
	PolicyBlock      = "block"
	PolicyDropOldest = "drop-oldest"
)

// What a device does while no cloudproc is reachable (offline).
const (
	// OfflineHold pauses capture (policy block) or drops frames with
	// no_cloud (policy drop-oldest): right for cameras.
	OfflineHold = "hold"
	// OfflineSpool keeps capturing while the gateway bridges to an upstream
	// broker: every stage but the sink runs on the device and the gateway
	// stores the states in its spool until the link is back; each frame
	// gets its result late. Without a bridge it holds.
	OfflineSpool = "spool"
)

// MaxWorkers bounds the workers setting.
const MaxWorkers = 64

// Emulate configures the slower-device emulation.
type Emulate struct {
	// Slowdown makes each local stage take Slowdown times its CPU time by
	// busy-spinning; 1 is this machine's own speed.
	Slowdown float64 `toml:"slowdown"`
}

// Config is the device's configuration (configs/pi.toml).
type Config struct {
	ID     string `toml:"id"`
	Broker string `toml:"broker"`
	// Credentials: username (default: the id), password_file, ca_file,
	// cert_file, key_file.
	mqttc.Credentials
	// Password is refused: a secret belongs in password_file.
	Password  string  `toml:"password"`
	Pipeline  string  `toml:"pipeline"`
	Source    string  `toml:"source"`
	Split     int     `toml:"split"`
	Mode      string  `toml:"mode"`
	TargetFPS float64 `toml:"target_fps"`
	Frames    int     `toml:"frames"`
	Window    int     `toml:"window"`
	Workers   int     `toml:"workers"` // frames in the local stages at once (0: one per CPU)
	Policy    string  `toml:"policy"`
	// Offline is OfflineHold or OfflineSpool.
	Offline string `toml:"offline"`
	// OfflineMaxBytes bounds the state bytes of frames sent while offline
	// and not answered yet, which the device keeps to resend; past it the
	// device holds as in OfflineHold until results come back.
	OfflineMaxBytes int             `toml:"offline_max_bytes"`
	MaxMessageBytes int             `toml:"max_message_bytes"`
	MatCodec        string          `toml:"mat_codec"`
	JPEGQuality     int             `toml:"jpeg_quality"`
	ResendAfter     config.Duration `toml:"resend_after"`
	// MaxResends: a frame resent this many times without a result is
	// dropped (unanswered); 0 resends without limit.
	MaxResends        int             `toml:"max_resends"`
	DrainTimeout      config.Duration `toml:"drain_timeout"`
	StatusInterval    config.Duration `toml:"status_interval"`
	TelemetryInterval config.Duration `toml:"telemetry_interval"`
	ProfileFrames     int             `toml:"profile_frames"`
	ProfileInterval   config.Duration `toml:"profile_interval"`
	ProbeInterval     config.Duration `toml:"probe_interval"`
	ProbeBytes        int             `toml:"probe_bytes"`
	LogLevel          string          `toml:"log_level"`
	// LogFormat is "text" (key=value lines) or "json" (one object a line).
	LogFormat string `toml:"log_format"`
	// MetricsListen is the address of the device's Prometheus metrics,
	// served on /metrics: host:port, port 0 picks a free one, "" (the
	// default) turns them off.
	MetricsListen string `toml:"metrics_listen"`
	// ReopenBackoffMax caps the backoff between attempts to reopen a live
	// source (camera, rtsp, http) that dropped.
	ReopenBackoffMax config.Duration `toml:"reopen_backoff_max"`
	// ReopenGiveUp: a live source that cannot be reopened for this long
	// ends the device with an error (0: never give up).
	ReopenGiveUp config.Duration `toml:"reopen_give_up"`
	// MaxBadFrames: this many consecutive undecodable frames end the
	// device with an error; fewer are skipped and counted.
	MaxBadFrames int `toml:"max_bad_frames"`
	// TakeoverLimit: the broker closing the connection this many times
	// within TakeoverWindow means another client uses this device's client
	// id; the device then exits with an error (0: never).
	TakeoverLimit  int             `toml:"takeover_limit"`
	TakeoverWindow config.Duration `toml:"takeover_window"`
	Emulate        Emulate         `toml:"emulate"`

	// Options are the pipeline's options, from the table named after the
	// pipeline ([balltrack]). Nil means the pipeline's defaults.
	Options tasks.Options `toml:"-"`

	// Ready, if set, is called once, with the run id, when the device is
	// connected and about to capture its first frame.
	Ready func(run string) `toml:"-"`
	// MetricsReady, if set, is called once the metrics listen, with their
	// host:port (the real port when port 0 was asked for).
	MetricsReady func(addr string) `toml:"-"`
}

// DefaultConfig returns the defaults, equal to configs/pi.toml.
func DefaultConfig() Config {
	return Config{
		ID:                "pi1",
		Broker:            "tcp://127.0.0.1:1883",
		Pipeline:          "balltrack",
		Source:            "synthetic:?fps=30",
		Split:             3,
		Mode:              wire.ModeAuto,
		Window:            8,
		Policy:            PolicyBlock,
		Offline:           OfflineHold,
		OfflineMaxBytes:   16 << 20,
		MaxMessageBytes:   wire.DefaultMaxMessageBytes,
		MatCodec:          "auto",
		JPEGQuality:       90,
		ResendAfter:       config.Duration(15 * time.Second),
		MaxResends:        20,
		DrainTimeout:      config.Duration(30 * time.Second),
		StatusInterval:    config.Duration(2 * time.Second),
		TelemetryInterval: config.Duration(2 * time.Second),
		ProfileFrames:     3,
		ProfileInterval:   config.Duration(60 * time.Second),
		ProbeInterval:     config.Duration(10 * time.Second),
		ProbeBytes:        256 << 10,
		LogLevel:          "info",
		LogFormat:         "text",
		ReopenBackoffMax:  config.Duration(tasks.DefaultReopenBackoffMax),
		ReopenGiveUp:      config.Duration(tasks.DefaultReopenGiveUp),
		MaxBadFrames:      tasks.DefaultMaxBadFrames,
		TakeoverLimit:     mqttc.DefaultTakeoverLimit,
		TakeoverWindow:    config.Duration(mqttc.DefaultTakeoverWindow),
		Emulate:           Emulate{Slowdown: 1},
	}
}

// Validate checks every field; the pipeline must be registered.
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
	cr := c.Credentials
	if cr.Username == "" {
		cr.Username = c.ID // the default
	}
	if key, err := cr.Check(c.Broker); err != nil {
		return config.Errorf(key, "%v", err)
	}
	if key, err := mqttc.CheckTakeover(c.TakeoverLimit, c.TakeoverWindow.D()); err != nil {
		return config.Errorf(key, "%v", err)
	}
	spec, ok := tasks.Lookup(c.Pipeline)
	if !ok {
		return config.Errorf("pipeline", "unknown pipeline %q (registered: %v)", c.Pipeline, tasks.Names())
	}
	if c.Options == nil {
		c.Options = spec.NewOptions()
	}
	if err := c.Options.Validate(); err != nil {
		return config.Errorf(c.Pipeline, "%v", err)
	}
	p, err := tasks.Build(c.Pipeline, c.Options)
	if err != nil {
		return config.Errorf("pipeline", "%v", err)
	}
	if err := p.CheckSplit(c.Split); err != nil {
		return config.Errorf("split", "must be 1..%d for pipeline %s (got %d)", p.MaxSplit(), c.Pipeline, c.Split)
	}
	if err := spec.CheckSource(c.Source); err != nil {
		return config.Errorf("source", "%v", err)
	}
	switch {
	case c.Mode != wire.ModeAuto && c.Mode != wire.ModeManual:
		return config.Errorf("mode", "must be %q or %q (got %q)", wire.ModeAuto, wire.ModeManual, c.Mode)
	case c.TargetFPS < 0 || c.TargetFPS > wire.MaxTargetFPS:
		return config.Errorf("target_fps", "must be > 0 and ≤ %d, or 0 to keep the gateway's (got %g)", wire.MaxTargetFPS, c.TargetFPS)
	case c.TelemetryInterval.D() < 100*time.Millisecond:
		return config.Errorf("telemetry_interval", "must be at least 100ms (got %v)", c.TelemetryInterval.D())
	case c.ProfileFrames < 0 || c.ProfileFrames > 100:
		return config.Errorf("profile_frames", "must be 0..100 (got %d)", c.ProfileFrames)
	case c.ProfileInterval.D() < 0:
		return config.Errorf("profile_interval", "must not be negative (0: profile only at start and on speed changes)")
	case c.ProbeInterval.D() < 0:
		return config.Errorf("probe_interval", "must not be negative (0 disables uplink probes)")
	case c.ProbeBytes < 1024 || c.ProbeBytes > c.MaxMessageBytes:
		return config.Errorf("probe_bytes", "must be 1024..max_message_bytes (got %d)", c.ProbeBytes)
	case c.Frames < 0:
		return config.Errorf("frames", "must be ≥ 0 (0 runs until stopped), got %d", c.Frames)
	case c.Window < 1 || c.Window > 1024:
		return config.Errorf("window", "must be 1..1024 (got %d)", c.Window)
	case c.Workers < 0 || c.Workers > MaxWorkers:
		return config.Errorf("workers", "must be 0..%d (0: one per CPU), got %d", MaxWorkers, c.Workers)
	case c.Policy != PolicyBlock && c.Policy != PolicyDropOldest:
		return config.Errorf("policy", "must be %q or %q (got %q)", PolicyBlock, PolicyDropOldest, c.Policy)
	case c.Offline != OfflineHold && c.Offline != OfflineSpool:
		return config.Errorf("offline", "must be %q or %q (got %q)", OfflineHold, OfflineSpool, c.Offline)
	case c.OfflineMaxBytes < 1<<20 || c.OfflineMaxBytes > 1<<30:
		return config.Errorf("offline_max_bytes", "must be 1048576..1073741824 (got %d)", c.OfflineMaxBytes)
	case c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 256<<20:
		return config.Errorf("max_message_bytes", "must be 1024..268435456 (got %d)", c.MaxMessageBytes)
	case c.JPEGQuality < 1 || c.JPEGQuality > 100:
		return config.Errorf("jpeg_quality", "must be 1..100 (got %d)", c.JPEGQuality)
	case c.ResendAfter.D() < 100*time.Millisecond:
		return config.Errorf("resend_after", "must be at least 100ms (got %v)", c.ResendAfter.D())
	case c.MaxResends < 0 || c.MaxResends > 1000:
		return config.Errorf("max_resends", "must be 0..1000 (0: no limit), got %d", c.MaxResends)
	case c.DrainTimeout.D() < 0:
		return config.Errorf("drain_timeout", "must not be negative")
	case c.StatusInterval.D() < 0:
		return config.Errorf("status_interval", "must not be negative (0 disables the status line)")
	case c.ReopenBackoffMax.D() < 100*time.Millisecond:
		return config.Errorf("reopen_backoff_max", "must be at least 100ms (got %v)", c.ReopenBackoffMax.D())
	case c.ReopenGiveUp.D() < 0:
		return config.Errorf("reopen_give_up", "must not be negative (0: never give up)")
	case c.MaxBadFrames < 1 || c.MaxBadFrames > 100000:
		return config.Errorf("max_bad_frames", "must be 1..100000 (got %d)", c.MaxBadFrames)
	case !(c.Emulate.Slowdown >= 1 && c.Emulate.Slowdown <= 1000):
		return config.Errorf("emulate.slowdown", "must be 1..1000 (got %g)", c.Emulate.Slowdown)
	}
	if _, err := tasks.ParseEncoding(c.MatCodec, c.JPEGQuality); err != nil {
		return config.Errorf("mat_codec", "%v", err)
	}
	if key, err := config.CheckLog(c.LogLevel, c.LogFormat); err != nil {
		return config.Errorf(key, "%v", err)
	}
	if err := metrics.CheckListen(c.MetricsListen); err != nil {
		return config.Errorf("metrics_listen", "%v", err)
	}
	return nil
}

// LoadConfig loads a device config file over the defaults, including the
// pipeline's options table. An empty path gives the defaults.
func LoadConfig(path string) (Config, *config.File, error) {
	cfg := DefaultConfig()
	f, err := config.Load(path, &cfg, tasks.Names()...)
	if err != nil {
		return cfg, nil, err
	}
	if spec, ok := tasks.Lookup(cfg.Pipeline); ok {
		opts := spec.NewOptions()
		if err := f.DecodeTable(cfg.Pipeline, opts); err != nil {
			return cfg, nil, err
		}
		cfg.Options = opts
	}
	return cfg, f, nil
}

// WorkerCount is the number of workers: Workers, or runtime.NumCPU() when
// it is 0.
func (c *Config) WorkerCount() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return runtime.NumCPU()
}

// SourceOptions are the source recovery settings.
func (c *Config) SourceOptions() tasks.SourceOptions {
	giveUp := c.ReopenGiveUp.D()
	if giveUp == 0 {
		giveUp = -1 // never
	}
	return tasks.SourceOptions{ReopenBackoffMax: c.ReopenBackoffMax.D(), ReopenGiveUp: giveUp, MaxBadFrames: c.MaxBadFrames}
}

// String summarises the config for the start-up log line.
func (c *Config) String() string {
	return fmt.Sprintf("id=%s pipeline=%s split=%d mode=%s target_fps=%g source=%s window=%d workers=%d policy=%s offline=%s slowdown=%g",
		c.ID, c.Pipeline, c.Split, c.Mode, c.TargetFPS, c.Source, c.Window, c.Workers, c.Policy, c.Offline, c.Emulate.Slowdown)
}
