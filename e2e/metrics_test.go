package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/splitpoint/splitpoint/cloudproc"
	"github.com/splitpoint/splitpoint/device"
	"github.com/splitpoint/splitpoint/gateway"
	"github.com/splitpoint/splitpoint/internal/metrics/metricstest"
	"github.com/splitpoint/splitpoint/wire"
)

// requirePromtool fails the test (without stopping it) when Prometheus's
// promtool is missing: every scrape is also checked with "promtool check
// metrics".
func requirePromtool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Errorf("%v; every scrape of this test is checked with it", metricstest.ErrNoPromtool)
	}
}

var metricsLineRe = regexp.MustCompile(`msg="metrics listening"[^\n]* addr=(\S+)`)

// metricsAddr waits for the "metrics listening" log line of p and returns
// the address it names.
func metricsAddr(t *testing.T, p *proc) string {
	t.Helper()
	var addr string
	waitFor(t, 30*time.Second, p.name+"'s metrics address", func() bool {
		if m := metricsLineRe.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	if !regexpMatch(`^127\.0\.0\.1:\d+$`, addr) || strings.HasSuffix(addr, ":0") {
		t.Fatalf("%s's metrics address %q", p.name, addr)
	}
	return addr
}

// writeConfig writes a config file into dir.
func writeConfig(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// teleLog keeps the telemetry of one device with the time it arrived.
type teleLog struct {
	mu   sync.Mutex
	msgs []teleMsg
}

type teleMsg struct {
	at time.Time
	t  wire.Telemetry
}

func subscribeTelemetry(t *testing.T, broker, device string) *teleLog {
	t.Helper()
	l := &teleLog{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-metrics-telemetry").SetOrderMatters(true))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(wire.TelemetryTopic(device), 0, func(_ paho.Client, m paho.Message) {
		var tel wire.Telemetry
		if err := json.Unmarshal(m.Payload(), &tel); err != nil {
			t.Errorf("telemetry: %v", err)
			return
		}
		l.mu.Lock()
		l.msgs = append(l.msgs, teleMsg{at: time.Now(), t: tel})
		l.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return l
}

// before returns the last telemetry received before ts: the device read
// its counters before that.
func (l *teleLog) before(ts time.Time) (wire.Telemetry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.msgs) - 1; i >= 0; i-- {
		if l.msgs[i].at.Before(ts) {
			return l.msgs[i].t, true
		}
	}
	return wire.Telemetry{}, false
}

// after waits for a telemetry stamped after ts: the device read its
// counters after that.
func (l *teleLog) after(t *testing.T, ts time.Time) wire.Telemetry {
	t.Helper()
	var out wire.Telemetry
	waitFor(t, 60*time.Second, "a telemetry stamped after the scrape", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, m := range l.msgs {
			if m.t.TS.After(ts) {
				out = m.t
				return true
			}
		}
		return false
	})
	return out
}

// deviceCounters are the telemetry counters by the name of the device's
// metric (label device elided).
func deviceCounters(c wire.Counters) map[string]float64 {
	m := map[string]float64{
		"frames_captured_total": float64(c.Captured), "frames_filtered_total": float64(c.FilteredLocal),
		"frames_sent_total": float64(c.Sent), "frames_resent_total": float64(c.Resent), "results_total": float64(c.Results),
		"results_duplicate_total": float64(c.Duplicates), "results_bad_total": float64(c.BadResults),
		"frames_profiled_total": float64(c.Profiled), "source_reopens_total": float64(c.SourceReopens),
		"source_errors_total": float64(c.SourceErrors),
	}
	for _, r := range []string{device.DropWindowFull, device.DropNoCloud, device.DropTooLarge, device.DropStageError, device.DropEncodeError,
		device.DropResultTimeout, device.DropDisconnected, device.DropCloudError, device.DropUnanswered} {
		m[`frames_dropped_total{reason="`+r+`"}`] = float64(c.Dropped[r])
	}
	return m
}

// scrapedCounters are the same counters from a scrape of device id.
func scrapedCounters(t *testing.T, s metricstest.Series, id string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k := range deviceCounters(wire.Counters{}) {
		name, labels, _ := strings.Cut(k, "{")
		key := "splitpoint_device_" + name + `{device="` + id + `"}`
		if labels != "" {
			key = "splitpoint_device_" + name + `{device="` + id + `",` + labels
		}
		v, ok := s[key]
		if !ok {
			t.Fatalf("the scrape lacks %s", key)
		}
		out[k] = v
	}
	return out
}

// compareWithTelemetry scrapes the device and brackets every counter
// between the telemetry received before the scrape began and the first one
// stamped after it ended. With exact, it repeats until the two telemetries
// agree (the device stands still), and then the scrape must equal them.
func compareWithTelemetry(t *testing.T, addr, id string, tele *teleLog, exact bool) (metricstest.Series, wire.Telemetry) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		start := time.Now()
		before, ok := tele.before(start)
		if !ok {
			t.Fatal("no telemetry before the scrape")
		}
		s := metricstest.Check(t, addr, false)
		after := tele.after(t, time.Now())
		lo, hi, got := deviceCounters(before.Counters), deviceCounters(after.Counters), scrapedCounters(t, s, id)
		same := true
		for k, v := range got {
			if v < lo[k] || v > hi[k] {
				t.Errorf("%s: scraped %v, telemetry %v before the scrape and %v after it", k, v, lo[k], hi[k])
			}
			same = same && lo[k] == hi[k]
		}
		if !exact || same {
			return s, after
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device's counters did not stand still: %v then %v", lo, hi)
		}
	}
}

