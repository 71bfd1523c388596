package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/splitpoint/splitpoint/bridge"
	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/controller"
	"github.com/splitpoint/splitpoint/internal/metrics/metricstest"
	"github.com/splitpoint/splitpoint/wire"
)

func TestBrokerCollectorValues(t *testing.T) {
	c := newBrokerCollector(brokerSource{
		info: func() *system.Info {
			return &system.Info{ClientsConnected: 3, Subscriptions: 12, Inflight: 2, MessagesReceived: 100, MessagesSent: 90,
				BytesReceived: 5000, BytesSent: 4000, MessagesDropped: 4, InflightDropped: 5}
		},
		sessions: func() broker.SessionStats {
			return broker.SessionStats{OfflineSessions: 2, QueuedMessages: 7, QueuedBytes: 7700,
				Discarded:      broker.Discards{CountCap: 1, ByteCap: 2, TotalCap: 3, Expired: 6, SessionCap: 7},
				DiscardedBytes: 999, SessionsExpired: 8, SessionsEvicted: 9, Takeovers: 10}
		},
		retained: func() broker.RetainedStats { return broker.RetainedStats{Messages: 11, Bytes: 1100, Refused: 12} },
		security: func() broker.SecurityStats {
			return broker.SecurityStats{Auth: true, Users: 4, Logins: 13, Denied: map[string]int64{broker.DenyPublish: 14, broker.DenyWill: 15},
				Reloads: 16, ReloadErrors: 17, Listeners: map[string]broker.GuardStats{
					"tcp": {Accepted: 20, Open: 3, RefusedLimit: 21, RefusedPerAddress: 22, TimedOut: 23, NotConnect: 24, Oversized: 25, TLSFailed: 0, PreAuthMaxBytes: 4096},
					"tls": {Accepted: 30, Open: 1, TLSFailed: 31, PreAuthMaxBytes: 100},
				}}
		},
		malformed:     func() map[string]int64 { return map[string]int64{"telemetry": 40, "state": 41} },
		eventsDropped: func() int64 { return 42 },
		repaired:      func() int64 { return 43 },
	})
	want := metricstest.Series{
		"splitpoint_gateway_clients_connected":                                3,
		"splitpoint_gateway_subscriptions":                                    12,
		"splitpoint_gateway_inflight_messages":                                2,
		"splitpoint_gateway_messages_received_total":                          100,
		"splitpoint_gateway_messages_sent_total":                              90,
		"splitpoint_gateway_received_bytes_total":                             5000,
		"splitpoint_gateway_sent_bytes_total":                                 4000,
		`splitpoint_gateway_messages_dropped_total{reason="slow_subscriber"}`: 4,
		`splitpoint_gateway_messages_dropped_total{reason="inflight"}`:        5,
		`splitpoint_gateway_messages_dropped_total{reason="count_cap"}`:       1,
		`splitpoint_gateway_messages_dropped_total{reason="byte_cap"}`:        2,
		`splitpoint_gateway_messages_dropped_total{reason="total_cap"}`:       3,
		`splitpoint_gateway_messages_dropped_total{reason="expired"}`:         6,
		`splitpoint_gateway_messages_dropped_total{reason="session_cap"}`:     7,
		"splitpoint_gateway_session_discarded_bytes_total":                    999,
		"splitpoint_gateway_offline_sessions":                                 2,
		"splitpoint_gateway_offline_queued_messages":                          7,
		"splitpoint_gateway_offline_queued_bytes":                             7700,
		"splitpoint_gateway_sessions_expired_total":                           8,
		"splitpoint_gateway_sessions_evicted_total":                           9,
		"splitpoint_gateway_takeovers_total":                                  10,
		"splitpoint_gateway_retained_messages":                                11,
		"splitpoint_gateway_retained_bytes":                                   1100,
		"splitpoint_gateway_retained_refused_total":                           12,
		`splitpoint_gateway_denied_total{reason="no_credentials"}`:            0,
		`splitpoint_gateway_denied_total{reason="bad_credentials"}`:           0,
		`splitpoint_gateway_denied_total{reason="rate_limited"}`:              0,
		`splitpoint_gateway_denied_total{reason="cert_mismatch"}`:             0,
		`splitpoint_gateway_denied_total{reason="bad_identity"}`:              0,
		`splitpoint_gateway_denied_total{reason="client_id"}`:                 0,
		`splitpoint_gateway_denied_total{reason="will"}`:                      15,
		`splitpoint_gateway_denied_total{reason="publish"}`:                   14,
		`splitpoint_gateway_denied_total{reason="read"}`:                      0,
		`splitpoint_gateway_denied_total{reason="retain"}`:                    0,
		"splitpoint_gateway_logins_total":                                     13,
		"splitpoint_gateway_users":                                            4,
		"splitpoint_gateway_password_reloads_total":                           16,
		"splitpoint_gateway_password_reload_errors_total":                     17,
		`splitpoint_gateway_connections_accepted_total{listener="tcp"}`:       20,
		`splitpoint_gateway_connections_accepted_total{listener="tls"}`:       30,
		`splitpoint_gateway_connections_open{listener="tcp"}`:                 3,
		`splitpoint_gateway_connections_open{listener="tls"}`:                 1,
		`splitpoint_gateway_preauth_read_max_bytes{listener="tcp"}`:           4096,
		`splitpoint_gateway_preauth_read_max_bytes{listener="tls"}`:           100,
		`splitpoint_gateway_malformed_messages_total{reason="telemetry"}`:     40,
		`splitpoint_gateway_malformed_messages_total{reason="state"}`:         41,
		"splitpoint_gateway_control_events_dropped_total":                     42,
		"splitpoint_gateway_decisions_repaired_total":                         43,
	}
	for l, v := range map[string][6]float64{"tcp": {21, 22, 23, 24, 25, 0}, "tls": {0, 0, 0, 0, 0, 31}} {
		for i, r := range []string{"max_connections", "max_connections_per_address", "connect_timeout", "not_connect", "oversized", "tls_failed"} {
			want[`splitpoint_gateway_preauth_closed_total{listener="`+l+`",reason="`+r+`"}`] = v[i]
		}
	}
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}
}

