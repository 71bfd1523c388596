package gateway

import (
	"log/slog"
	"strings"
	"time"

	"github.com/splitpoint/splitpoint/bridge"
	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/internal/metrics"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/web"
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

// Auth turns on authentication and the deny-by-default ACL ([auth]).
type Auth struct {
	// PasswordFile is a mosquitto password file (mosquitto_passwd; bcrypt
	// lines from htpasswd -B too), re-read on SIGHUP.
	PasswordFile string `toml:"password_file"`
	// Cloud names the cloudproc identities, Admin the admin identities
	// (Home Assistant, operators); every other identity is a device whose
	// id is its name.
	Cloud []string `toml:"cloud"`
	Admin []string `toml:"admin"`
}

// TLS configures the broker's TLS listener ([tls]).
type TLS struct {
	// Listen is the TLS listener's address ("" : none), e.g.
	// 0.0.0.0:8883; port 0 picks a free port.
	Listen string `toml:"listen"`
	// CertFile and KeyFile hold the server certificate chain and key
	// (PEM), re-read on SIGHUP.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ClientCAFile, if set, verifies client certificates: a client with
	// one is identified by its CN (mutual TLS) and needs no password.
	ClientCAFile string `toml:"client_ca_file"`
}

// AuthOn reports whether authentication is on: a password file or a client CA
// is configured.
func (c *Config) AuthOn() bool { return c.Auth.PasswordFile != "" || c.TLS.ClientCAFile != "" }

// Bridge configures the bridge to an upstream broker ([bridge]); off while
// URL is empty.
type Bridge struct {
	// URL of the upstream broker: ssl://host:8883 (or tcp://).
	URL string `toml:"url"`
	// ClientID of the upstream session; default splitpoint-bridge-<site>.
	ClientID string `toml:"client_id"`
	// Credentials: username, password_file, ca_file, cert_file, key_file.
	mqttc.Credentials
	// Site is this gateway's name on the upstream.
	Site string `toml:"site"`
	// RemotePrefix is the upstream prefix of this site's topics; default
	// sites/<site>/.
	RemotePrefix string `toml:"remote_prefix"`
	// SpoolDir holds the disk spool; SpoolMaxBytes bounds it (oldest
	// discarded past it).
	SpoolDir      string `toml:"spool_dir"`
	SpoolMaxBytes int64  `toml:"spool_max_bytes"`
	// MaxInflight bounds the publishes awaiting the upstream's PUBACK.
	MaxInflight int `toml:"max_inflight"`
	// ProbeInterval and ProbeBytes: a link probe when no large publish
	// measured the link for this long ("0s": never).
	ProbeInterval config.Duration `toml:"probe_interval"`
	ProbeBytes    int             `toml:"probe_bytes"`
}

// Addrs are the addresses the broker listens on, with the real ports.
type Addrs struct {
	// MQTT is the plain listener's host:port.
	MQTT string
	// TLS is the TLS listener's host:port ("" : none).
	TLS string
	// Metrics is the Prometheus metrics listener's host:port ("" : off,
	// or the address could not be bound).
	Metrics string
	// HTTP is the live view's host:port ("" : off, or the address could
	// not be bound).
	HTTP string
}

// Config is the gateway's configuration (configs/gateway.toml).
type Config struct {
	// Listen is the broker's plain TCP address; port 0 picks a free port.
	// With [auth] on it must be a loopback address (passwords would cross
	// the network in clear text) unless Insecure.
	Listen string `toml:"listen"`
	// AllowAnonymous, together with Insecure, allows anonymous clients on
	// a non-loopback address. Anonymous access is otherwise loopback only,
	// and never with [auth] on.
	AllowAnonymous bool `toml:"allow_anonymous"`
	// Insecure acknowledges an unsafe listener: anonymous access on a
	// non-loopback address (with AllowAnonymous), or passwords on a plain
	// non-loopback listener.
	Insecure bool `toml:"insecure"`
	// MaxConnectBytes bounds what the broker reads from a client before it
	// has logged in: its CONNECT packet.
	MaxConnectBytes int `toml:"max_connect_bytes"`
	// ConnectTimeout closes a connection that has not sent its CONNECT
	// (and finished the TLS handshake) in this time.
	ConnectTimeout config.Duration `toml:"connect_timeout"`
	// MaxConnections bounds the open connections of each listener;
	// MaxConnectionsPerAddress those from one IP address. Past them a
	// connection is accepted and closed at once.
	MaxConnections           int `toml:"max_connections"`
	MaxConnectionsPerAddress int `toml:"max_connections_per_address"`
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
	LogLevel string `toml:"log_level"`
	// LogFormat is "text" (key=value lines) or "json" (one object a line).
	LogFormat string `toml:"log_format"`
	// MetricsListen is the address of the Prometheus metrics, served on
	// /metrics: host:port, port 0 picks a free one, "" turns them off.
	// Beyond loopback anyone who can reach it reads the device names.
	MetricsListen string `toml:"metrics_listen"`
	// MetricsMaxDevices bounds the devices with per-device series;
	// MetricsForgetAfter removes the series of a device offline and not
	// heard from for this long.
	MetricsMaxDevices  int             `toml:"metrics_max_devices"`
	MetricsForgetAfter config.Duration `toml:"metrics_forget_after"`
	// HTTPListen is the live view's address (package web): host:port, port
	// 0 picks a free one, "" turns it off. Beyond loopback it needs [auth]
	// and, for the passwords, HTTPS with [tls] cert_file and key_file.
	HTTPListen string `toml:"http_listen"`
	// HTTPAllowedHosts are further names browsers may reach the live view
	// by (the Host header is checked), besides the listen host, localhost,
	// 127.0.0.1 and ::1.
	HTTPAllowedHosts []string `toml:"http_allowed_hosts"`

	Control       Control       `toml:"control"`
	HomeAssistant HomeAssistant `toml:"homeassistant"`
	Auth          Auth          `toml:"auth"`
	TLS           TLS           `toml:"tls"`
	Bridge        Bridge        `toml:"bridge"`

	// Ready, if set, is called once the broker listens, with its
	// addresses (the real ports when port 0 was asked for).
	Ready func(Addrs) `toml:"-"`
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

// DefaultMetricsListen is the gateway's default metrics address, on loopback.
const DefaultMetricsListen = "127.0.0.1:9464"

// DefaultConfig returns the defaults, equal to configs/gateway.toml.
func DefaultConfig() Config {
	return Config{
		Listen:                   "127.0.0.1:1883",
		MaxConnectBytes:          broker.DefaultMaxConnectBytes,
		ConnectTimeout:           config.Duration(broker.DefaultConnectTimeout),
		MaxConnections:           broker.DefaultMaxConnections,
		MaxConnectionsPerAddress: broker.DefaultMaxConnectionsPerAddress,
		MaxMessageBytes:          wire.DefaultMaxMessageBytes,
		DefaultTargetFPS:         15,
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
		LogFormat:           "text",
		MetricsListen:       DefaultMetricsListen,
		MetricsMaxDevices:   metrics.DefaultMaxDevices,
		MetricsForgetAfter:  config.Duration(metrics.DefaultForgetAfter),
		HTTPListen:          "127.0.0.1:8080",
		HTTPAllowedHosts:    []string{},
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
		Auth:          Auth{Cloud: []string{}, Admin: []string{}},
		Bridge: Bridge{SpoolMaxBytes: 256 << 20, MaxInflight: bridge.DefaultMaxInflight,
			ProbeInterval: config.Duration(bridge.DefaultProbeInterval), ProbeBytes: bridge.DefaultProbeBytes},
	}
}

// Validate checks every field.
func (c *Config) Validate() error {
	if err := c.validateAccess(); err != nil {
		return err
	}
	if err := c.validateBridge(); err != nil {
		return err
	}
	if err := c.validateHTTP(); err != nil {
		return err
	}
	k := c.Control
	switch {
	case c.MaxConnectBytes < 256 || c.MaxConnectBytes > 1<<20:
		return config.Errorf("max_connect_bytes", "must be 256..1048576 (got %d)", c.MaxConnectBytes)
	case c.ConnectTimeout.D() < 100*time.Millisecond || c.ConnectTimeout.D() > 5*time.Minute:
		return config.Errorf("connect_timeout", "must be 100ms..5m (got %v)", c.ConnectTimeout.D())
	case c.MaxConnections < 1 || c.MaxConnections > 1000000:
		return config.Errorf("max_connections", "must be 1..1000000 (got %d)", c.MaxConnections)
	case c.MaxConnectionsPerAddress < 1 || c.MaxConnectionsPerAddress > c.MaxConnections:
		return config.Errorf("max_connections_per_address", "must be 1..max_connections (%d) (got %d)", c.MaxConnections, c.MaxConnectionsPerAddress)
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

// validateAccess checks the listeners against authentication: anonymous
// access only on loopback (or knowingly insecure), passwords only over TLS
// or loopback (or knowingly insecure), TLS files and identities complete.
func (c *Config) validateAccess() error {
	loop, err := broker.IsLoopback(c.Listen)
	if err != nil {
		return config.Errorf("listen", "%v (want host:port, e.g. 127.0.0.1:1883)", err)
	}
	t := c.TLS
	tlsLoop := true
	if t.Listen != "" {
		if tlsLoop, err = broker.IsLoopback(t.Listen); err != nil {
			return config.Errorf("tls.listen", "%v (want host:port, e.g. 0.0.0.0:8883)", err)
		}
		switch {
		case t.CertFile == "":
			return config.Errorf("tls.cert_file", "a TLS listener needs cert_file and key_file (PEM)")
		case t.KeyFile == "":
			return config.Errorf("tls.key_file", "a TLS listener needs cert_file and key_file (PEM)")
		}
	} else if t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" {
		return config.Errorf("tls.listen", "cert_file, key_file and client_ca_file need a TLS listener: set listen, e.g. 0.0.0.0:8883")
	}
	if !c.AuthOn() {
		if len(c.Auth.Cloud) > 0 || len(c.Auth.Admin) > 0 {
			return config.Errorf("auth.password_file", "cloud and admin identities need a password_file (or tls.client_ca_file)")
		}
		if !(c.AllowAnonymous && c.Insecure) {
			if !loop {
				return config.Errorf("listen", "%s is not a loopback address: without [auth] every client there would be anonymous and allowed everything; set [auth] password_file (see README, Securing a gateway), or, knowingly, allow_anonymous = true and insecure = true", c.Listen)
			}
			if !tlsLoop {
				return config.Errorf("tls.listen", "%s is not a loopback address: without [auth] every client there would be anonymous and allowed everything; set [auth] password_file or tls.client_ca_file, or, knowingly, allow_anonymous = true and insecure = true", t.Listen)
			}
		}
		return nil
	}
	if c.AllowAnonymous {
		return config.Errorf("allow_anonymous", "cannot be combined with [auth]: every client logs in")
	}
	if !loop && !c.Insecure {
		return config.Errorf("listen", "%s is not a loopback address: passwords would cross the network in clear text; serve other hosts on [tls] listen and keep listen on 127.0.0.1 (or, knowingly, set insecure = true)", c.Listen)
	}
	seen := map[string]string{}
	for _, l := range []struct {
		key   string
		names []string
	}{{"auth.cloud", c.Auth.Cloud}, {"auth.admin", c.Auth.Admin}} {
		for _, n := range l.names {
			if l.key == "auth.cloud" {
				if err := wire.ValidateName(n); err != nil {
					return config.Errorf(l.key, "%v", err)
				}
			} else if n == "" || !validTopicLevel(n) {
				return config.Errorf(l.key, "%q is not a user name (no +, #, / or empty)", n)
			}
			if k, dup := seen[n]; dup {
				return config.Errorf(l.key, "%q is already listed in %s", n, k)
			}
			seen[n] = l.key
		}
	}
	return nil
}

// validateHTTP checks the live view's address against authentication (as
// validateAccess does for the broker's listeners) and its allowed hosts.
func (c *Config) validateHTTP() error {
	w := c.webConfig()
	if err := web.CheckAccess(w.Listen, w.Auth != nil, w.TLS != nil, w.Anonymous, w.Insecure); err != nil {
		return config.Errorf("http_listen", "%v", err)
	}
	for _, h := range c.HTTPAllowedHosts {
		if err := web.CheckHostName(h); err != nil {
			return config.Errorf("http_allowed_hosts", "%v", err)
		}
	}
	return nil
}

// webConfig is the live view's configuration: with [auth] on only admins
// may use it (the same password file, or a client certificate); beyond
// loopback it serves HTTPS with [tls] cert_file and key_file when set.
func (c *Config) webConfig() web.Config {
	w := web.Config{Listen: c.HTTPListen, AllowedHosts: c.HTTPAllowedHosts,
		Anonymous: c.AllowAnonymous && c.Insecure, Insecure: c.Insecure}
	if c.AuthOn() {
		w.Auth = &web.Auth{PasswordFile: c.Auth.PasswordFile, Admin: c.Auth.Admin, ClientCAFile: c.TLS.ClientCAFile}
	}
	if loop, err := broker.IsLoopback(c.HTTPListen); err == nil && !loop && c.TLS.CertFile != "" && c.TLS.KeyFile != "" {
		w.TLS = &web.TLS{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile}
	}
	return w
}

// startWeb starts the live view (package web): off when http_listen is ""
// or cannot be bound (logged).
func (c *Config) startWeb(b *broker.Broker, log *slog.Logger) (*web.Server, error) {
	return web.Start(c.webConfig(), b.Server(), log)
}

// remotePrefix is the bridge's upstream prefix ("" without a bridge).
func (c *Config) remotePrefix() string {
	switch {
	case c.Bridge.URL == "":
		return ""
	case c.Bridge.RemotePrefix != "":
		return c.Bridge.RemotePrefix
	}
	return wire.SitePrefix(c.Bridge.Site)
}

// validateBridge checks [bridge] when it is on.
func (c *Config) validateBridge() error {
	b := c.Bridge
	if b.URL == "" {
		return nil
	}
	if err := mqttc.ValidateBroker(b.URL); err != nil {
		return config.Errorf("bridge.url", "%v", err)
	}
	if key, err := b.Credentials.Check(b.URL); err != nil {
		return config.Errorf("bridge."+key, "%v", err)
	}
	if err := wire.ValidateName(b.Site); err != nil {
		return config.Errorf("bridge.site", "%v", err)
	}
	if err := wire.ValidateTopicPrefix(b.RemotePrefix); err != nil || strings.Contains(b.RemotePrefix, "+") {
		return config.Errorf("bridge.remote_prefix", "must be levels of names ending with / (no +, #, leading / or $) (got %q)", b.RemotePrefix)
	}
	switch {
	case b.SpoolDir == "":
		return config.Errorf("bridge.spool_dir", "a bridge needs a directory for its spool, e.g. /var/lib/splitpoint/spool")
	case b.SpoolMaxBytes < 1<<20 || b.SpoolMaxBytes > 1<<40:
		return config.Errorf("bridge.spool_max_bytes", "must be 1048576..1099511627776 (got %d)", b.SpoolMaxBytes)
	case b.MaxInflight < 1 || b.MaxInflight > 65535:
		return config.Errorf("bridge.max_inflight", "must be 1..65535 (got %d)", b.MaxInflight)
	case b.ProbeInterval < 0 || (b.ProbeInterval > 0 && b.ProbeInterval.D() < time.Second):
		return config.Errorf("bridge.probe_interval", "must be 0s (off) or at least 1s (got %v)", b.ProbeInterval.D())
	case b.ProbeBytes < 1024 || b.ProbeBytes > 16<<20:
		return config.Errorf("bridge.probe_bytes", "must be 1024..16777216 (got %d)", b.ProbeBytes)
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
