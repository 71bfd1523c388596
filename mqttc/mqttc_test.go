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

func startBroker(t *testing.T, p broker.Policy) string {
	t.Helper()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxMessageBytes: 4096, Policy: p}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return "tcp://" + b.Addr()
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

// onlyRead allows reading one filter.
type onlyRead struct{ filter string }

func (onlyRead) Authenticate(string, string, []byte) bool { return true }
func (p onlyRead) Allow(_, _, topic string, write bool) bool {
	return write || topic == p.filter
}

// A SUBACK that refuses a filter is an error, not a log line.
func TestRefusedSubscriptionIsAnError(t *testing.T) {
	url := startBroker(t, onlyRead{"ok/topic"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, Options{Broker: url, ClientID: "r", Clean: true,
		Subscriptions: map[string]byte{"ok/topic": 1, "secret/topic": 1}, Handler: func(paho.Client, paho.Message) {}, Log: quiet()})
	var re *RefusedError
	if !errors.As(err, &re) {
		if c != nil {
			c.Close(0)
		}
		t.Fatalf("Connect: %v, want a RefusedError", err)
	}
	if len(re.Filters) != 1 || re.Filters[0] != "secret/topic" {
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

// rejectUser refuses one user name.
type rejectUser struct{ user string }

func (p rejectUser) Authenticate(_, user string, _ []byte) bool { return user != p.user }
func (rejectUser) Allow(string, string, string, bool) bool      { return true }

// Refused credentials end Connect with the broker's answer, at once,
// instead of a silent retry forever.
func TestRefusedCredentialsAreFinal(t *testing.T) {
	url := startBroker(t, rejectUser{"mallory"})
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
