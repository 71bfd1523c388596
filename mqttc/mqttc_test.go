package mqttc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"go.uber.org/goleak"
)

// TestMain checks that no test leaks a goroutine (broker or client). A
// client closed while paho sleeps before a reconnect stops when that sleep
// (at most MaxReconnectInterval, 5 s) ends: the check waits that long.
func TestMain(m *testing.M) {
	code := m.Run()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = goleak.Find(); err == nil {
			break
		}
	}
	if code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

func quiet() *slog.Logger {
	if os.Getenv("MQTTC_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startBroker starts a broker, anonymous with a nil auth.
func startBroker(t *testing.T, auth *broker.Auth) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxMessageBytes: 4096, Auth: auth}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return "tcp://" + b.Addr()
}

// withUser is authentication with one device, pi1 (password "pw").
func withUser(t *testing.T) *broker.Auth {
	return &broker.Auth{PasswordFile: testutil.WritePasswd(t, map[string]string{"pi1": "pw"})}
}

// plain connects a paho client that does not reconnect.
func plain(t *testing.T, url, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(Timeout) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	return c
}

// receiver counts the messages a client's handler gets.
type receiver struct{ n atomic.Int64 }

func (r *receiver) handle(_ paho.Client, _ paho.Message) { r.n.Add(1) }

// The takeover race, made deterministic: the broker hands client A's id to
// a second connection while A's OnConnect is about to subscribe, so A's
// SUBSCRIBE fails. Before the fix mqttc called Disconnect there, which ends
// paho's auto-reconnect for good: A stayed disconnected forever. Now A
// reconnects, subscribes and receives.
func TestSubscribeFailedByTakeoverReconnects(t *testing.T) {
	url := startBroker(t, nil)
	taken := make(chan struct{})
	var held atomic.Int64
	testHookBeforeSubscribe = func(id string) {
		if held.Add(1) == 1 { // only A's first connection
			other := plain(t, url, id) // takes A's client id over
			other.Disconnect(0)
			close(taken)
		}
	}
	defer func() { testHookBeforeSubscribe = nil }()
	var r receiver
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := Connect(ctx, Options{Broker: url, ClientID: "A", Clean: true, Subscriptions: map[string]byte{"t/a": 1}, Handler: r.handle, Log: quiet()})
	if err != nil {
		t.Fatalf("Connect after a takeover during subscribe: %v", err)
	}
	defer a.Close(0)
	<-taken
	if held.Load() < 2 {
		t.Fatalf("OnConnect ran %d times; the taken-over connection was not redone", held.Load())
	}
	pub := plain(t, url, "pub")
	defer pub.Disconnect(0)
	if err := Publish(pub, "t/a", 1, false, "hello"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.n.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.n.Load(); got != 1 {
		t.Fatalf("A received %d messages after the takeover, want 1", got)
	}
	if a.Err() != nil {
		t.Fatalf("A gave up: %v", a.Err())
	}
}

// A SUBACK that refuses a filter is an error, not a log line.
func TestRefusedSubscriptionIsAnError(t *testing.T) {
	url := startBroker(t, withUser(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, Options{Broker: url, ClientID: "splitpoint-device-pi1", Username: "pi1", Password: "pw", Clean: true,
		Subscriptions: map[string]byte{"offload/pi1/result": 1, "offload/pi2/result": 1}, Handler: func(paho.Client, paho.Message) {}, Log: quiet()})
	var re *RefusedError
	if !errors.As(err, &re) {
		if c != nil {
			c.Close(0)
		}
		t.Fatalf("Connect: %v, want a RefusedError", err)
	}
	if len(re.Filters) != 1 || re.Filters[0] != "offload/pi2/result" {
		t.Errorf("refused filters %v", re.Filters)
	}
	t.Log(err)
}

// Two live clients with one client id: the broker closes each one's
// connection when the other connects. The one that was connected first
// reaches the limit first and gives up; the newer keeps running.
func TestClientIDConflictOlderGivesUp(t *testing.T) {
	url := startBroker(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := func(r *receiver) Options {
		return Options{Broker: url, ClientID: "twin", Clean: false, Subscriptions: map[string]byte{"t/twin": 1},
			Handler: r.handle, TakeoverLimit: 3, TakeoverWindow: time.Minute, Log: quiet()}
	}
	var ra, rb receiver
	older, err := Connect(ctx, opts(&ra))
	if err != nil {
		t.Fatal(err)
	}
	defer older.Close(0)
	newer, err := Connect(ctx, opts(&rb))
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close(0)
	select {
	case <-older.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the older client never gave up")
	}
	var ce *IDConflictError
	if !errors.As(older.Err(), &ce) || ce.Closes != 3 {
		t.Fatalf("older gave up with %v", older.Err())
	}
	if newer.Err() != nil {
		t.Fatalf("the newer client gave up too: %v", newer.Err())
	}
	// The newer one is (or soon is) connected and subscribed.
	pub := plain(t, url, "pub")
	defer pub.Disconnect(0)
	deadline := time.Now().Add(20 * time.Second)
	for rb.n.Load() == 0 && time.Now().Before(deadline) {
		_ = Publish(pub, "t/twin", 1, false, "x")
		time.Sleep(200 * time.Millisecond)
	}
	if rb.n.Load() == 0 {
		t.Fatal("the newer client receives nothing")
	}
	select {
	case <-newer.Done():
		t.Fatalf("the newer client gave up: %v", newer.Err())
	default:
	}
}

// Refused credentials end Connect with the broker's answer, at once,
// instead of a silent retry forever.
func TestRefusedCredentialsAreFinal(t *testing.T) {
	url := startBroker(t, withUser(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Connect(ctx, Options{Broker: url, ClientID: "m", Username: "mallory", Password: "x", Clean: true, Log: quiet()})
	if err == nil {
		c.Close(0)
		t.Fatal("connected with refused credentials")
	}
	if !strings.Contains(err.Error(), "refused client id m") || time.Since(start) > 5*time.Second {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
}

// ssl://, tls:// and mqtts:// connect over TLS, verified against ca_file;
// a broker certificate from another CA is final at once.
func TestTLSBrokerURLs(t *testing.T) {
	ca, other := testutil.NewCA(t, "test"), testutil.NewCA(t, "other")
	srv := ca.Server(t)
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxMessageBytes: 4096,
		TLS: &broker.TLSListener{Listen: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile}}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, scheme := range []string{"ssl", "tls", "mqtts"} {
		url := scheme + "://" + b.TLSAddr()
		if err := ValidateBroker(url); err != nil {
			t.Fatal(err)
		}
		_, tc, _, err := Credentials{CAFile: ca.CertFile}.Load(url)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Connect(ctx, Options{Broker: url, ClientID: "tls-" + scheme, Clean: true, TLS: tc, Log: quiet()})
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		if err := Publish(c, "t/x", 1, false, "x"); err != nil {
			t.Errorf("%s: publish: %v", scheme, err)
		}
		c.Close(0)
	}
	_, tc, _, _ := Credentials{CAFile: other.CertFile}.Load("ssl://x:1")
	start := time.Now()
	c, err := Connect(ctx, Options{Broker: "ssl://" + b.TLSAddr(), ClientID: "wrong-ca", Clean: true, TLS: tc, Log: quiet()})
	if err == nil {
		c.Close(0)
		t.Fatal("connected to a broker whose certificate another CA signed")
	}
	if !strings.Contains(err.Error(), "does not verify") || time.Since(start) > 5*time.Second {
		t.Errorf("after %v: %v", time.Since(start), err)
	}
	if err := ValidateBroker("https://x:1"); err == nil {
		t.Error("https:// accepted")
	}
}
