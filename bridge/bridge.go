// Package bridge connects a gateway's embedded broker to an upstream MQTT
// broker in the cloud (mosquitto, EMQX, HiveMQ, VerneMQ): the gateway dials
// out, so nothing needs to reach it through a home or factory router.
//
// Topics (see wire.BridgeUpFilters and wire.BridgeDownFilters, disjoint so
// that nothing loops — MQTT 3.1.1 has no "no local"):
//   - up: every stage state offload/<d>/<stage> (QoS 1) and the devices'
//     status, state (QoS 1, retained kept) and telemetry (QoS 0), published
//     upstream under the site's remote prefix (default sites/<site>/);
//   - down: <prefix>offload/<d>/result and …/annotated (the prefix is
//     stripped), and every cloudproc's offload/_cloud/<id>/status and
//     …/telemetry (one pool serves every site), republished on the local
//     broker by the gateway's inline client, so devices, Home Assistant and
//     mosquitto_sub on the LAN see exactly the LAN topics.
//
// Delivery: the upstream session is persistent (clean session false), so
// results published during a short outage are kept for it. QoS 1 messages
// go straight up while the link is connected, nothing is waiting in the
// spool and fewer than MaxInflight are unacknowledged; otherwise they are
// appended to the disk spool (bbolt), which a forwarder drains in order
// with at most MaxInflight in flight. Nothing is published while the link
// is down. QoS 0 telemetry is dropped while the link is down (counted).
// While the link is down every cloudproc is announced offline on the local
// broker; the upstream's retained statuses announce them again when it
// returns.
//
// The bridge also measures the link (Link): round-trip time, capacity from
// the PUBACK timing of large publishes while the link is busy and from
// probes when the states are small, and the backlog (spool and in flight).
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/splitpoint/splitpoint/internal/tick"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/wire"
)

// Defaults.
const (
	DefaultMaxInflight   = 64
	DefaultProbeInterval = 10 * time.Second
	DefaultProbeBytes    = 256 << 10
	// maxClouds bounds the cloudproc ids the bridge remembers (to announce
	// them offline when the link drops).
	maxClouds = 1024
	// statusEvery is how often offload/_bridge/status is refreshed.
	statusEvery = 2 * time.Second
)

// Config configures a bridge.
type Config struct {
	// URL of the upstream broker: tcp://host:port or ssl://host:port.
	URL string
	// ClientID of the upstream session (persistent).
	ClientID string
	// Credentials: username, password_file, ca_file, cert_file, key_file.
	mqttc.Credentials
	// Site is this gateway's name; RemotePrefix the upstream prefix of its
	// topics (wire.SitePrefix(site) when empty).
	Site, RemotePrefix string
	// SpoolDir holds the spool file; SpoolMaxBytes bounds it.
	SpoolDir      string
	SpoolMaxBytes int64
	// Keepalive of the upstream connection; MaxReconnect caps the
	// reconnect backoff.
	Keepalive, MaxReconnect time.Duration
	// MaxInflight bounds the QoS 1 publishes awaiting their PUBACK.
	MaxInflight int
	// ProbeInterval and ProbeBytes: a probe of ProbeBytes is sent when no
	// large publish measured the link for ProbeInterval (0: no probes).
	ProbeInterval time.Duration
	ProbeBytes    int
	// Stages are the stage names whose states go up.
	Stages []string
}

// Stats are the bridge's counters and state.
type Stats struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// CloudsOnline counts the cloudprocs online upstream: QoS 1 messages
	// go up only while there is one (else they wait in the spool).
	CloudsOnline int `json:"clouds_online"`
	// Forwarded counts QoS 1 messages published upstream, Acknowledged
	// those the upstream acknowledged; Inflight is their difference now.
	Forwarded    int64 `json:"forwarded"`
	Acknowledged int64 `json:"acknowledged"`
	Inflight     int64 `json:"inflight"`
	// Spooled counts messages appended to the spool.
	Spooled int64 `json:"spooled"`
	// Down counts messages brought down to the local broker.
	Down int64 `json:"down"`
	// TelemetryDropped counts QoS 0 messages dropped while the link was
	// down.
	TelemetryDropped int64      `json:"telemetry_dropped"`
	Spool            SpoolStats `json:"spool"`
	Link             Link       `json:"link"`
}

