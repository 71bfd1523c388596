package broker

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1883": true, "localhost:0": true, "[::1]:1": true, "0.0.0.0:1883": false, ":1883": false, "192.168.1.2:1883": false} {
		if got, err := IsLoopback(addr); err != nil || got != want {
			t.Errorf("%s: %v %v", addr, got, err)
		}
	}
	if _, err := IsLoopback("nohost"); err == nil {
		t.Error("nohost accepted")
	}
}

func TestAnonymousNonLoopbackRefused(t *testing.T) {
	_, err := Start(Config{Listen: "0.0.0.0:0", MaxMessageBytes: 1024}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "allow_anonymous") {
		t.Errorf("got %v", err)
	}
}

// denyAll refuses every topic: the hook must not fall back to allowing.
type onlyTopic struct{ allowed string }

func (onlyTopic) Authenticate(string, string, []byte) bool { return true }
func (p onlyTopic) Allow(_, _, topic string, _ bool) bool  { return topic == p.allowed }

func TestPolicyDeniesWhatItDoesNotAllow(t *testing.T) {
	defer goleak.VerifyNone(t)
	b, err := Start(Config{Listen: "127.0.0.1:0", MaxMessageBytes: 1024, Policy: onlyTopic{"ok/topic"}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("t"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	tok := c.SubscribeMultiple(map[string]byte{"ok/topic": 1, "ok/topic/more": 1, "other": 1}, func(paho.Client, paho.Message) {})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	res := tok.(*paho.SubscribeToken).Result()
	if res["ok/topic"] != 1 || res["ok/topic/more"] != 0x80 || res["other"] != 0x80 {
		t.Errorf("subscription results %v: want only the exact allowed topic granted (no prefix match)", res)
	}
}
