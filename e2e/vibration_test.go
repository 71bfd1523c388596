package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fxamacker/cbor/v2"
	"github.com/splitpoint/splitpoint/wire"
)

// vibResult is the vibration pipeline's part of a result.
type vibResult struct {
	Seq        uint64          `json:"seq"`
	Anomaly    bool            `json:"anomaly"`
	SensorOff  bool            `json:"sensor_off"`
	Score      *float64        `json:"score"`
	RMS        json.RawMessage `json:"rms"`
	Bands      json.RawMessage `json:"bands"`
	FilteredAt *string         `json:"filtered_at"`
	Split      int             `json:"split"`
	Error      string          `json:"error"`
}

// values is what must not depend on the split.
func (v vibResult) values() string {
	v.Split = 0
	b, _ := json.Marshal(v)
	return string(b)
}

// The second pipeline, not vision, through the same binaries: windows of a
// synthetic accelerometer with injected bearing faults (every 5th window)
// and a sensor that is off every 13th window, at every split 1..5, and two
// devices at once. Every window gets exactly one result, identical across
// splits, and the ground truth is met: every faulty window flagged, no
// healthy one, every off window filtered at capture.
func TestVibrationPipelineEverySplitMeetsGroundTruth(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	cfg := writeFile(t, "vib.toml", "pipeline = \"vibration\"\nsource = \"synthetic:?fps=0&windows=40&off_every=13&seed=7\"\n")
	const windows = 40
	var want map[uint64]string
	check := func(id, run string, split int) {
		t.Helper()
		waitFor(t, 30*time.Second, "results of "+id, func() bool { return col.count(run) >= windows })
		got := map[uint64]string{}
		anomalies, off := 0, 0
		for _, r := range col.run(t, run) {
			var v vibResult
			if err := json.Unmarshal([]byte(r.raw), &v); err != nil || v.Error != "" {
				t.Fatalf("%s: result %s: %v", id, r.raw, err)
			}
			if _, dup := got[v.Seq]; dup {
				t.Errorf("%s: two results for window %d", id, v.Seq)
			}
			got[v.Seq] = v.values()
			faulty, sensorOff := v.Seq%5 == 4, v.Seq%13 == 12
			switch {
			case sensorOff:
				off++
				if !v.SensorOff || v.FilteredAt == nil || *v.FilteredAt != "capture" {
					t.Errorf("%s split %d window %d: off sensor not filtered at capture: %s", id, split, v.Seq, r.raw)
				}
			case v.Anomaly != faulty:
				t.Errorf("%s split %d window %d: anomaly %v, truth %v (score %v)", id, split, v.Seq, v.Anomaly, faulty, v.Score)
			case v.Anomaly:
				anomalies++
			}
			if v.Split != split {
				t.Errorf("%s: window %d ran at split %d, want %d", id, v.Seq, v.Split, split)
			}
		}
		if len(got) != windows {
			t.Fatalf("%s split %d: %d distinct windows answered, want %d", id, split, len(got), windows)
		}
		t.Logf("%s split %d: %d windows, %d anomalies, %d sensor off", id, split, len(got), anomalies, off)
		if want == nil {
			want = got
			return
		}
		for seq, v := range got {
			if v != want[seq] {
				t.Errorf("%s split %d window %d: %s, at split 1: %s", id, split, seq, v, want[seq])
			}
		}
	}
	for k := 1; k <= 5; k++ {
		sum := runDevice(t, broker, "-c", cfg, "--id", fmt.Sprintf("vib%d", k), "--split", fmt.Sprint(k))
		if sum.captured != windows || sum.results != windows || sum.drops != 0 {
			t.Fatalf("split %d: %+v", k, sum)
		}
		check(sum.device, sum.run, k)
	}
	// Two devices at once, at different splits.
	var wg sync.WaitGroup
	sums := make([]summary, 2)
	for i, k := range []int{2, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := start(t, "device", "-c", cfg, "--broker", broker, "--id", fmt.Sprintf("pair%d", i), "--split", fmt.Sprint(k))
			if code := d.wait(t, 5*time.Minute); code != 0 {
				t.Errorf("device pair%d exited %d", i, code)
				return
			}
			sums[i] = parseSummary(t, d.stdout.String())
		}()
	}
	wg.Wait()
	for i, k := range []int{2, 4} {
		if sums[i].results != windows {
			t.Fatalf("pair%d: %+v", i, sums[i])
		}
		check(sums[i].device, sums[i].run, k)
	}
}

// Bad vibration states sent to the cloud while a good device runs: each is
// rejected with its reason, answered with an error result where the frame
// can be named, and the good device loses nothing.
func TestVibrationBadInputHarmsNoOtherDevice(t *testing.T) {
	broker, _ := startGateway(t)
	cloud := startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-evil-vib"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	state := func(seq uint64, f wire.Field) []byte {
		b, err := cbor.Marshal(&wire.Envelope{Version: wire.Version, Pipeline: "vibration", Device: "evilvib", Run: "bad", Seq: seq,
			Split: 1, Next: "filter", Fields: map[string]wire.Field{"signal": f}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	nan := make([]byte, 8*1024*3)
	for i := 0; i < len(nan); i += 8 {
		binary.LittleEndian.PutUint64(nan[i:], math.Float64bits(math.NaN()))
	}
	bad := [][]byte{
		[]byte("not cbor"),
		state(1, wire.Field{Kind: wire.KindArray, Array: &wire.Array{DType: "float64", Shape: []int{10, 2}, Codec: "raw", Data: make([]byte, 160)}}),
		state(2, wire.Field{Kind: wire.KindArray, Array: &wire.Array{DType: "int32", Shape: []int{1024, 3}, Codec: "raw", Data: make([]byte, 4*3072)}}),
		state(3, wire.Field{Kind: wire.KindArray, Array: &wire.Array{DType: "float64", Shape: []int{1024, 3}, Codec: "raw", Data: nan}}),
		state(4, wire.Field{Kind: wire.KindNumber, Num: 1}),
	}
	cfg := writeFile(t, "vib.toml", "pipeline = \"vibration\"\nsource = \"synthetic:?fps=20&windows=40\"\n")
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "goodvib", "--split", "1")
	for _, b := range bad {
		if tok := pub.Publish(wire.StageTopic("evilvib", "filter"), 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	if code := dev.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("good device exited %d", code)
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.results != 40 || sum.drops != 0 {
		t.Fatalf("good device: %+v", sum)
	}
	waitFor(t, 30*time.Second, "error answers for the four named bad states", func() bool { return col.count("bad") >= 4 })
	for _, r := range col.run(t, "bad") {
		var v vibResult
		if json.Unmarshal([]byte(r.raw), &v) != nil || v.Error == "" {
			t.Errorf("bad state answered without an error: %s", r.raw)
		}
	}
	cloud.stop(t)
	if !strings.Contains(cloud.stderr.String(), "bad_state=") || !strings.Contains(cloud.stderr.String(), "stage_error=") {
		t.Errorf("cloudproc did not count the bad states:\n%s", tail(cloud.stderr.String()))
	}
}