func TestPlaneCollectorValues(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := func(v float64) *float64 { return &v }
	view := planeView{CloudsOnline: 2, CloudWorkers: 6, Devices: []deviceView{
		{ID: "pi1", Online: true, Heard: now.Add(-time.Second), Split: 3, Mode: wire.ModeAuto, TargetFPS: 25, Decisions: 4,
			MeasuredFPS: f(24.5), Bottleneck: "device", PredictedFPS: f(27.5)},
		{ID: "pi2", Online: false, Heard: now.Add(-9 * time.Minute), Split: 2, Mode: wire.ModeManual, TargetFPS: 15, Decisions: 1},
		{ID: "pi3", Online: false, Heard: now.Add(-11 * time.Minute), Split: 1, Mode: wire.ModeAuto, TargetFPS: 15, Decisions: 2},
		{ID: "pi4", Online: false, Heard: now.Add(-time.Minute), Split: 5, Mode: wire.ModeAuto, TargetFPS: 10, Decisions: 7, MeasuredFPS: f(9)},
	}}
	c := newPlaneCollector(func() (planeView, bool) { return view, true }, func() time.Time { return now }, 2, 10*time.Minute)
	want := metricstest.Series{
		"splitpoint_gateway_control_plane_up":                                    1,
		"splitpoint_gateway_devices":                                             4,
		"splitpoint_gateway_devices_online":                                      1,
		"splitpoint_gateway_cloudprocs_online":                                   2,
		"splitpoint_gateway_cloud_workers":                                       6,
		"splitpoint_gateway_metrics_omitted_devices":                             1, // pi2: over the cap; pi3 forgotten
		`splitpoint_gateway_device_online{device="pi1"}`:                         1,
		`splitpoint_gateway_device_split{device="pi1"}`:                          3,
		`splitpoint_gateway_device_mode{device="pi1",mode="auto"}`:               1,
		`splitpoint_gateway_device_target_fps{device="pi1"}`:                     25,
		`splitpoint_gateway_device_measured_fps{device="pi1"}`:                   24.5,
		`splitpoint_gateway_device_predicted_fps{device="pi1"}`:                  27.5,
		`splitpoint_gateway_device_decisions_total{device="pi1"}`:                4,
		`splitpoint_gateway_device_bottleneck{bottleneck="device",device="pi1"}`: 1,
		`splitpoint_gateway_device_last_heard_timestamp_seconds{device="pi1"}`:   1_699_999_999,
		`splitpoint_gateway_device_online{device="pi4"}`:                         0,
		`splitpoint_gateway_device_split{device="pi4"}`:                          5,
		`splitpoint_gateway_device_mode{device="pi4",mode="auto"}`:               1,
		`splitpoint_gateway_device_target_fps{device="pi4"}`:                     10,
		`splitpoint_gateway_device_measured_fps{device="pi4"}`:                   9,
		`splitpoint_gateway_device_decisions_total{device="pi4"}`:                7,
		`splitpoint_gateway_device_last_heard_timestamp_seconds{device="pi4"}`:   1_699_999_940,
	}
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}

	// A plane that does not answer: only the up gauge, at 0.
	c = newPlaneCollector(func() (planeView, bool) { return planeView{}, false }, time.Now, 1000, time.Minute)
	if d := metricstest.Equal(metricstest.Collect(t, c), metricstest.Series{"splitpoint_gateway_control_plane_up": 0}); d != "" {
		t.Error(d)
	}
}