// TestMetricsEndToEnd runs the real gateway and cloudproc with metrics on
// ports they pick, and two devices: mx50 runs 50 frames at split 3, whose
// results the cloudproc's and decision the gateway's metrics must count
// exactly; mxlive runs on, and its own metrics must agree with its
// telemetry of the same moment — bracketed while frames flow, equal once
// the cloudproc is gone and it stands still. Every scrape passes promlint
// and promtool.
func TestMetricsEndToEnd(t *testing.T) {
	requirePromtool(t)
	dir := t.TempDir()
	broker, gw := startGateway(t, "-c", writeConfig(t, dir, "gateway.toml", "metrics_listen = \"127.0.0.1:0\"\n"))
	gwAddr := metricsAddr(t, gw)
	cloud := startCloud(t, broker, "mcloud", "-c", writeConfig(t, dir, "cloud.toml", "metrics_listen = \"127.0.0.1:0\"\ntelemetry_interval = \"200ms\"\n"))
	cloudAddr := metricsAddr(t, cloud)

	tele := subscribeTelemetry(t, broker, "mxlive")
	live := start(t, "device", "-c", writeConfig(t, dir, "pi.toml",
		"metrics_listen = \"127.0.0.1:0\"\ntelemetry_interval = \"200ms\"\nstatus_interval = \"0s\"\ndrain_timeout = \"1s\"\n"),
		"--broker", broker, "--id", "mxlive", "--source", "synthetic:?fps=30")
	liveAddr := metricsAddr(t, live)
	waitFor(t, 60*time.Second, "mxlive's first results in its telemetry", func() bool {
		tel, ok := tele.before(time.Now())
		return ok && tel.Counters.Results > 0
	})

	// While frames flow: the scrape lies between two telemetries.
	for range 3 {
		compareWithTelemetry(t, liveAddr, "mxlive", tele, false)
	}

	// 50 frames at split 3, to completion.
	sum := runDevice(t, broker, "--id", "mx50", "--frames", "50", "--split", "3", "--source", "synthetic:?fps=0")
	if sum.captured != 50 || sum.results != 50 || sum.drops != 0 {
		t.Fatalf("mx50: %+v", sum)
	}
	var cs metricstest.Series
	waitFor(t, 30*time.Second, "the cloudproc's 50th result of mx50 in its metrics", func() bool {
		cs = metricstest.Check(t, cloudAddr, false)
		return cs[`splitpoint_cloudproc_device_results_total{device="mx50"}`] >= 50
	})
	if n := cs[`splitpoint_cloudproc_device_results_total{device="mx50"}`]; n != 50 {
		t.Errorf("cloudproc counts %v results of mx50, want 50", n)
	}
	if n, all := cs[`splitpoint_cloudproc_device_results_total{device="mxlive"}`], cs["splitpoint_cloudproc_results_total"]; n < 1 || all < 50+n {
		t.Errorf("cloudproc results: mxlive %v, all %v", n, all)
	}
	for _, r := range []string{cloudproc.RejectBadTopic, cloudproc.RejectBadState, cloudproc.RejectWrongDevice, cloudproc.RejectUnknownPipeline,
		cloudproc.RejectUnknownStage, cloudproc.RejectTooLarge, cloudproc.RejectStageError, cloudproc.ShedOverload} {
		if n := cs[`splitpoint_cloudproc_rejected_total{reason="`+r+`"}`]; n != 0 {
			t.Errorf("cloudproc rejected %v frames (%s)", n, r)
		}
	}
	// At split 3 the cloud runs contours, circle, draw and sink: once each
	// per frame (filtered frames skip to the sink).
	if n := cs[`splitpoint_cloudproc_stage_duration_seconds_count{stage="sink"}`]; n < 50 {
		t.Errorf("sink timed %v times, want ≥ 50", n)
	}
	if _, ok := cs[`splitpoint_cloudproc_device_stage_seconds{device="mx50",stage="sink"}`]; !ok {
		t.Errorf("no smoothed sink time of mx50: %v", cs.WithPrefix("splitpoint_cloudproc_device_stage"))
	}
	if cs["splitpoint_cloudproc_workers"] < 1 || cs["splitpoint_cloudproc_busy_seconds_total"] <= 0 {
		t.Errorf("workers %v, busy %v", cs["splitpoint_cloudproc_workers"], cs["splitpoint_cloudproc_busy_seconds_total"])
	}

	var gs metricstest.Series
	waitFor(t, 30*time.Second, "mx50 offline in the gateway's metrics", func() bool {
		gs = metricstest.Check(t, gwAddr, false)
		v, ok := gs[`splitpoint_gateway_device_online{device="mx50"}`]
		return ok && v == 0
	})
	for k, v := range map[string]float64{
		`splitpoint_gateway_device_split{device="mx50"}`:                3,
		`splitpoint_gateway_device_mode{device="mx50",mode="manual"}`:   1,
		`splitpoint_gateway_device_target_fps{device="mx50"}`:           15,
		`splitpoint_gateway_device_online{device="mxlive"}`:             1,
		`splitpoint_gateway_device_mode{device="mxlive",mode="auto"}`:   1,
		"splitpoint_gateway_devices":                                    2,
		"splitpoint_gateway_devices_online":                             1,
		"splitpoint_gateway_cloudprocs_online":                          1,
		"splitpoint_gateway_control_plane_up":                           1,
		`splitpoint_gateway_denied_total{reason="publish"}`:             0,
		`splitpoint_gateway_messages_dropped_total{reason="count_cap"}`: 0,
	} {
		if g, ok := gs[k]; !ok || g != v {
			t.Errorf("gateway: %s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if n := gs[`splitpoint_gateway_device_decisions_total{device="mx50"}`]; n < 1 {
		t.Errorf("gateway: %v decisions for mx50", n)
	}
	// Clients: the cloudproc, mxlive and the telemetry subscriber.
	if n := gs["splitpoint_gateway_clients_connected"]; n < 3 {
		t.Errorf("gateway: %v clients connected", n)
	}
	if gs["splitpoint_gateway_messages_received_total"] < 100 || gs["splitpoint_gateway_received_bytes_total"] <= 0 {
		t.Errorf("gateway: received %v messages, %v bytes", gs["splitpoint_gateway_messages_received_total"], gs["splitpoint_gateway_received_bytes_total"])
	}

	// Without a cloudproc mxlive holds its frames: its counters stand still
	// and the scrape equals its telemetry.
	cloud.stop(t)
	s, tel := compareWithTelemetry(t, liveAddr, "mxlive", tele, true)
	for k, v := range map[string]float64{
		"splitpoint_device_cloud_online":            metricsBool(tel.CloudOnline),
		"splitpoint_device_split":                   float64(tel.Split),
		"splitpoint_device_window_in_flight_frames": float64(tel.Window.InFlight),
		"splitpoint_device_window_size_frames":      float64(tel.Window.Size),
		"splitpoint_device_target_fps":              tel.TargetFPS,
	} {
		if g := s[k+`{device="mxlive"}`]; g != v {
			t.Errorf("mxlive: %s = %v, telemetry says %v", k, g, v)
		}
	}
	if s[`splitpoint_device_cloud_online{device="mxlive"}`] != 0 || s[`splitpoint_device_info{device="mxlive",pipeline="balltrack"}`] != 1 {
		t.Errorf("mxlive: %v", s.WithPrefix("splitpoint_device_"))
	}
	waitFor(t, 30*time.Second, "no cloudproc online in the gateway's metrics", func() bool {
		return metricstest.Check(t, gwAddr, false)["splitpoint_gateway_cloudprocs_online"] == 0
	})
	live.stop(t)
	waitFor(t, 30*time.Second, "mxlive offline in the gateway's metrics", func() bool {
		v, ok := metricstest.Check(t, gwAddr, false)[`splitpoint_gateway_device_online{device="mxlive"}`]
		return ok && v == 0
	})
}

func metricsBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// TestMetricsInProcess runs gateway, cloudproc and device through their
// Run functions with metrics on: each reports its metrics address through
// its readiness API, serves it, and leaves no goroutine behind.
func TestMetricsInProcess(t *testing.T) {
	requirePromtool(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gwCtx, stopGateway := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(gwCtx)
	var wg, gwWG sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		stopGateway()
		gwWG.Wait()
	}()

	gcfg := gateway.DefaultConfig()
	gcfg.Listen, gcfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	addrs := make(chan gateway.Addrs, 1)
	gcfg.Ready = func(a gateway.Addrs) { addrs <- a }
	gwWG.Add(1)
	go func() {
		defer gwWG.Done()
		if err := gateway.Run(gwCtx, gcfg, io.Discard, log); err != nil {
			t.Error(err)
		}
	}()
	var ga gateway.Addrs
	select {
	case ga = <-addrs:
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready")
	}
	broker := "tcp://" + ga.MQTT

	ccfg := cloudproc.DefaultConfig()
	ccfg.Broker, ccfg.ID, ccfg.MetricsListen = broker, "mcloud2", "127.0.0.1:0"
	cloudMetrics := make(chan string, 1)
	ccfg.MetricsReady = func(a string) { cloudMetrics <- a }
	online := make(chan struct{})
	ccfg.Ready = func() { close(online) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := cloudproc.Run(ctx, ccfg, io.Discard, log); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-online:
	case <-time.After(10 * time.Second):
		t.Fatal("cloudproc not ready")
	}
	cloudAddr := <-cloudMetrics // called before Ready

	dcfg := device.DefaultConfig()
	dcfg.ID, dcfg.Broker, dcfg.Source, dcfg.Frames, dcfg.Split = "mxmem", broker, "synthetic:?fps=0", 20, 4
	dcfg.StatusInterval, dcfg.MetricsListen = 0, "127.0.0.1:0"
	var devAddr string
	dcfg.MetricsReady = func(a string) { devAddr = a }
	var atStart metricstest.Series
	dcfg.Ready = func(string) { // the device serves its metrics before its first frame
		if devAddr == "" {
			t.Error("the device reported no metrics address (MetricsReady): is the metrics hook in device.Run?")
			return
		}
		atStart = metricstest.Check(t, devAddr, false)
	}
	sum, err := device.Run(ctx, dcfg, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Captured != 20 || sum.Results != 20 {
		t.Fatalf("summary: %s", sum)
	}
	if v, ok := atStart[`splitpoint_device_frames_captured_total{device="mxmem"}`]; !ok || v != 0 {
		t.Errorf("device metrics before the first frame: %v", atStart.WithPrefix("splitpoint_device_frames"))
	}
	if _, err := metricstest.Scrape(devAddr); err == nil {
		t.Error("the device still serves metrics after Run returned")
	}
	waitFor(t, 10*time.Second, "mxmem's results in the cloudproc's metrics", func() bool {
		return metricstest.Check(t, cloudAddr, false)[`splitpoint_cloudproc_device_results_total{device="mxmem"}`] == 20
	})
	gs := metricstest.Check(t, ga.Metrics, false)
	if v := gs[`splitpoint_gateway_device_split{device="mxmem"}`]; v != 4 {
		t.Errorf("gateway: split of mxmem %v, want 4 (%v)", v, gs.WithPrefix("splitpoint_gateway_device_"))
	}
}
