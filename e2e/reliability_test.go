package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/wire"
)

// everyFrameCounted checks the account of a device that may have resent
// frames: the collector saw a result for each seq 0..n-1, every copy of a
// seq's result is byte-for-byte the same (a replay, never a second
// computation that differs), and it returns one result per seq.
func everyFrameCounted(t *testing.T, res []result, device string, n int) []result {
	t.Helper()
	first := map[uint64]result{}
	var uniq []result
	for _, r := range res {
		if prev, ok := first[r.Seq]; ok {
			if prev.raw != r.raw {
				t.Errorf("%s seq %d: two different results:\n%s\n%s", device, r.Seq, prev.raw, r.raw)
			}
			continue
		}
		first[r.Seq] = r
		uniq = append(uniq, r)
	}
	return exactlyOnce(t, uniq, device, n)
}

// Two live devices with one --id: each connection kicks the other off the
// broker. The one that was connected first gives up with a clear message
// and a non-zero exit, its frames in flight counted as dropped
// (disconnected); the newer one finishes its run with every frame answered
// — including the frames whose results the older one received while it
// held the session: the cloudproc answers their resends with the same
// result again instead of staying silent.
func TestSameDeviceIDTwiceOlderExitsNewerFinishes(t *testing.T) {
	broker, gw := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	w := watch(t, broker)
	cfg := writeFile(t, "pi.toml", "takeover_limit = 3\nresend_after = \"2s\"\ndrain_timeout = \"20s\"\n")
	older := start(t, "device", "-c", cfg, "--broker", broker, "--id", "twin", "--source", "synthetic:?fps=30", "--split", "2")
	runOf(t, w, "twin")
	const frames = 90
	newer := start(t, "device", "-c", cfg, "--broker", broker, "--id", "twin", "--source", "synthetic:?fps=30", "--frames", fmt.Sprint(frames), "--split", "2")

	if code := older.wait(t, 2*time.Minute); code == 0 {
		t.Fatal("the older device exited 0")
	}
	if msg := "another client may be using client id splitpoint-device-twin"; !strings.Contains(older.stderr.String(), msg) {
		t.Errorf("the older device's log does not say %q", msg)
	}
	olderSum := parseSummary(t, older.stdout.String())
	if olderSum.captured != olderSum.results+olderSum.drops {
		t.Errorf("older device's account: %+v", olderSum)
	}
	if code := newer.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("the newer device exited %d:\n%s", code, tail(newer.stderr.String()))
	}
	sum := parseSummary(t, newer.stdout.String())
	t.Logf("older: %+v\nnewer: %+v", olderSum, sum)
	if sum.captured != frames || sum.results != frames || sum.drops != 0 {
		t.Fatalf("newer device: %+v, want %d results and no drop", sum, frames)
	}
	waitFor(t, 30*time.Second, "results", func() bool { return col.count(sum.run) >= frames })
	everyFrameCounted(t, col.run(t, sum.run), "twin", frames)
	if !strings.Contains(gw.stderr.String(), "taken over") && !strings.Contains(gw.stderr.String(), "takeover") {
		t.Errorf("the gateway logged no takeover")
	}
}

