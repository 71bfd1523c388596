package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/gateway"
	"github.com/splitpoint/splitpoint/internal/testutil"
)

// The gateway validates http_listen against its security settings, as it
// does its broker's listeners.
func TestGatewayValidatesHTTPListen(t *testing.T) {
	for _, tc := range []struct {
		set  func(*gateway.Config)
		want string // "" : valid
	}{
		{func(c *gateway.Config) {}, ""},
		{func(c *gateway.Config) { c.HTTPListen = "" }, ""},
		{func(c *gateway.Config) { c.HTTPListen = "0.0.0.0:8080" }, "http_listen: 0.0.0.0:8080 is not a loopback address: without [auth]"},
		{func(c *gateway.Config) {
			c.HTTPListen = "0.0.0.0:8080"
			c.AllowAnonymous, c.Insecure = true, true
			c.Listen = "0.0.0.0:1883"
		}, ""},
		{func(c *gateway.Config) { c.HTTPListen = "0.0.0.0:8080"; c.Auth.PasswordFile = "p" }, "http_listen: 0.0.0.0:8080 is not a loopback address: admins' passwords would cross the network in clear text"},
		{func(c *gateway.Config) {
			c.HTTPListen = "0.0.0.0:8080"
			c.Auth.PasswordFile = "p"
			c.TLS = gateway.TLS{Listen: "0.0.0.0:8883", CertFile: "c", KeyFile: "k"}
		}, ""},
		{func(c *gateway.Config) { c.HTTPListen = "8080" }, "http_listen: \"8080\" is not host:port"},
		{func(c *gateway.Config) { c.HTTPAllowedHosts = []string{"gateway.local", "192.168.1.10"} }, ""},
		{func(c *gateway.Config) { c.HTTPAllowedHosts = []string{"http://gateway.local"} }, "http_allowed_hosts: "},
	} {
		c := gateway.DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// gateway.Run serves the live view, prints its address and reports it in
// Ready; an address in use leaves the gateway running without it.
func TestGatewayRunServesTheLiveView(t *testing.T) {
	cfg := gateway.DefaultConfig()
	cfg.Listen, cfg.HTTPListen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0", ""
	addrs := make(chan gateway.Addrs, 1)
	cfg.Ready = func(a gateway.Addrs) { addrs <- a }
	out := &testutil.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gateway.Run(ctx, cfg, out, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var a gateway.Addrs
	select {
	case a = <-addrs:
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	if a.HTTP == "" || !strings.Contains(out.String(), "gateway live view on http://"+a.HTTP+"/\n") {
		t.Fatalf("addrs %+v, output %q", a, out.String())
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("http://" + a.HTTP + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("GET /api/state: %d", res.StatusCode)
	}

	// A second gateway on the same HTTP address runs without a live view.
	cfg2 := cfg
	cfg2.HTTPListen = a.HTTP
	addrs2 := make(chan gateway.Addrs, 1)
	cfg2.Ready = func(a gateway.Addrs) { addrs2 <- a }
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- gateway.Run(ctx2, cfg2, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case a2 := <-addrs2:
		if a2.HTTP != "" || a2.MQTT == "" {
			t.Errorf("second gateway: %+v", a2)
		}
	case err := <-done2:
		t.Fatalf("second gateway: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("second gateway not ready")
	}
	cancel2()
	if err := <-done2; err != nil {
		t.Error(err)
	}
}
