package broker

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func startRetainTest(t *testing.T, count int, bytes int64) *Broker {
	t.Helper()
	b, err := Start(Config{Listen: "127.0.0.1:0", MaxMessageBytes: 64 << 10, MaxRetained: count, MaxRetainedBytes: bytes},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func retain(t *testing.T, c paho.Client, topic string, payload []byte) {
	t.Helper()
	if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// retainedTopics subscribes a fresh client to filter, waits for want
// retained messages and a moment more, and returns their topics.
func retainedTopics(t *testing.T, b *Broker, filter string, want int) []string {
	t.Helper()
	var in inbox
	c, _ := connect(t, b, fmt.Sprint("reader-", time.Now().UnixNano()), true, &in)
	defer c.Disconnect(0)
	subscribe(t, c, filter, &in)
	waitUntil(t, fmt.Sprint(want, " retained messages"), func() bool { return len(in.all()) >= want })
	time.Sleep(200 * time.Millisecond) // any beyond want would show now
	var out []string
	for _, m := range in.all() {
		if m.Retained() {
			out = append(out, m.Topic())
		}
	}
	return out
}

// Retained messages on ever new topics cannot grow the broker past its
// bounds: past them a retained publish is delivered but not kept, and
// counted. Replacing or clearing one is always allowed.
func TestRetainedMessagesAreBounded(t *testing.T) {
	b := startRetainTest(t, 3, 1<<20)
	var live inbox
	c, _ := connect(t, b, "writer", true, &live)
	defer c.Disconnect(0)
	subscribe(t, c, "r/#", &live)
	for i := 1; i <= 5; i++ {
		retain(t, c, fmt.Sprint("r/", i), []byte("x"))
	}
	waitUntil(t, "five live deliveries", func() bool { return len(live.all()) == 5 })
	if st := b.RetainedStats(); st.Messages != 3 || st.Refused != 2 || st.Bytes != 3*4 {
		t.Fatalf("stats %+v, want 3 kept (12 bytes: topic and payload) and 2 refused", st)
	}
	if got := retainedTopics(t, b, "r/#", 3); len(got) != 3 {
		t.Fatalf("retained %v, want r/1..r/3", got)
	}
	retain(t, c, "r/1", []byte("replaced")) // replacing: allowed
	retain(t, c, "r/2", nil)                // clearing: allowed, frees a place
	retain(t, c, "r/4", []byte("y"))        // now fits
	if st := b.RetainedStats(); st.Messages != 3 || st.Refused != 2 || st.Bytes != 3+8+3+1+3+1 {
		t.Fatalf("after replace, clear and one more: %+v, want 3 kept (19 bytes), 2 refused", st)
	}
	// Topics starting with $ other than the broker's own are counted too.
	retain(t, c, "$x/1", []byte("z"))
	if st := b.RetainedStats(); st.Messages != 3 || st.Refused != 3 {
		t.Fatalf("a $-topic escaped the bound: %+v", st)
	}
	// The byte bound.
	bb := startRetainTest(t, 100, 2*1005+500)
	cb, _ := connect(t, bb, "writer", true, nil)
	defer cb.Disconnect(0)
	for i := 1; i <= 3; i++ {
		retain(t, cb, fmt.Sprint("big/", i), make([]byte, 1000))
	}
	if st := bb.RetainedStats(); st.Messages != 2 || st.Bytes != 2*1005 || st.Refused != 1 {
		t.Fatalf("byte bound: %+v, want 2 kept (2010 bytes), 1 refused", st)
	}
}