// A cloudproc that receives a frame it has answered publishes the same
// result again: a device whose result was lost gets it on its resend. A
// frame the cloud cannot process is answered too, with a result that says
// why, so that the device stops resending it.
func TestResentFrameGetsTheSameResultAgain(t *testing.T) {
	broker, _ := startGateway(t)
	cloud := startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-resender"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	send := func(topic string, state []byte, run string, n int) {
		t.Helper()
		if tok := pub.Publish(topic, 1, false, state); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("result copy %d of %s", n, run), func() bool { return col.count(run) >= n })
	}
	good := envelope(t, func(e *wire.Envelope) {
		e.Device, e.Run, e.Seq, e.Next, e.FilteredAt = "lost", "run1", 7, "sink", "circle"
	})
	// No contours: the circle stage fails on this one.
	bad := envelope(t, func(e *wire.Envelope) { e.Device, e.Run, e.Seq = "lost", "run2", 3 })
	for i := 1; i <= 3; i++ {
		send(wire.StageTopic("lost", "sink"), good, "run1", i)
	}
	for i := 1; i <= 2; i++ {
		send(wire.StageTopic("lost", "circle"), bad, "run2", i)
	}
	// A state this build cannot read (a newer version) is answered too,
	// from its head.
	newer := envelope(t, func(e *wire.Envelope) { e.Device, e.Run, e.Seq, e.Version = "lost", "run3", 1, 99 })
	send(wire.StageTopic("lost", "circle"), newer, "run3", 1)
	if res := col.run(t, "run3"); len(res) != 1 || res[0].Seq != 1 || !strings.Contains(res[0].raw, `"error":"bad_state: `) {
		t.Errorf("run3: %d results, want one error result for seq 1: %v", len(res), res)
	}
	for _, run := range []string{"run1", "run2"} {
		res := col.run(t, run)
		for _, r := range res {
			if r.raw != res[0].raw {
				t.Errorf("%s: copy %s differs from the first %s", run, r.raw, res[0].raw)
			}
		}
	}
	if res := col.run(t, "run1"); len(res) != 3 || res[0].Seq != 7 || strings.Contains(res[0].raw, `"error"`) {
		t.Errorf("run1: %d results, first %s; want 3 copies of seq 7's result", len(res), res[0].raw)
	}
	if res := col.run(t, "run2"); len(res) != 2 || res[0].Seq != 3 || !strings.Contains(res[0].raw, `"error":"stage_error: `) {
		t.Errorf("run2: %d results, first %s; want 2 copies of an error result for seq 3", len(res), res[0].raw)
	}
	cloud.stop(t)
	want := "results=1 duplicates=3 replayed=3 rejected=[bad_state=1 stage_error=1]"
	if !strings.Contains(cloud.stderr.String(), want) {
		t.Errorf("cloudproc's counters: want %s in\n%s", want, tail(cloud.stderr.String()))
	}
}

