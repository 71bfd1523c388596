package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fxamacker/cbor/v2"
	"github.com/splitpoint/splitpoint/wire"
)

// sysWatch follows the broker's $SYS counters.
type sysWatch struct {
	mu          sync.Mutex
	maxInflight int64
	dropped     int64
	samples     int
}

func watchSys(t *testing.T, broker string) *sysWatch {
	t.Helper()
	w := &sysWatch{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-sys").SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	tok := c.SubscribeMultiple(map[string]byte{"$SYS/broker/messages/inflight": 0, "$SYS/broker/messages/dropped": 0}, func(_ paho.Client, m paho.Message) {
		v, err := strconv.ParseInt(string(m.Payload()), 10, 64)
		if err != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if strings.HasSuffix(m.Topic(), "inflight") {
			w.samples++
			w.maxInflight = max(w.maxInflight, v)
		} else {
			w.dropped = v
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return w
}

func TestOverloadLosesNothingAndBoundsTheBrokerQueue(t *testing.T) {
	broker, _ := startGateway(t)
	sys := watchSys(t, broker)
	cloud := startCloud(t, broker, "slow", "--slowdown", "40")
	col := newCollector(t, broker)
	const frames = 2000
	start := time.Now()
	sum := runDevice(t, broker, "--id", "flood", "--source", "synthetic:?fps=0", "--frames", fmt.Sprint(frames), "--split", "2")
	t.Logf("%d frames through a cloud emulated 40× slower in %v: %+v", frames, time.Since(start).Round(time.Millisecond), sum)
	if sum.captured != frames || sum.results != frames || sum.drops != 0 || sum.duplicates != 0 {
		t.Fatalf("summary %+v", sum)
	}
	waitFor(t, 60*time.Second, "every result at the collector", func() bool { return col.count(sum.run) >= frames })
	exactlyOnce(t, col.run(t, sum.run), "flood", frames)
	time.Sleep(1500 * time.Millisecond) // one more $SYS period
	sys.mu.Lock()
	defer sys.mu.Unlock()
	t.Logf("broker: max inflight %d over %d samples, dropped %d", sys.maxInflight, sys.samples, sys.dropped)
	// The device's window (8) bounds what is in flight: stage messages to
	// cloudproc plus results to the device and to the collector.
	if sys.samples < 2 || sys.maxInflight > 3*8+8 {
		t.Errorf("broker inflight peaked at %d (%d samples); the window of 8 should bound it", sys.maxInflight, sys.samples)
	}
	if sys.dropped != 0 {
		t.Errorf("broker dropped %d messages", sys.dropped)
	}
	if strings.Contains(cloud.stderr.String(), "overload") {
		t.Error("cloudproc shed frames although the device's window bounds them")
	}
}

// envelope returns a small valid state for the given topic's stage.
func envelope(t *testing.T, mutate func(*wire.Envelope)) []byte {
	t.Helper()
	e := &wire.Envelope{Version: wire.Version, Pipeline: "balltrack", Device: "evil", Run: "r", Seq: 1, Split: 4, Next: "circle",
		Fields: map[string]wire.Field{"width": {Kind: wire.KindNumber, Num: 500}, "height": {Kind: wire.KindNumber, Num: 375}}}
	mutate(e)
	b, err := cbor.Marshal(e) // not wire.Encode: some of these are invalid on purpose
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadInputIsCountedAndHarmsNoOtherDevice(t *testing.T) {
	broker, gw := startGateway(t)
	cloud := startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	col.tolerateBad = 1 // the garbage this test sends to the result topic
	const frames = 300
	good := start(t, "device", "--broker", broker, "--id", "good", "--source", "synthetic:?fps=150", "--frames", fmt.Sprint(frames), "--split", "3")
	waitFor(t, 60*time.Second, "the good device streaming", func() bool { return strings.Contains(good.stderr.String(), "device started") })

	bad := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-bad"))
	if tok := bad.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer bad.Disconnect(100)
	pub := func(topic string, payload []byte) {
		if tok := bad.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	for i := 0; i < 3; i++ { // repeated: logged once, counted each time
		pub("offload/evil/hsv", []byte("this is not CBOR"))
		pub("offload/evil/circle", envelope(t, func(e *wire.Envelope) { e.Next = "mask" }))
		pub("offload/evil/circle", envelope(t, func(e *wire.Envelope) { e.Pipeline = "nosuch" }))
		pub("offload/evil/circle", envelope(t, func(e *wire.Envelope) { e.Device = "good" }))
		pub("offload/evil/circle", envelope(t, func(e *wire.Envelope) { e.Version = 99 }))
	}
	pub("offload/evil/sink", make([]byte, wire.DefaultMaxMessageBytes+1000))
	pub("offload/evil/contours", envelope(t, func(e *wire.Envelope) {
		e.Fields["mask"] = wire.Field{Kind: wire.KindArray, Array: &wire.Array{DType: "uint8", Shape: []int{1, 4}, Codec: "png", Data: []byte("fake png")}}
		e.Next = "contours"
		e.Split = 3
	}))
	pub(wire.ResultTopic("good"), []byte("{garbage"))
	pub(wire.ResultTopic("good"), []byte(`{"device":"good","run":"other","seq":0,"split":1}`))
	pub("offload/good/control/split/set", []byte("\x00\xff garbage"))
	pub(wire.CloudStatusTopic("ghost"), []byte("maybe"))
	for i := 0; i < 3; i++ { // garbage for the gateway: logged once per kind and device
		pub(wire.TelemetryTopic("evil"), []byte("{not json"))
		pub(wire.StateTopic("evil"), []byte(`{"split":99}`))
		pub(wire.CloudTelemetryTopic("ghost"), []byte("[]"))
	}

	if code := good.wait(t, 10*time.Minute); code != 0 {
		t.Fatalf("good device exited %d", code)
	}
	sum := parseSummary(t, good.stdout.String())
	if sum.results != frames || sum.drops != 0 || sum.badResults != 2 {
		t.Errorf("good device: %+v (want every result, no drop, 2 bad results counted)", sum)
	}
	waitFor(t, 30*time.Second, "the good device's results", func() bool { return col.count(sum.run) >= frames })
	exactlyOnce(t, col.run(t, sum.run), "good", frames)

	gwLogs := gw.stderr.String()
	for _, kind := range []string{"kind=state", "kind=cloud_telemetry"} {
		if n := strings.Count(gwLogs, kind); n != 1 {
			t.Errorf("gateway logged %s %d times, want once:\n%s", kind, n, tail(gwLogs))
		}
	}
	if !strings.Contains(gwLogs, `command refused`) {
		t.Error("gateway did not refuse the garbage split command")
	}

	cloud.stop(t)
	logs := cloud.stderr.String()
	for reason, want := range map[string]int{"bad_state": 1, "unknown_stage": 1, "unknown_pipeline": 1, "wrong_device": 1, "too_large": 1} {
		n := strings.Count(logs, "reason="+reason)
		if n != want {
			t.Errorf("cloudproc logged reason=%s %d times, want %d (once per device and reason)", reason, n, want)
		}
	}
	// bad_state: 3 garbage + 3 wrong version + 1 fake PNG; the others 3 each.
	for _, c := range []string{"bad_state=7", "unknown_stage=3", "unknown_pipeline=3", "wrong_device=3", "too_large=1"} {
		if !strings.Contains(logs, c) {
			t.Errorf("cloudproc's counters lack %s:\n%s", c, tail(logs))
		}
	}
	if strings.Contains(logs, "panic") {
		t.Error("cloudproc panicked")
	}
}

func TestCloudprocCrashLosesNothing(t *testing.T) {
	broker, _ := startGateway(t)
	a := startCloud(t, broker, "doomed", "--slowdown", "200")
	col := newCollector(t, broker)
	cfg := filepath.Join(t.TempDir(), "pi.toml")
	// A cloudproc 200× slower holds frames in its queue for many seconds:
	// resent every second, they must not be given up (max_resends = 0).
	if err := os.WriteFile(cfg, []byte("resend_after = \"1s\"\nmax_resends = 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const frames = 60
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "crashy", "--source", "synthetic:?fps=0", "--frames", fmt.Sprint(frames), "--split", "2")
	waitFor(t, 120*time.Second, "some results before the crash", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.res) >= 5
	})
	if err := a.cmd.Process.Kill(); err != nil { // SIGKILL: no goodbye, frames in its queue are lost
		t.Fatal(err)
	}
	<-a.done
	startCloud(t, broker, "rescue")
	if code := dev.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("device exited %d", code)
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.results != frames || sum.drops != 0 || sum.resent == 0 {
		t.Errorf("%+v: want every result, no drop, and resends of the frames the crash lost", sum)
	}
	waitFor(t, 30*time.Second, "results", func() bool { return col.count(sum.run) >= frames })
	// A resend may cross its result: a frame's result can be delivered
	// twice (identical), but the device counts it once (above).
	everyFrameCounted(t, col.run(t, sum.run), "crashy", frames)
}
