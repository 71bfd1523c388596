// Package broker embeds the mochi MQTT broker with splitpoint's settings and
// hooks: an access hook that refuses what its Policy does not allow (deny by
// default), and a hook that logs what the broker drops.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

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
}

// Broker is a running embedded broker.
type Broker struct {
	srv  *mqtt.Server
	tcp  *listeners.TCP
	addr string
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

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0 // retained control/status messages never expire
	caps.MaximumPacketSize = uint32(cfg.MaxMessageBytes + Overhead)
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		Logger:       log.With("component", "broker"),
	})
	if err := srv.AddHook(&accessHook{policy: policy}, nil); err != nil {
		return nil, err
	}
	if err := srv.AddHook(&dropHook{log: log}, nil); err != nil {
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
	return &Broker{srv: srv, tcp: tcp, addr: tcp.Address()}, nil
}

// Addr is the address the listener is bound to (with the real port).
func (b *Broker) Addr() string { return b.addr }

// Server exposes the mochi server, for inline clients.
func (b *Broker) Server() *mqtt.Server { return b.srv }

// Info returns a snapshot of the broker's counters.
func (b *Broker) Info() *system.Info { return b.srv.Info.Clone() }

// Close stops the listener and disconnects every client.
func (b *Broker) Close() error { return b.srv.Close() }