// Bridge is a running bridge.
type Bridge struct {
	cfg    Config
	prefix string
	srv    *mqtt.Server
	spool  *Spool
	log    *slog.Logger
	link   *linkEstimator

	mu        sync.Mutex
	client    *mqttc.Client
	connected bool
	since     time.Time
	lastErr   string
	// clouds are the cloudproc ids seen upstream (at most maxClouds) and
	// whether each is online: states go up only while one is (an upstream
	// broker discards a message no one subscribes to — after a restart
	// without persistence, until the cloudprocs are back).
	clouds map[string]bool
	wake   chan struct{} // the forwarder's nudge (capacity 1)

	inflight, forwarded, acked, spooled, down, teleDropped atomic.Int64
	// resend: a new upstream client (whose store holds nothing of the old
	// one's) must get every spooled message again.
	resend atomic.Bool

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// Start opens the spool, subscribes to the local up-topics and starts
// dialling the upstream broker (in the background: the gateway serves its
// LAN while the upstream is unreachable, spooling).
func Start(ctx context.Context, cfg Config, srv *mqtt.Server, log *slog.Logger) (*Bridge, error) {
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.RemotePrefix == "" {
		cfg.RemotePrefix = wire.SitePrefix(cfg.Site)
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "splitpoint-bridge-" + cfg.Site
	}
	password, tlsConfig, warnings, err := cfg.Credentials.Load(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	for _, w := range warnings {
		log.Warn("bridge: " + w)
	}
	sp, err := OpenSpool(cfg.SpoolDir, cfg.SpoolMaxBytes)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	b := &Bridge{cfg: cfg, prefix: cfg.RemotePrefix, srv: srv, spool: sp, log: log.With("component", "bridge"),
		link: newLinkEstimator(), clouds: map[string]bool{}, wake: make(chan struct{}, 1), cancel: cancel}
	for i, f := range wire.BridgeUpFilters(cfg.Stages) {
		if err := srv.Subscribe(f, 100+i, b.onLocal); err != nil {
			cancel()
			_ = sp.Close()
			return nil, fmt.Errorf("bridge: subscribe %s: %w", f, err)
		}
	}
	opts := mqttc.Options{
		Broker: cfg.URL, ClientID: cfg.ClientID, Username: cfg.Username, Password: password, TLS: tlsConfig,
		Clean: false, ManualAck: true, Subscriptions: map[string]byte{},
		Handler: b.onUpstream, OnReady: b.onReady, OnLost: b.onLost,
		TakeoverLimit: -1, Log: b.log,
	}
	for _, f := range wire.BridgeDownFilters(b.prefix) {
		opts.Subscriptions[f] = 1
	}
	b.wg.Add(4)
	go func() { defer b.wg.Done(); b.dial(ctx, opts) }()
	go func() { defer b.wg.Done(); b.forward(ctx) }()
	go func() { defer b.wg.Done(); b.probe(ctx) }()
	go func() { defer b.wg.Done(); b.statusLoop(ctx) }()
	return b, nil
}

// dial connects to the upstream, retrying (a refused login is retried
// every 30 s: the upstream's ACL may be fixed while the gateway runs).
func (b *Bridge) dial(ctx context.Context, opts mqttc.Options) {
	for {
		b.resend.Store(true)
		c, err := mqttc.Connect(ctx, opts)
		if err == nil {
			b.mu.Lock()
			b.client = c
			b.mu.Unlock()
			select {
			case <-ctx.Done():
				c.Close(250)
				return
			case <-c.Done():
				err = c.Err()
			}
		}
		if ctx.Err() != nil {
			return
		}
		b.setError(err)
		b.log.Error("upstream connection failed; retrying in 30s", "url", b.cfg.URL, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(30 * time.Second):
		}
	}
}

func (b *Bridge) setError(err error) {
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

// onReady: the upstream connection is up and its subscriptions are
// acknowledged (mqttc calls it on every connect).
func (b *Bridge) onReady(paho.Client) {
	b.mu.Lock()
	b.connected, b.since = true, time.Now()
	b.mu.Unlock()
	b.log.Info("upstream connected", "url", b.cfg.URL, "prefix", b.prefix, "spooled", b.spool.Stats().Messages)
	b.nudge()
	b.publishStatus()
}

// onLost: the link dropped. Devices must see that no cloud is reachable:
// every cloudproc is announced offline locally until the upstream says
// otherwise.
func (b *Bridge) onLost(err error) {
	b.mu.Lock()
	b.connected, b.since = false, time.Now()
	if err != nil {
		b.lastErr = err.Error()
	}
	ids := make([]string, 0, len(b.clouds))
	for id := range b.clouds {
		ids = append(ids, id)
		b.clouds[id] = false // unknown until the upstream says again
	}
	b.mu.Unlock()
	for _, id := range ids {
		_ = b.srv.Publish(wire.CloudStatusTopic(id), []byte(wire.Offline), true, 1)
	}
	b.publishStatus()
}

// cloudOnline reports whether a cloudproc upstream is online.
func (b *Bridge) cloudOnline() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cloudsOnline() > 0
}

// cloudsOnline counts the cloudprocs online upstream; b.mu is held.
func (b *Bridge) cloudsOnline() int {
	n := 0
	for _, on := range b.clouds {
		if on {
			n++
		}
	}
	return n
}

func (b *Bridge) isConnected() (*mqttc.Client, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.client, b.connected && b.client != nil
}

func (b *Bridge) nudge() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// onLocal takes a message of an up-topic from the local broker (on its
// publisher's goroutine).
func (b *Bridge) onLocal(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	topic, payload, retain := pk.TopicName, pk.Payload, pk.FixedHeader.Retain
	if _, leaf, err := wire.ParseDeviceTopic(topic); err == nil && (leaf == "status" || leaf == "state") {
		retain = true // retained topics stay retained upstream, however mochi delivered them
	}
	c, up := b.isConnected()
	if pk.FixedHeader.Qos == 0 {
		if !up {
			b.teleDropped.Add(1)
			return
		}
		c.Publish(b.prefix+topic, 0, retain, payload)
		return
	}
	if up && b.spool.Stats().Messages == 0 && b.inflight.Load() < int64(b.cfg.MaxInflight) && b.cloudOnline() {
		b.send(c, 0, b.prefix+topic, payload, retain)
		return
	}
	if _, err := b.spool.Append(topic, payload, 1, retain); err != nil {
		b.log.Warn("cannot spool a message; it is lost (the device resends frames)", "topic", topic, "error", err)
		return
	}
	b.spooled.Add(1)
	b.nudge()
}

// send publishes one QoS 1 message upstream and settles it when the PUBACK
// comes: a spooled one (seq > 0) is deleted from the spool then.
func (b *Bridge) send(c *mqttc.Client, seq uint64, topic string, payload []byte, retain bool) {
	b.inflight.Add(1)
	b.forwarded.Add(1)
	busy := b.inflight.Load() > 1
	start := time.Now()
	tok := c.Publish(topic, 1, retain, payload)
	go func() {
		<-tok.Done() // paho keeps an unacknowledged message across reconnects (persistent session)
		if tok.Error() == nil {
			b.link.observe(len(payload), time.Since(start), busy, time.Now())
			b.acked.Add(1)
			if seq > 0 {
				if err := b.spool.Delete(seq); err != nil {
					b.log.Warn("cannot delete an acknowledged message from the spool", "error", err)
				}
			}
		} else {
			b.log.Warn("upstream publish failed", "topic", topic, "error", tok.Error())
		}
		b.inflight.Add(-1)
		b.nudge()
	}()
}

// forward drains the spool in order while the link is up, with at most
// MaxInflight unacknowledged.
func (b *Bridge) forward(ctx context.Context) {
	var sentUpTo uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-b.spool.Wait():
		case <-time.After(time.Second):
		}
		c, up := b.isConnected()
		if !up || !b.cloudOnline() {
			continue
		}
		if b.resend.Swap(false) {
			sentUpTo = 0
		}
		for free := int64(b.cfg.MaxInflight) - b.inflight.Load(); free > 0; free = int64(b.cfg.MaxInflight) - b.inflight.Load() {
			msgs, err := b.spool.Peek(sentUpTo, int(free), 16<<20)
			if err != nil {
				b.log.Warn("spool read failed", "error", err)
				break
			}
			if len(msgs) == 0 {
				break
			}
			for _, m := range msgs {
				b.send(c, m.Seq, b.prefix+m.Topic, m.Payload, m.Retain)
				sentUpTo = m.Seq
			}
			if _, up := b.isConnected(); !up {
				break
			}
		}
	}
}

