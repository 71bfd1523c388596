package device

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/internal/metrics/metricstest"
	_ "github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/wire"
)

func TestMetricsCollectorValues(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	view := metricsView{
		summary: func() Summary {
			return Summary{Captured: 100, FilteredLocal: 4, Sent: 95, BytesSent: 150000, Resent: 2, Results: 90, Duplicates: 1, BadResults: 3,
				Profiled: 6, Dropped: map[string]int{DropNoCloud: 5, DropCloudError: 1}, SourceReopens: 7, SourceErrors: 8,
				LatencyP50: 6 * time.Millisecond, LatencyP99: 12500 * time.Microsecond}
		},
		state:  func() wire.DeviceState { return wire.DeviceState{Split: 3, TargetFPS: 25, Slowdown: 4} },
		window: func() (int, int) { return 2, 8 },
		figures: func() ([]wire.StageFigure, []wire.BoundaryFigure, float64) {
			return []wire.StageFigure{
					{Name: "capture", DeviceMS: 6.4, CPUMS: 1.6, Source: wire.Measured, AgeS: 0.1},
					{Name: "hsv", DeviceMS: 3, CPUMS: 0.75, Source: wire.Estimated, AgeS: 42},
					{Name: "draw", Source: wire.Estimated, AgeS: -1}, // never profiled: no series
				}, []wire.BoundaryFigure{
					{Split: 1, Next: "hsv", Bytes: 562655, Source: wire.Estimated, AgeS: 42},
					{Split: 2, Next: "mask", Bytes: 1489, Source: wire.Measured, AgeS: 0.1},
					{Split: 3, Next: "contours", Source: wire.Estimated, AgeS: -1}, // unknown: no series
				}, 0.4
		},
		cloud:  func() bool { return true },
		uplink: func() (*float64, *float64) { return f(0.9), f(2.1e8) },
	}
	want := metricstest.Series{
		`splitpoint_device_info{pipeline="balltrack"}`:         1,
		"splitpoint_device_frames_captured_total":              100,
		"splitpoint_device_frames_filtered_total":              4,
		"splitpoint_device_frames_sent_total":                  95,
		"splitpoint_device_frames_resent_total":                2,
		"splitpoint_device_frames_profiled_total":              6,
		"splitpoint_device_results_total":                      90,
		"splitpoint_device_results_duplicate_total":            1,
		"splitpoint_device_results_bad_total":                  3,
		"splitpoint_device_sent_bytes_total":                   150000,
		"splitpoint_device_source_reopens_total":               7,
		"splitpoint_device_source_errors_total":                8,
		"splitpoint_device_latency_p50_seconds":                0.006,
		"splitpoint_device_latency_p99_seconds":                0.0125,
		"splitpoint_device_window_in_flight_frames":            2,
		"splitpoint_device_window_size_frames":                 8,
		"splitpoint_device_split":                              3,
		"splitpoint_device_target_fps":                         25,
		"splitpoint_device_slowdown":                           4,
		"splitpoint_device_cloud_online":                       1,
		`splitpoint_device_stage_seconds{stage="capture"}`:     0.0064,
		`splitpoint_device_stage_cpu_seconds{stage="capture"}`: 0.0016,
		`splitpoint_device_stage_measured{stage="capture"}`:    1,
		`splitpoint_device_stage_seconds{stage="hsv"}`:         0.003,
		`splitpoint_device_stage_cpu_seconds{stage="hsv"}`:     0.00075,
		`splitpoint_device_stage_measured{stage="hsv"}`:        0,
		`splitpoint_device_boundary_bytes{split="1"}`:          562655,
		`splitpoint_device_boundary_bytes{split="2"}`:          1489,
		"splitpoint_device_overhead_seconds":                   0.0004,
		"splitpoint_device_uplink_ack_p50_seconds":             0.0009,
		"splitpoint_device_uplink_capacity_bytes_per_second":   2.1e8,
	}
	for _, r := range dropReasons {
		want[`splitpoint_device_frames_dropped_total{reason="`+r+`"}`] = map[string]float64{DropNoCloud: 5, DropCloudError: 1}[r]
	}
	c := newCollector(view, "balltrack")
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}

	// Before the first result and the first timed publish: no latency,
	// no uplink figures.
	view.summary = func() Summary { return Summary{Dropped: map[string]int{}} }
	view.uplink = func() (*float64, *float64) { return nil, nil }
	got := metricstest.Collect(t, newCollector(view, "balltrack"))
	for _, k := range []string{"splitpoint_device_latency_p50_seconds", "splitpoint_device_latency_p99_seconds",
		"splitpoint_device_uplink_ack_p50_seconds", "splitpoint_device_uplink_capacity_bytes_per_second"} {
		if v, ok := got[k]; ok {
			t.Errorf("%s = %v before any sample", k, v)
		}
	}
}

// serveMetrics serves the device's own counters, every series labelled
// with the device, on the address MetricsReady reports; nothing when
// metrics_listen is "".
func TestServeMetrics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.MetricsListen = "mx1", "127.0.0.1:0"
	var ready string
	cfg.MetricsReady = func(a string) { ready = a }
	d, err := newDevice(cfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	d.stats.add(func(s *Summary) { s.Captured, s.Sent = 3, 2 })
	d.stats.result(10 * time.Millisecond)
	d.stats.drop(DropStageError)
	s := d.serveMetrics()
	if s == nil || s.Addr() != ready || strings.HasSuffix(ready, ":0") {
		t.Fatalf("served on %q, ready %q", s.Addr(), ready)
	}
	got := metricstest.Check(t, s.Addr(), false)
	for k, v := range map[string]float64{
		`splitpoint_device_info{device="mx1",pipeline="balltrack"}`:                 1,
		`splitpoint_device_frames_captured_total{device="mx1"}`:                     3,
		`splitpoint_device_frames_sent_total{device="mx1"}`:                         2,
		`splitpoint_device_results_total{device="mx1"}`:                             1,
		`splitpoint_device_frames_dropped_total{device="mx1",reason="stage_error"}`: 1,
		`splitpoint_device_latency_p50_seconds{device="mx1"}`:                       0.01,
		`splitpoint_device_window_size_frames{device="mx1"}`:                        8,
		`splitpoint_device_window_in_flight_frames{device="mx1"}`:                   0,
		`splitpoint_device_split{device="mx1"}`:                                     3,
		`splitpoint_device_slowdown{device="mx1"}`:                                  1,
		`splitpoint_device_cloud_online{device="mx1"}`:                              0,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no Go collector")
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}

	cfg.MetricsListen = ""
	d, err = newDevice(cfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s := d.serveMetrics(); s != nil {
		t.Errorf("metrics off, served on %s", s.Addr())
	}
	cfg.MetricsListen = "9466"
	if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), `metrics_listen: "9466" is not host:port`) {
		t.Errorf("metrics_listen 9466: %v", err)
	}
}
