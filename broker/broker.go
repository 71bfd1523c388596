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
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/system"
)

// Overhead is what a publish packet may carry beyond its payload (fixed
// header, topic, packet id); the broker's packet limit is the message limit
// plus this.
const Overhead = 64 << 10

// Defaults of the pre-authentication guard (see Guard).
const (
	// DefaultMaxConnectBytes bounds a CONNECT packet: client id, user
	// name, password and will fit in a few hundred bytes.
	DefaultMaxConnectBytes = 4 << 10
	// DefaultConnectTimeout: a connection that has not sent its CONNECT
	// (and finished the TLS handshake) by then is closed.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxConnections bounds the open connections per listener.
	DefaultMaxConnections = 1024
	// DefaultMaxConnectionsPerAddress bounds them per IP address.
	DefaultMaxConnectionsPerAddress = 256
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the plain TCP address, host:port; port 0 picks a free
	// port.
	Listen string
	// TLS, if set, adds a TLS listener.
	TLS *TLSListener
	// Auth, if set, makes every client log in and enforces the ACL. Nil
	// means anonymous access for everyone: only on loopback listeners,
	// unless AllowAnonymous and Insecure.
	Auth *Auth
	// AllowAnonymous and Insecure together allow anonymous access on a
	// non-loopback listener. Insecure alone (with Auth) allows passwords
	// on a plain non-loopback listener.
	AllowAnonymous, Insecure bool
	// MaxConnectBytes, ConnectTimeout, MaxConnections and MaxPerAddress
	// configure each listener's Guard; 0 takes the Default* values.
	MaxConnectBytes int
	ConnectTimeout  time.Duration
	MaxConnections  int
	MaxPerAddress   int
	// MaxMessageBytes bounds a message's payload.
	MaxMessageBytes int
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
	guards   []*Guard
	addr     string
	tlsAddr  string
	access   *access // nil: anonymous
	certs    *certStore
	sessions *sessionHook
	retained *retainHook
	security *securityHook
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
	if err := cfg.checkListeners(); err != nil {
		return nil, err
	}
	var acc *access
	if cfg.Auth != nil {
		var err error
		if acc, err = newAccess(*cfg.Auth, log.With("component", "broker")); err != nil {
			return nil, err
		}
	}
	var certs *certStore
	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		certs = &certStore{files: *cfg.TLS}
		var err error
		if tlsConfig, err = certs.tlsConfig(); err != nil {
			return nil, err
		}
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
	if err := srv.AddHook(&accessHook{a: acc}, nil); err != nil {
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
	b := &Broker{srv: srv, access: acc, certs: certs, sessions: sessions, retained: retained}
	b.security = &securityHook{b: b}
	if err := srv.AddHook(b.security, nil); err != nil {
		return nil, err
	}
	guard := func(id, addr string, tc *tls.Config) (*Guard, error) {
		g := NewGuard(GuardConfig{ID: id, Address: addr, TLS: tc,
			MaxConnectBytes: cmp.Or(cfg.MaxConnectBytes, DefaultMaxConnectBytes),
			ConnectTimeout:  cmp.Or(cfg.ConnectTimeout, DefaultConnectTimeout),
			MaxConnections:  cmp.Or(cfg.MaxConnections, DefaultMaxConnections),
			MaxPerAddress:   cmp.Or(cfg.MaxPerAddress, DefaultMaxConnectionsPerAddress),
		}, log.With("component", "broker", "listener", id))
		if err := srv.AddListener(g); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		b.guards = append(b.guards, g)
		return g, nil
	}
	g, err := guard("tcp", cfg.Listen, nil)
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	b.addr = g.Address()
	if cfg.TLS != nil {
		g, err := guard("tls", cfg.TLS.Listen, tlsConfig)
		if err != nil {
			_ = srv.Close()
			return nil, err
		}
		b.tlsAddr = g.Address()
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, err
	}
	return b, nil
}

// checkListeners enforces the access rules of the listeners: anonymous
// access only on loopback (or AllowAnonymous and Insecure), passwords only
// on TLS or loopback (or Insecure), and authentication possible at all.
func (cfg *Config) checkListeners() error {
	addrs := []string{cfg.Listen}
	if cfg.TLS != nil {
		addrs = append(addrs, cfg.TLS.Listen)
	}
	for i, a := range addrs {
		loop, err := IsLoopback(a)
		if err != nil {
			return err
		}
		switch {
		case loop:
		case cfg.Auth == nil && !(cfg.AllowAnonymous && cfg.Insecure):
			return fmt.Errorf("refusing anonymous access on non-loopback address %s: configure users, or set both allow_anonymous and insecure", a)
		case cfg.Auth != nil && i == 0 && !cfg.Insecure:
			return fmt.Errorf("refusing passwords in clear text on non-loopback address %s: use the TLS listener, or set insecure", a)
		}
	}
	if cfg.Auth != nil {
		if cfg.AllowAnonymous {
			return errors.New("anonymous access cannot be combined with authentication")
		}
		if cfg.Auth.PasswordFile == "" && (cfg.TLS == nil || cfg.TLS.ClientCAFile == "") {
			return errors.New("authentication needs a password file or a client CA file: no client could log in")
		}
	}
	return nil
}

// TLSAddr is the TLS listener's address ("" : none).
func (b *Broker) TLSAddr() string { return b.tlsAddr }

// Reload re-reads the password file and the TLS certificate (on SIGHUP).
// On an error the old ones stay in force. Connected clients whose user is
// no longer in the password file are disconnected.
func (b *Broker) Reload() error {
	var errs []error
	if b.certs != nil {
		if err := b.certs.load(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.access != nil && b.access.cfg.PasswordFile != "" {
		if err := b.access.reload(); err != nil {
			errs = append(errs, err)
		} else {
			b.dropRemovedUsers()
		}
	}
	return errors.Join(errs...)
}

// dropRemovedUsers disconnects clients that logged in with a password
// whose user the reloaded password file no longer has.
func (b *Broker) dropRemovedUsers() {
	f := b.access.file.Load()
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		gc, _ := cl.Net.Conn.(GuardedConn)
		if _, byCert := verifiedCN(gc); byCert || f.Has(string(cl.Properties.Username)) {
			continue
		}
		b.access.log.Warn("user removed from the password file: disconnecting", "client", cl.ID, "identity", string(cl.Properties.Username))
		cl.Stop(errUserRemoved)
	}
}

var errUserRemoved = errors.New("user removed from the password file")

// SecurityStats returns the authentication counters and each listener's
// pre-authentication guard counters.
func (b *Broker) SecurityStats() SecurityStats {
	st := SecurityStats{}
	if b.access != nil {
		st = b.access.stats()
	}
	st.Listeners = make(map[string]GuardStats, len(b.guards))
	for _, g := range b.guards {
		st.Listeners[g.ID()] = g.Stats()
	}
	return st
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