// onUpstream brings a message down to the local broker and acknowledges
// it upstream once the local broker has it.
func (b *Bridge) onUpstream(_ paho.Client, m paho.Message) {
	defer m.Ack()
	topic := m.Topic()
	local, ok := strings.CutPrefix(topic, b.prefix)
	retain := m.Retained()
	if id, err := wire.ParseCloudStatusTopic(topic); err == nil {
		// Retained on the LAN whatever the delivery: MQTT clears the retain
		// flag of a live message, and a device that connects later must
		// still learn the status.
		local, ok, retain = topic, true, true
		online := string(m.Payload()) == wire.Online
		b.mu.Lock()
		if _, known := b.clouds[id]; known || len(b.clouds) < maxClouds {
			b.clouds[id] = online
		}
		b.mu.Unlock()
		if online {
			b.nudge() // the spool may drain now
		}
	} else if _, err := wire.ParseCloudTelemetryTopic(topic); err == nil {
		local, ok = topic, true
	}
	if !ok {
		return // not ours (the subscriptions make this impossible)
	}
	if err := b.srv.Publish(local, m.Payload(), retain, m.Qos()); err != nil {
		b.log.Warn("cannot publish locally", "topic", local, "error", err)
		return
	}
	b.down.Add(1)
}

// probe sends ProbeBytes upstream when no large publish measured the link
// for ProbeInterval, so that the capacity stays known at splits whose
// states are small.
func (b *Bridge) probe(ctx context.Context) {
	if b.cfg.ProbeInterval <= 0 || b.cfg.ProbeBytes <= 0 {
		return
	}
	payload := make([]byte, b.cfg.ProbeBytes)
	tick.Every(ctx, b.cfg.ProbeInterval/2, func(now time.Time) bool {
		c, up := b.isConnected()
		if up && b.link.capacityAge(now) >= b.cfg.ProbeInterval && b.inflight.Load() < int64(b.cfg.MaxInflight) {
			b.send(c, 0, wire.BridgeProbeTopic(b.prefix), payload, false)
		}
		return true
	})
}

