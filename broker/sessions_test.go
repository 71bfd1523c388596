package broker

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"
)

const testTopic = "offload/dev/frame"

func startTest(t *testing.T, lim Limits, log *slog.Logger) *Broker {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b, err := Start(Config{Listen: "127.0.0.1:0", MaxMessageBytes: 64 << 10, Sessions: lim}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// inbox collects what a test client receives.
type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (in *inbox) handle(_ paho.Client, m paho.Message) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.msgs = append(in.msgs, m)
}

func (in *inbox) all() []paho.Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

// connect connects a paho client that never reconnects by itself.
func connect(t *testing.T, b *Broker, id string, clean bool, in *inbox) (paho.Client, bool) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false)
	if in != nil {
		opts.SetDefaultPublishHandler(in.handle)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	return c, tok.(*paho.ConnectToken).SessionPresent()
}

func subscribe(t *testing.T, c paho.Client, filter string, in *inbox) {
	t.Helper()
	if tok := c.Subscribe(filter, 1, in.handle); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaveStale connects id with a persistent session subscribed to filter,
// disconnects, and waits until the broker holds the session offline.
func leaveStale(t *testing.T, b *Broker, id, filter string) {
	t.Helper()
	c, _ := connect(t, b, id, false, nil)
	subscribe(t, c, filter, &inbox{})
	c.Disconnect(250)
	waitUntil(t, id+" offline", func() bool { s, ok := b.Session(id); return ok && !s.Online })
}

// publish sends n QoS 1 messages of size bytes on topic, seq 0..n-1 in
// their first 8 bytes.
func publish(t *testing.T, b *Broker, topic string, n, size int) {
	t.Helper()
	c, _ := connect(t, b, fmt.Sprintf("pub-%d", time.Now().UnixNano()), true, nil)
	defer c.Disconnect(100)
	for i := range n {
		p := make([]byte, size)
		binary.BigEndian.PutUint64(p, uint64(i))
		if tok := c.Publish(topic, 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
}

func seqs(ms []paho.Message) []int {
	var out []int
	for _, m := range ms {
		out = append(out, int(binary.BigEndian.Uint64(m.Payload())))
	}
	slices.Sort(out)
	return out
}

// sentinel publishes on sentinel/done and waits until in received it: a
// message queued before it on the same connection has arrived by then.
func sentinel(t *testing.T, b *Broker, c paho.Client, in *inbox) {
	t.Helper()
	subscribe(t, c, "sentinel/done", in)
	publish(t, b, "sentinel/done", 1, 8)
	waitUntil(t, "the sentinel", func() bool {
		return slices.ContainsFunc(in.all(), func(m paho.Message) bool { return m.Topic() == "sentinel/done" })
	})
}

func TestOfflineSessionKeepsNewestWithinCaps(t *testing.T) {
	defer goleak.VerifyNone(t)
	const size = 1000
	one := QueuedSize(testTopic, size)
	for _, tc := range []struct {
		name              string
		lim               Limits
		n, kept           int
		countCap, byteCap int64
	}{
		// 20 messages, at most 7 kept: the 13 oldest go, by count.
		{"count", Limits{MaxMessages: 7, MaxBytes: 1 << 30, MaxBytesTotal: 1 << 30}, 20, 7, 13, 0},
		// 25 messages, 10.5 messages' worth of bytes: 10 kept, 15 go by bytes.
		{"bytes", Limits{MaxMessages: 1000, MaxBytes: 10*one + one/2, MaxBytesTotal: 1 << 30}, 25, 10, 0, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startTest(t, tc.lim, nil)
			leaveStale(t, b, "monitor1", "offload/#")
			publish(t, b, testTopic, tc.n, size)
			// mochi acknowledges a publish before it delivers it: wait
			// until all n reached the session, then count exactly.
			waitUntil(t, "every message at the session", func() bool {
				s, _ := b.Session("monitor1")
				return s.QueuedMessages+int(s.Discarded.Total()) == tc.n
			})
			s, _ := b.Session("monitor1")
			want := Discards{CountCap: tc.countCap, ByteCap: tc.byteCap}
			if s.QueuedMessages != tc.kept || s.QueuedBytes != int64(tc.kept)*one || s.Discarded != want || s.DiscardedBytes != int64(tc.n-tc.kept)*one {
				t.Errorf("session %+v: want %d kept (%d bytes), discarded %+v", s, tc.kept, int64(tc.kept)*one, want)
			}
			st := b.SessionStats()
			if st.OfflineSessions != 1 || st.QueuedMessages != tc.kept || st.QueuedBytes != int64(tc.kept)*one || st.Discarded != want || st.Takeovers != 0 {
				t.Errorf("stats %+v", st)
			}
			if got := b.Info().Inflight; got != int64(tc.kept) {
				t.Errorf("mochi counts %d inflight, want %d", got, tc.kept)
			}
			t.Logf("%d messages of %d bytes to an offline session: %d kept (%d bytes), discarded %+v", tc.n, size, s.QueuedMessages, s.QueuedBytes, s.Discarded)

			// The same figures over MQTT, on the $SYS topic.
			in := &inbox{}
			sys, _ := connect(t, b, "sys", true, nil)
			defer sys.Disconnect(100)
			subscribe(t, sys, SysSessionsTopic, in)
			waitUntil(t, "$SYS stats", func() bool {
				ms := in.all()
				if len(ms) == 0 {
					return false
				}
				var got SessionStats
				return json.Unmarshal(ms[len(ms)-1].Payload(), &got) == nil && got.QueuedMessages == tc.kept &&
					got.Discarded == want && len(got.Largest) == 1 && got.Largest[0].Client == "monitor1" && got.Largest[0].QueuedBytes == int64(tc.kept)*one
			})

			// The subscriber comes back: it gets exactly the newest kept.
			got := &inbox{}
			c, present := connect(t, b, "monitor1", false, got)
			defer c.Disconnect(100)
			if !present {
				t.Fatal("session not present on reconnect")
			}
			sentinel(t, b, c, got)
			var queued []paho.Message
			for _, m := range got.all() {
				if m.Topic() == testTopic {
					queued = append(queued, m)
					if !m.Duplicate() || m.Qos() != 1 {
						t.Errorf("queued message dup=%v qos=%d", m.Duplicate(), m.Qos())
					}
				}
			}
			var wantSeqs []int
			for i := tc.n - tc.kept; i < tc.n; i++ {
				wantSeqs = append(wantSeqs, i)
			}
			if !slices.Equal(seqs(queued), wantSeqs) {
				t.Errorf("reconnected subscriber got seqs %v, want %v", seqs(queued), wantSeqs)
			}
			// mochi alone would count -kept here (it decrements its
			// inflight count twice for a resumed session's messages).
			waitUntil(t, "the resent messages acknowledged", func() bool { return b.Info().Inflight == 0 })
			if st := b.SessionStats(); st.OfflineSessions != 0 || st.QueuedMessages != 0 || st.QueuedBytes != 0 || st.Takeovers != 0 {
				t.Errorf("after reconnect: %+v", st)
			}
		})
	}
}

func TestTotalCapDiscardsOldestOfAnySession(t *testing.T) {
	const size, n = 1000, 20
	one := QueuedSize(testTopic, size)
	b := startTest(t, Limits{MaxMessages: 1000, MaxBytes: 10 * one, MaxBytesTotal: 15 * one}, nil)
	leaveStale(t, b, "monitor1", "offload/#")
	leaveStale(t, b, "monitor2", "offload/dev/#")
	publish(t, b, testTopic, n, size)
	waitUntil(t, "every message at both sessions", func() bool {
		st := b.SessionStats()
		return st.QueuedMessages+int(st.Discarded.Total()) == 2*n
	})
	// 40 copies, 15 fit in total: the newest 15 stay, 8 of one session
	// (12..19) and 7 of the other (13..19, its copy of 12 arrived first).
	// Neither session reaches its own cap of 10.
	st := b.SessionStats()
	s1, _ := b.Session("monitor1")
	s2, _ := b.Session("monitor2")
	per := []int{s1.QueuedMessages, s2.QueuedMessages}
	slices.Sort(per)
	if st.QueuedMessages != 15 || st.QueuedBytes != 15*one || st.Discarded != (Discards{TotalCap: 25}) || !slices.Equal(per, []int{7, 8}) ||
		s1.Discarded.TotalCap+s2.Discarded.TotalCap != 25 {
		t.Errorf("stats %+v, sessions %+v %+v", st, s1, s2)
	}
	t.Logf("%d messages to two offline sessions, 15 fit in total: kept %v, discarded %+v", n, per, st.Discarded)
}

func TestOfflineSessionCapDeletesTheOldest(t *testing.T) {
	b := startTest(t, Limits{MaxOfflineSessions: 2}, nil)
	for _, id := range []string{"s1", "s2", "s3"} {
		leaveStale(t, b, id, "offload/#")
	}
	st := b.SessionStats()
	if _, ok := b.Session("s1"); ok || st.OfflineSessions != 2 || st.SessionsEvicted != 1 || b.Info().Subscriptions != 2 {
		t.Fatalf("after 3 sessions with a cap of 2: %+v, %d subscriptions", st, b.Info().Subscriptions)
	}
	publish(t, b, testTopic, 1, 100)
	waitUntil(t, "the message at s2 and s3", func() bool { return b.SessionStats().QueuedMessages == 2 })
	// s1 starts afresh: no session, no subscription.
	in := &inbox{}
	c, present := connect(t, b, "s1", false, in)
	defer c.Disconnect(100)
	publish(t, b, testTopic, 1, 100)
	sentinel(t, b, c, in)
	if got := in.all(); present || len(got) != 1 {
		t.Errorf("deleted session came back: present %v, got %d messages", present, len(got))
	}
}

func TestExpiredSessionLeavesNothingBehind(t *testing.T) {
	const size = 100
	b := startTest(t, Limits{Expiry: time.Second}, nil)
	leaveStale(t, b, "monitor1", "offload/#")
	publish(t, b, testTopic, 3, size)
	waitUntil(t, "the messages queued", func() bool { return b.SessionStats().QueuedMessages == 3 })
	waitUntil(t, "the session to expire", func() bool { return b.SessionStats().SessionsExpired == 1 })
	st := b.SessionStats()
	if st.Discarded != (Discards{Expired: 3}) || st.DiscardedBytes != 3*QueuedSize(testTopic, size) || st.OfflineSessions != 0 || st.QueuedMessages != 0 ||
		b.Info().Subscriptions != 0 || b.Info().Inflight != 0 {
		t.Fatalf("after expiry: %+v; mochi: %d subscriptions, %d inflight", st, b.Info().Subscriptions, b.Info().Inflight)
	}
	// A new client with the same id inherits nothing: no session, and no
	// message on the old subscription's filter.
	in := &inbox{}
	c, present := connect(t, b, "monitor1", false, in)
	defer c.Disconnect(100)
	publish(t, b, testTopic, 2, size)
	sentinel(t, b, c, in)
	if got := in.all(); present || len(got) != 1 {
		var topics []string
		for _, m := range got {
			topics = append(topics, m.Topic())
		}
		t.Errorf("the new client inherited from the expired session: present %v, got %v", present, topics)
	}
}

func TestTakeoversAreCountedAndLoggedOncePerID(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after the broker closed
	logs := &testutil.Buffer{}
	b := startTest(t, Limits{}, slog.New(slog.NewTextHandler(logs, nil)))
	var clients []paho.Client
	for range 3 {
		c, _ := connect(t, b, "dup", true, nil)
		clients = append(clients, c)
	}
	defer func() {
		for _, c := range clients {
			c.Disconnect(50)
		}
	}()
	waitUntil(t, "two takeovers", func() bool { return b.SessionStats().Takeovers == 2 && logs.Count("taken over") >= 1 })
	// Another id is logged on its own.
	for range 2 {
		c, _ := connect(t, b, "other", true, nil)
		clients = append(clients, c)
	}
	waitUntil(t, "three takeovers", func() bool { return b.SessionStats().Takeovers == 3 && logs.Count("taken over") >= 2 })
	if n := logs.Count("taken over"); n != 2 || logs.Count("client=dup") != 1 || logs.Count("client=other") != 1 {
		t.Errorf("%d takeover lines, want one per client id:\n%s", n, logs.String())
	}
	if st := b.SessionStats(); st.Takeovers != 3 || st.OfflineSessions != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(time.Second)
	l.now = func() time.Time { return now }
	var got []string
	step := func(key string) {
		ok, n := l.allow(key)
		got = append(got, fmt.Sprintf("%s:%v:%d", key, ok, n))
	}
	step("a")
	step("a")
	step("a")
	step("b")
	now = now.Add(time.Second)
	step("a")
	want := []string{"a:true:0", "a:false:0", "a:false:0", "b:true:0", "a:true:2"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// The key set is bounded: past maxLimiterKeys, new keys share one.
	for i := range 2 * maxLimiterKeys {
		l.allow(fmt.Sprint(i))
	}
	if len(l.keys) > maxLimiterKeys+1 {
		t.Errorf("%d keys remembered", len(l.keys))
	}
}

func TestLimitsDefaultsAndErrors(t *testing.T) {
	l, err := Limits{}.withDefaults()
	if err != nil || l != (Limits{DefaultSessionExpiry, DefaultMaxQueuedMessages, DefaultMaxQueuedBytes, DefaultMaxQueuedBytesAll, DefaultMaxOfflineSessions}) {
		t.Errorf("defaults %+v %v", l, err)
	}
	for _, bad := range []Limits{{Expiry: 1500 * time.Millisecond}, {Expiry: -1}, {MaxMessages: 65001}, {MaxBytes: -1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestQuietHandlerLimitsMochisPerMessageWarnings(t *testing.T) {
	logs := &testutil.Buffer{}
	log := slog.New(quietHandler{Handler: slog.NewTextHandler(logs, nil), lim: newLimiter(time.Hour)}).With("component", "broker")
	for range 3 {
		log.Warn("client store quota reached", "client", "c")
		log.Warn("something else")
	}
	if q, o := logs.Count("client store quota reached"), logs.Count("something else"); q != 1 || o != 3 || logs.Count("component=broker") != 4 {
		t.Errorf("%d quota lines (want 1), %d others (want 3):\n%s", q, o, logs.String())
	}
}