// view copies the plane's devices; requestView gets it from the plane's
// goroutine, or gives up when nobody answers.
func TestPlaneView(t *testing.T) {
	p := newPlane(DefaultConfig(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	heard := time.Unix(1_700_000_000, 0)
	p.devs["a"] = &dev{id: "a", online: true, heard: heard, split: 2, mode: wire.ModeAuto, target: 20, epoch: 3,
		tele: &wire.Telemetry{FPS: 19.5}, bottleneck: "cloud", predicted: 22}
	p.devs["m"] = &dev{id: "m", split: 4, mode: wire.ModeManual, target: 15, epoch: 1, bottleneck: "uplink", predicted: 9}
	p.clouds["c1"] = &cloudInfo{online: true, tele: &wire.CloudTelemetry{Workers: 4}}
	p.clouds["c2"] = &cloudInfo{online: false, tele: &wire.CloudTelemetry{Workers: 8}}
	p.clouds["c3"] = &cloudInfo{online: true}

	if _, ok := p.requestView(50 * time.Millisecond); ok {
		t.Fatal("a view without a plane goroutine")
	}
	go func() { r := <-p.viewReq; r <- p.view() }()
	v, ok := p.requestView(10 * time.Second)
	if !ok {
		t.Fatal("no view")
	}
	if v.CloudsOnline != 2 || v.CloudWorkers != 4 || len(v.Devices) != 2 {
		t.Fatalf("view %+v", v)
	}
	for _, d := range v.Devices {
		switch d.ID {
		case "a":
			if !d.Online || !d.Heard.Equal(heard) || d.Split != 2 || d.Mode != wire.ModeAuto || d.TargetFPS != 20 || d.Decisions != 3 ||
				d.MeasuredFPS == nil || *d.MeasuredFPS != 19.5 || d.Bottleneck != "cloud" || d.PredictedFPS == nil || *d.PredictedFPS != 22 {
				t.Errorf("a: %+v", d)
			}
		case "m": // manual: no controller step to show
			if d.Online || d.Split != 4 || d.Mode != wire.ModeManual || d.MeasuredFPS != nil || d.Bottleneck != "" || d.PredictedFPS != nil {
				t.Errorf("m: %+v", d)
			}
		}
	}
}

func TestLastStep(t *testing.T) {
	s := controller.Snapshot{Split: 1, Stages: 3, DeviceMS: []float64{1, 1, 0}, CloudMS: []float64{0, 1, 1}, Bytes: []float64{0, 1e6, 10},
		UplinkBps: 1e6, DeviceWorkers: 1, CloudWorkers: 1}
	dec := controller.Decision{Split: 1, PredictedFPS: 1}
	if b, pred := lastStep(s, dec, false); b != "uplink" || pred != 1 {
		t.Errorf("got %s %g", b, pred)
	}
	if b, _ := lastStep(s, dec, true); b != "link" {
		t.Errorf("bridged: got %s", b)
	}
	if b, _ := lastStep(s, controller.Decision{Split: 2}, true); b != "device" {
		t.Errorf("split 2: got %s", b)
	}
}

func TestBridgeCollectorValues(t *testing.T) {
	st := bridge.Stats{Connected: true, Forwarded: 10, Acknowledged: 8, Inflight: 2, Spooled: 5, Down: 7, TelemetryDropped: 3,
		Spool: bridge.SpoolStats{Messages: 4, Bytes: 4000, MaxBytes: 1 << 20, Discarded: 1, DiscardedBytes: 900},
		Link:  bridge.Link{RTTms: 12.5, CapacityBps: 2e6, AckedBps: 1e5}}
	want := metricstest.Series{
		"splitpoint_gateway_bridge_connected":                          1,
		"splitpoint_gateway_bridge_messages_forwarded_total":           10,
		"splitpoint_gateway_bridge_messages_acknowledged_total":        8,
		"splitpoint_gateway_bridge_inflight_messages":                  2,
		"splitpoint_gateway_bridge_messages_spooled_total":             5,
		"splitpoint_gateway_bridge_messages_down_total":                7,
		"splitpoint_gateway_bridge_telemetry_dropped_total":            3,
		"splitpoint_gateway_bridge_spool_messages":                     4,
		"splitpoint_gateway_bridge_spool_bytes":                        4000,
		"splitpoint_gateway_bridge_spool_max_bytes":                    1 << 20,
		"splitpoint_gateway_bridge_spool_discarded_total":              1,
		"splitpoint_gateway_bridge_spool_discarded_bytes_total":        900,
		"splitpoint_gateway_bridge_link_capacity_bytes_per_second":     2e6,
		"splitpoint_gateway_bridge_link_acknowledged_bytes_per_second": 1e5,
		"splitpoint_gateway_bridge_rtt_seconds":                        0.0125,
	}
	c := newBridgeCollector(func() bridge.Stats { return st })
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}
	// Down, the link not measured yet: no capacity or RTT.
	st = bridge.Stats{Spool: bridge.SpoolStats{MaxBytes: 1 << 20}}
	for k := range want {
		want[k] = 0
	}
	want["splitpoint_gateway_bridge_spool_max_bytes"] = 1 << 20
	delete(want, "splitpoint_gateway_bridge_link_capacity_bytes_per_second")
	delete(want, "splitpoint_gateway_bridge_rtt_seconds")
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}
}