func (b *Bridge) statusLoop(ctx context.Context) {
	tick.Every(ctx, statusEvery, func(time.Time) bool { b.publishStatus(); return true })
}

// publishStatus publishes the Stats, retained, on wire.BridgeStatusTopic.
func (b *Bridge) publishStatus() {
	p, err := json.Marshal(b.Stats())
	if err == nil {
		_ = b.srv.Publish(wire.BridgeStatusTopic, p, true, 1)
	}
}

// Stats returns the bridge's state and counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	st := Stats{Connected: b.connected && b.client != nil, Since: b.since, LastError: b.lastErr, CloudsOnline: b.cloudsOnline()}
	b.mu.Unlock()
	st.Forwarded, st.Acknowledged, st.Inflight = b.forwarded.Load(), b.acked.Load(), b.inflight.Load()
	st.Spooled, st.Down, st.TelemetryDropped = b.spooled.Load(), b.down.Load(), b.teleDropped.Load()
	st.Spool = b.spool.Stats()
	st.Link = b.link.snapshot(time.Now())
	st.Link.BacklogBytes = st.Spool.Bytes
	return st
}

// Close stops the bridge: the upstream session is closed cleanly (kept by
// the upstream broker), the spool closed with what it holds.
func (b *Bridge) Close() error {
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	c := b.client
	b.mu.Unlock()
	if c != nil {
		c.Close(250)
	}
	return errors.Join(b.spool.Close())
}
