package gateway

import (
	"context"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/config"
)

func TestShippedConfigEqualsDefaults(t *testing.T) {
	got := DefaultConfig()
	if _, err := config.Load("../configs/gateway.toml", &got); err != nil {
		t.Fatal(err)
	}
	got2 := Config{}
	if _, err := config.Load("../configs/gateway.toml", &got2); err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got2, want) {
		t.Errorf("configs/gateway.toml differs from the defaults:\n file %+v\n defaults %+v", got2, want)
	}
}

func TestSessionLimitsValidated(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.SessionExpiry = config.Duration(1500 * time.Millisecond) }, "session_expiry: must be whole seconds from 1s to 8760h (got 1.5s)"},
		{func(c *Config) { c.SessionExpiry = 0 }, "session_expiry: must be whole seconds from 1s to 8760h (got 0s)"},
		{func(c *Config) { c.MaxQueuedMessages = 0 }, "max_queued_messages: must be 1..65000 (got 0)"},
		{func(c *Config) { c.MaxQueuedMessages = 65001 }, "max_queued_messages: must be 1..65000 (got 65001)"},
		{func(c *Config) { c.MaxQueuedBytes = 32 }, "max_queued_bytes: must be 65536..max_queued_bytes_total (134217728) (got 32)"},
		{func(c *Config) { c.MaxQueuedBytes = c.MaxQueuedBytesTotal + 1 }, "max_queued_bytes: must be 65536..max_queued_bytes_total (134217728) (got 134217729)"},
		{func(c *Config) { c.MaxQueuedBytesTotal = 1 << 41 }, "max_queued_bytes_total: must be 65536..1099511627776 (got 2199023255552)"},
		{func(c *Config) { c.MaxOfflineSessions = 0 }, "max_offline_sessions: must be 1..100000 (got 0)"},
	} {
		c := DefaultConfig()
		tc.set(&c)
		if err := c.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := broker.Limits{Expiry: time.Hour, MaxMessages: 1000, MaxBytes: 32 << 20, MaxBytesTotal: 128 << 20, MaxOfflineSessions: 256}
	if got := c.SessionLimits(); got != want {
		t.Errorf("limits %+v, want %+v", got, want)
	}
}

func TestBrokerLineHasSessionCounters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.StatsInterval = config.Duration(20 * time.Millisecond)
	logs, out := &testutil.Buffer{}, &testutil.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, out, slog.New(slog.NewTextHandler(logs, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "msg=broker ") {
		if time.Now().After(deadline) {
			t.Fatalf("no broker line:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, k := range []string{" offline_sessions=0 ", " queued=0 ", " queued_bytes=0 ", " discarded.count_cap=0 ", " discarded.byte_cap=0 ",
		" discarded.total_cap=0 ", " discarded.expired=0 ", " discarded.session_cap=0 ", " discarded.bytes=0 ", " sessions_expired=0 ",
		" sessions_evicted=0 ", " takeovers=0 "} {
		if !strings.Contains(logs.String(), k) {
			t.Errorf("broker line lacks %q:\n%s", k, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "session_expiry=1h0m0s max_queued_messages=1000 max_queued_bytes=33554432 max_queued_bytes_total=134217728 max_offline_sessions=256") {
		t.Errorf("the start line lacks the session limits:\n%s", logs.String())
	}
}

// Anonymous access only on loopback (or knowingly insecure); passwords only
// over TLS or loopback; TLS files and identities complete.
func TestAccessSettingsValidated(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string // "" : valid
	}{
		{func(c *Config) { c.Listen = "0.0.0.0:1883" }, "listen: 0.0.0.0:1883 is not a loopback address: without [auth] every client there would be anonymous"},
		{func(c *Config) { c.Listen = "0.0.0.0:1883"; c.AllowAnonymous = true }, "listen: 0.0.0.0:1883 is not a loopback address: without [auth]"},
		{func(c *Config) { c.Listen = "0.0.0.0:1883"; c.AllowAnonymous = true; c.Insecure = true }, ""},
		{func(c *Config) { c.TLS = TLS{Listen: "0.0.0.0:8883", CertFile: "c", KeyFile: "k"} }, "tls.listen: 0.0.0.0:8883 is not a loopback address: without [auth]"},
		{func(c *Config) { c.TLS = TLS{Listen: "0.0.0.0:8883", KeyFile: "k"} }, "tls.cert_file: a TLS listener needs cert_file and key_file"},
		{func(c *Config) { c.TLS = TLS{ClientCAFile: "ca"} }, "tls.listen: cert_file, key_file and client_ca_file need a TLS listener"},
		{func(c *Config) {
			c.Auth.PasswordFile = "p"
			c.TLS = TLS{Listen: "0.0.0.0:8883", CertFile: "c", KeyFile: "k"}
		}, ""},
		{func(c *Config) { c.Auth.PasswordFile = "p"; c.Listen = "0.0.0.0:1883" }, "listen: 0.0.0.0:1883 is not a loopback address: passwords would cross the network in clear text"},
		{func(c *Config) { c.Auth.PasswordFile = "p"; c.Listen = "0.0.0.0:1883"; c.Insecure = true }, ""},
		{func(c *Config) { c.Auth.PasswordFile = "p"; c.AllowAnonymous = true }, "allow_anonymous: cannot be combined with [auth]"},
		{func(c *Config) { c.Auth.Cloud = []string{"c1"} }, "auth.password_file: cloud and admin identities need a password_file"},
		{func(c *Config) { c.Auth.PasswordFile = "p"; c.Auth.Cloud = []string{"Cloud 1"} }, "auth.cloud: name \"Cloud 1\" is not allowed"},
		{func(c *Config) { c.Auth.PasswordFile = "p"; c.Auth.Cloud = []string{"x"}; c.Auth.Admin = []string{"x"} }, "auth.admin: \"x\" is already listed in auth.cloud"},
		{func(c *Config) { c.MaxConnectBytes = 10 }, "max_connect_bytes: must be 256..1048576 (got 10)"},
		{func(c *Config) { c.MaxConnectionsPerAddress = c.MaxConnections + 1 }, "max_connections_per_address: must be 1..max_connections (1024) (got 1025)"},
	} {
		c := DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("got %v, want valid", err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