func TestMetricsSettingsValidated(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.MetricsListen = "9464" }, `metrics_listen: "9464" is not host:port`},
		{func(c *Config) { c.MetricsListen = "gateway.local:9464" }, `metrics_listen: "gateway.local:9464": host "gateway.local" is not an IP address or localhost`},
		{func(c *Config) { c.MetricsListen = "127.0.0.1:99999" }, `metrics_listen: "127.0.0.1:99999": port "99999" is not 0..65535`},
		{func(c *Config) { c.MetricsMaxDevices = -1 }, "metrics_max_devices: must be 0..10000 (got -1)"},
		{func(c *Config) { c.MetricsForgetAfter = 0 }, "metrics_forget_after: must be 1s..8760h (got 0s)"},
		{func(c *Config) { c.MetricsListen = "" }, ""},
		{func(c *Config) { c.MetricsListen = "0.0.0.0:9464" }, ""}, // allowed: Prometheus scrapes over the LAN
	} {
		c := DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want))) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// The gateway serves its metrics on the address Ready reports: the broker's
// counters, and a device's split, mode and target from the control plane,
// in an exposition promlint (and promtool, where installed) accepts.
func TestMetricsServed(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.HomeAssistant.Enabled = false
	addrs := make(chan Addrs, 1)
	cfg.Ready = func(a Addrs) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var a Addrs
	select {
	case a = <-addrs:
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	if a.Metrics == "" || strings.HasSuffix(a.Metrics, ":0") {
		t.Fatalf("metrics address %q", a.Metrics)
	}
	cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTT).SetClientID("metrics-test"))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cl.Disconnect(100)
	st, _ := json.Marshal(wire.DeviceState{Device: "mt1", Split: 2, Mode: wire.ModeManual, TargetFPS: 12, Pipeline: "balltrack", Stages: 7, Run: "r1"})
	for topic, payload := range map[string][]byte{wire.StatusTopic("mt1"): []byte(wire.Online), wire.StateTopic("mt1"): st} {
		if tok := cl.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	var got metricstest.Series
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = metricstest.Check(t, a.Metrics, false)
		if got[`splitpoint_gateway_device_decisions_total{device="mt1"}`] >= 1 && got[`splitpoint_gateway_device_online{device="mt1"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision for mt1 in the metrics:\n%v", got.WithPrefix("splitpoint_gateway_device"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := metricstest.Series{
		`splitpoint_gateway_device_online{device="mt1"}`:             1,
		`splitpoint_gateway_device_split{device="mt1"}`:              2,
		`splitpoint_gateway_device_mode{device="mt1",mode="manual"}`: 1,
		`splitpoint_gateway_device_target_fps{device="mt1"}`:         12,
		`splitpoint_gateway_device_decisions_total{device="mt1"}`:    1,
	}
	dev := got.WithPrefix("splitpoint_gateway_device_")
	delete(dev, `splitpoint_gateway_device_last_heard_timestamp_seconds{device="mt1"}`)
	if d := metricstest.Equal(dev, want); d != "" {
		t.Error(d)
	}
	for k, v := range map[string]float64{"splitpoint_gateway_clients_connected": 1, "splitpoint_gateway_devices": 1, "splitpoint_gateway_devices_online": 1,
		"splitpoint_gateway_control_plane_up": 1, `splitpoint_gateway_connections_open{listener="tcp"}`: 1} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if got["splitpoint_gateway_messages_received_total"] < 2 || got["go_goroutines"] == 0 {
		t.Errorf("received %v, goroutines %v", got["splitpoint_gateway_messages_received_total"], got["go_goroutines"])
	}
	if _, ok := got["splitpoint_gateway_bridge_connected"]; ok {
		t.Error("bridge metrics without a bridge")
	}
}

// metrics_listen = "" : no metrics, and Ready says so.
func TestMetricsOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.StatsInterval = config.Duration(0)
	addrs := make(chan Addrs, 1)
	cfg.Ready = func(a Addrs) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	select {
	case a := <-addrs:
		if a.Metrics != "" {
			t.Errorf("metrics on %q", a.Metrics)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
}

// The gateway's own count of results delivered to a device over a control
// period becomes the measurement when it is well below the device's
// report.
func TestDeliveredRate(t *testing.T) {
	p := newPlane(DefaultConfig(), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d := &dev{id: "a"}
	p.devs["a"] = d
	t0 := time.Unix(1_700_000_000, 0)
	p.measureDelivery(t0)
	if got := measuredFPS(30, d, 0.1); got != 30 {
		t.Errorf("before a full period: %v, want the report, 30", got)
	}
	p.results["a"] = 20
	p.measureDelivery(t0.Add(2 * time.Second))
	if d.delivered != 10 {
		t.Fatalf("delivered %v results/s, want 10", d.delivered)
	}
	if got := measuredFPS(30, d, 0.1); got != 10 {
		t.Errorf("30 captured, 10 delivered: %v, want 10", got)
	}
	if got := measuredFPS(10.5, d, 0.1); got != 10.5 {
		t.Errorf("within the margin: %v, want the report", got)
	}
}