// decisionWith waits for a decision of device whose reason contains want.
func decisionWith(t *testing.T, w *watcher, want string) wire.Decision {
	t.Helper()
	var found wire.Decision
	waitFor(t, 30*time.Second, "a decision saying "+want, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, d := range w.decisions {
			if strings.Contains(d.Reason, want) {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

// The retained decision is the source of truth, so the gateway keeps it
// true: a cleared decision, a decision overwritten by another client and a
// device moved by a decision that is not the gateway's are each repaired
// within a control period or two, and the device ends up where the gateway
// decided.
func TestGatewayRepairsTheRetainedControlState(t *testing.T) {
	broker, gw := startGateway(t)
	startCloud(t, broker, "c1")
	w := watch(t, broker)
	dev := start(t, "device", "--broker", broker, "--id", "fix", "--source", "synthetic:?fps=20", "--split", "2")
	run := runOf(t, w, "fix")
	atSplit := func(k int, what string) {
		t.Helper()
		waitFor(t, 30*time.Second, what, func() bool { s, _ := w.lastState(run); return s.Split == k })
	}
	atSplit(2, "state echo of split 2")
	topic := wire.ControlSplitTopic("fix")

	// 1. Cleared: the gateway republishes; the device keeps its split
	// meanwhile and does not call the empty message malformed.
	mosq(t, broker, "mosquitto_pub", "-t", topic, "-r", "-n")
	if d := decisionWith(t, w, "cleared"); d.Split != 2 || d.Mode != wire.ModeManual {
		t.Errorf("restored decision %+v", d)
	}
	if strings.Contains(dev.stderr.String(), "malformed split decision") {
		t.Error("the device took the cleared decision for a malformed one")
	}

	// 2. Overwritten, retained, by another client: the device follows the
	// forgery at first, then the gateway's repair brings it back.
	forged := `{"split":1,"mode":"manual","target_fps":15,"reason":"forged","gateway_run":"forger","epoch":1,"ts":"2026-01-01T00:00:00Z"}`
	mosq(t, broker, "mosquitto_pub", "-t", topic, "-r", "-m", forged)
	decisionWith(t, w, "overwritten by another client")
	atSplit(2, "the device back at split 2 after the forged retained decision")

	// 3. A decision that is not retained moves the device; the retained one
	// is still the gateway's, but the device's state disagrees with it.
	mosq(t, broker, "mosquitto_pub", "-t", topic, "-m", strings.Replace(forged, `"split":1`, `"split":4`, 1))
	atSplit(4, "the device following the forged live decision")
	decisionWith(t, w, "the device reports split 4")
	atSplit(2, "the device back at split 2 after the forged live decision")

	// 4. A forgery that claims the gateway's own run with the largest
	// epoch: the gateway cannot outbid it, so it moves the device to a new
	// run id, which the device takes whatever the epoch.
	ours := w.lastDecision().GatewayRun
	maxEpoch := strings.Replace(strings.Replace(forged, `"gateway_run":"forger","epoch":1`,
		`"gateway_run":"`+ours+`","epoch":18446744073709551615`, 1), `"split":1`, `"split":5`, 1)
	mosq(t, broker, "mosquitto_pub", "-t", topic, "-r", "-m", maxEpoch)
	atSplit(5, "the device following the forged decision with the largest epoch")
	atSplit(2, "the device back at split 2 after the largest-epoch forgery")
	if d := w.lastDecision(); d.GatewayRun == ours || d.Split != 2 {
		t.Errorf("repair of the largest-epoch forgery: %+v, want split 2 under a new run id", d)
	}

	// Each repair is logged with what was found.
	if n := strings.Count(gw.stderr.String(), "control state inconsistent"); n < 4 {
		t.Errorf("the gateway logged %d repairs, want at least 4", n)
	}
	// The retained decision is the gateway's again.
	got := mosq(t, broker, "mosquitto_sub", "-t", topic, "-C", "1", "-W", "5")
	if d, err := wire.ParseDecision([]byte(strings.TrimSpace(got))); err != nil || d.Split != 2 {
		t.Errorf("retained decision %q: %v", got, err)
	}
}

// A --frames run whose results cannot come any more (its only cloudproc
// was killed) ends after drain_timeout with its summary and a non-zero
// exit, every frame accounted for, instead of waiting forever.
func TestFramesRunEndsWhenNoResultCanCome(t *testing.T) {
	broker, _ := startGateway(t)
	cloud := startCloud(t, broker, "doomed", "--slowdown", "50")
	col := newCollector(t, broker)
	cfg := writeFile(t, "pi.toml", "drain_timeout = \"3s\"\n")
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "stuck", "--source", "synthetic:?fps=0", "--frames", "500", "--split", "2")
	waitFor(t, 60*time.Second, "some results", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return len(col.res) >= 3
	})
	if err := cloud.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	code := dev.wait(t, 60*time.Second)
	t.Logf("device exited %d, %v after the cloudproc was killed", code, time.Since(stopped).Round(time.Millisecond))
	if code == 0 {
		t.Fatal("device exited 0 with results missing")
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.captured != sum.results+sum.drops || sum.drops == 0 || !strings.Contains(sum.reasons, "result_timeout=") {
		t.Errorf("summary %+v: want captured = results + dropped, with result_timeout drops", sum)
	}
	if !strings.Contains(dev.stderr.String(), "no progress") {
		t.Errorf("the device does not say why it stopped:\n%s", tail(dev.stderr.String()))
	}
}

// capture_ts is the moment the frame was captured, before the device's own
// stages ran: a device emulated 40× slower at split 6 spends tens of
// milliseconds per frame before it sends anything, and that time is part of
// every result's age at arrival.
func TestCaptureTimestampIsTakenAtCapture(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	arrived := map[uint64]time.Time{}
	var res []result
	done := make(chan struct{})
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-ts"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	const frames = 10
	tok := c.Subscribe(wire.ResultTopic("ts"), 1, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		var r result
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		if _, ok := arrived[r.Seq]; !ok {
			arrived[r.Seq] = now
			res = append(res, r)
			if len(res) == frames {
				close(done)
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	before := time.Now()
	sum := runDevice(t, broker, "--id", "ts", "--source", "synthetic:?fps=0", "--frames", fmt.Sprint(frames), "--split", "6", "--slowdown", "40")
	<-done
	// The device's own stages at split 6 take (40× their CPU time) more
	// than 20 ms per frame here; the gap between capture and arrival must
	// contain them. Before the fix capture_ts was taken after them, and
	// the gap was a millisecond or two of MQTT.
	for _, r := range res {
		ts, err := time.Parse(time.RFC3339Nano, r.CaptureTS)
		if err != nil {
			t.Fatalf("capture_ts %q: %v", r.CaptureTS, err)
		}
		age := arrived[r.Seq].Sub(ts)
		if ts.Before(before) || age < 20*time.Millisecond {
			t.Errorf("seq %d: captured %v after the run began, %v before its result arrived; want ≥ 20ms (the device's stages)", r.Seq, ts.Sub(before), age)
		}
	}
	t.Logf("%+v", sum)
}
