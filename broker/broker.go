// Package broker embeds the mochi MQTT broker with splitpoint's settings and
// hooks: an access hook that refuses what its Policy does not allow (deny by
// default), and a session hook that bounds what the broker keeps for
// clients that went away (Limits), counts what it discards and the client
// id takeovers (SessionStats, also published on SysSessionsTopic), and
// rate-limits the logging of drops and takeovers.
//
// Everything this package keeps grows with clients, and each is bounded:
//   - sessionHook.sessions: one entry per connected client holding
//     unacknowledged QoS 1/2 messages, plus at most
//     Limits.MaxOfflineSessions offline sessions (the oldest is deleted when
//     one more client goes away). mochi's own client map holds the same
//     offline sessions, deleted with them, or at Limits.Expiry.
//   - a session's message list mirrors mochi's Inflight store of that
//     client: at most MaximumInflight (max(8192, MaxMessages+1)) messages,
//     and for an offline session at most Limits.MaxMessages and
//     Limits.MaxBytes queued bytes; all offline sessions together hold at
//     most Limits.MaxBytesTotal.
//   - the log limiters remember at most 1024 keys each (client ids for
//     takeovers; a handful of fixed kinds for drops and mochi's warnings).
//
// Not bounded here: the messages mochi queues for an *online* client that
// does not read (up to MaximumClientWritesPending, 8192, until the
// keepalive timeout closes a dead connection), and the number of connected
// clients (MaximumClients).
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/system"
)

// Overhead is what a publish packet may carry beyond its payload (fixed
// header, topic, packet id); the broker's packet limit is the message limit
// plus this.
const Overhead = 64 << 10

// Config configures the embedded broker.
type Config struct {
	// Listen is the TCP address, host:port; port 0 picks a free port.
	Listen string
	// AllowAnonymous lets clients connect without credentials. Required
	// explicitly to listen on a non-loopback address.
	AllowAnonymous bool
	// MaxMessageBytes bounds a message's payload.
	MaxMessageBytes int
	// Policy decides who may connect and what they may read and write.
	// Nil means anonymous access for everyone, which AllowAnonymous must
	// allow.
	Policy Policy
	// Sessions bounds what the broker keeps for clients that went away;
	// zero fields take the defaults.
	Sessions Limits
	// MaxRetained and MaxRetainedBytes bound the retained messages (count
	// and payload bytes); 0 takes DefaultMaxRetained and
	// DefaultMaxRetainedBytes.
	MaxRetained      int
	MaxRetainedBytes int64
}

// Broker is a running embedded broker.
type Broker struct {
	srv      *mqtt.Server
	tcp      *listeners.TCP
	addr     string
	sessions *sessionHook
	retained *retainHook
}

// IsLoopback reports whether a listen address binds only loopback.
func IsLoopback(listen string) (bool, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false, fmt.Errorf("%q is not host:port", listen)
	}
	if host == "" {
		return false, nil // all interfaces
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false, fmt.Errorf("host %q is not an IP address or localhost", host)
	}
	return ip.IsLoopback(), nil
}

// Start creates the broker, binds its listener and starts serving.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if log == nil {
		log = slog.Default()
	}
	loop, err := IsLoopback(cfg.Listen)
	if err != nil {
		return nil, err
	}
	policy := cfg.Policy
	if policy == nil {
		if !loop && !cfg.AllowAnonymous {
			return nil, fmt.Errorf("refusing to listen on non-loopback address %s with anonymous access: set allow_anonymous = true to allow it", cfg.Listen)
		}
		policy = AllowAll{}
	}
	if cfg.MaxMessageBytes <= 0 {
		return nil, errors.New("max message bytes must be positive")
	}
	lim, err := cfg.Sessions.withDefaults()
	if err != nil {
		return nil, err
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// Never use MaximumMessageExpiryInterval to bound queues: it also
	// deletes retained messages. Retained control/status messages never
	// expire.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumPacketSize = uint32(cfg.MaxMessageBytes + Overhead)
	// mochi deletes a client offline this long (OnClientExpired then
	// unsubscribes it, which mochi does not).
	caps.MaximumSessionExpiryInterval = uint32(lim.Expiry / time.Second)
	// A backstop above the session hook's per-session count cap, so that
	// mochi never refuses (newest first) what the hook evicts oldest first.
	caps.MaximumInflight = uint16(max(minInflight, lim.MaxMessages+1))
	mochiLog := slog.New(quietHandler{Handler: log.Handler(), lim: newLimiter(dropLogEvery)}).With("component", "broker")
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		Logger:       mochiLog,
	})
	if err := srv.AddHook(&accessHook{policy: policy}, nil); err != nil {
		return nil, err
	}
	if err := srv.AddHook(newConnectLock(log.With("component", "broker")), nil); err != nil {
		return nil, err
	}
	retained := newRetainHook(cfg.MaxRetained, cfg.MaxRetainedBytes, log.With("component", "broker"))
	if err := srv.AddHook(retained, nil); err != nil {
		return nil, err
	}
	sessions := newSessionHook(srv, lim, log.With("component", "broker"))
	if err := srv.AddHook(sessions, nil); err != nil {
		return nil, err
	}
	tcp := listeners.NewTCP(listeners.Config{Type: "tcp", ID: "tcp", Address: cfg.Listen})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, err
	}
	return &Broker{srv: srv, tcp: tcp, addr: tcp.Address(), sessions: sessions, retained: retained}, nil
}

// Addr is the address the listener is bound to (with the real port).
func (b *Broker) Addr() string { return b.addr }

// Server exposes the mochi server, for inline clients.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Info returns a snapshot of the broker's counters.
func (b *Broker) Info() *system.Info { return b.srv.Info.Clone() }

// SessionStats returns what the broker keeps for offline sessions now, what
// it discarded by limit, and the takeovers it counted. The broker also
// publishes them, as JSON, on SysSessionsTopic.
func (b *Broker) SessionStats() SessionStats { return b.sessions.stats() }

// Session describes the session of one client id, if the broker holds
// messages for it or it is offline.
func (b *Broker) Session(clientID string) (SessionInfo, bool) { return b.sessions.session(clientID) }

// Limits returns the session limits in force (the defaults filled in).
func (b *Broker) Limits() Limits { return b.sessions.lim }

// RetainedStats returns the retained-message counters.
func (b *Broker) RetainedStats() RetainedStats { return b.retained.stats() }

// Close stops the listener and disconnects every client.
func (b *Broker) Close() error { return b.srv.Close() }
