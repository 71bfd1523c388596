// Package mqttc sets up paho MQTT clients the way every splitpoint process
// needs them: handlers off the network loop, subscriptions made in OnConnect
// (so they come back after a reconnect), and every wait bounded.
package mqttc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Timeout bounds every wait on a paho token.
const Timeout = 10 * time.Second

// Will is a last-will message.
type Will struct {
	Topic   string
	Payload string
	Retain  bool
}

// Options configure a client.
type Options struct {
	Broker   string // tcp://host:port
	ClientID string
	Username string
	Password string
	// Clean: a clean session. False keeps subscriptions and queued QoS 1
	// messages across a reconnect.
	Clean bool
	// ManualAck: the handler acknowledges each message with Ack().
	ManualAck bool
	Will      *Will
	// Subscriptions are (re)made on every connect, before OnReady runs.
	Subscriptions map[string]byte
	// Handler receives every message, on its own goroutine.
	Handler paho.MessageHandler
	// OnReady runs after the subscriptions of each connect are acknowledged.
	OnReady func(paho.Client)
	Log     *slog.Logger
}

// ValidateBroker checks a broker URL: tcp://host:port or mqtt://host:port.
func ValidateBroker(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "tcp" && u.Scheme != "mqtt") || u.Port() == "" {
		return fmt.Errorf("%q is not a broker URL (want tcp://host:port)", s)
	}
	return nil
}

// Connect connects, retrying until ctx ends; the client then reconnects by
// itself whenever the connection drops.
func Connect(ctx context.Context, o Options) (paho.Client, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	po := paho.NewClientOptions().
		AddBroker(strings.Replace(o.Broker, "mqtt://", "tcp://", 1)).
		SetClientID(o.ClientID).
		SetCleanSession(o.Clean).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).
		SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(Timeout).
		SetConnectTimeout(Timeout).
		SetAutoAckDisabled(o.ManualAck).
		SetResumeSubs(false)
	if o.Username != "" {
		po.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.Will != nil {
		po.SetWill(o.Will.Topic, o.Will.Payload, 1, o.Will.Retain)
	}
	if o.Handler != nil {
		po.SetDefaultPublishHandler(o.Handler)
	}
	var gate *resumeGate
	if !o.Clean {
		gate = newResumeGate(1) // ConnectRetry is on: Connect lists the store once first
		po.SetStore(gate)
	}
	po.SetOnConnectHandler(func(c paho.Client) {
		// paho runs this on its own goroutine: waiting here is safe.
		if gate != nil {
			gate.wait(Timeout)
		}
		if len(o.Subscriptions) > 0 {
			tok := c.SubscribeMultiple(o.Subscriptions, o.Handler)
			if !tok.WaitTimeout(Timeout) || tok.Error() != nil {
				log.Error("subscribe failed; reconnecting", "filters", keys(o.Subscriptions), "error", tokErr(tok))
				c.Disconnect(0)
				return
			}
			if st, ok := tok.(*paho.SubscribeToken); ok {
				for f, code := range st.Result() {
					if code == 0x80 {
						log.Error("broker refused subscription", "filter", f)
					}
				}
			}
		}
		log.Debug("connected", "broker", o.Broker, "client", o.ClientID)
		if o.OnReady != nil {
			o.OnReady(c)
		}
	})
	po.SetConnectionLostHandler(func(_ paho.Client, err error) {
		log.Warn("connection lost; reconnecting", "broker", o.Broker, "error", err)
	})
	c := paho.NewClient(po)
	tok := c.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("connect to %s: %w", o.Broker, err)
		}
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	return c, nil
}

// Publish publishes and waits, at most Timeout, for the broker's
// acknowledgement (QoS 1) or the write (QoS 0).
func Publish(c paho.Client, topic string, qos byte, retain bool, payload any) error {
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(Timeout) {
		return fmt.Errorf("publish %s: no acknowledgement within %v", topic, Timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

func tokErr(t paho.Token) error {
	if t.Error() != nil {
		return t.Error()
	}
	return errors.New("timed out")
}

func keys(m map[string]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
