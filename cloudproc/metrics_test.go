package cloudproc

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/internal/metrics/metricstest"
)

func TestMetricsCollectorValues(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	view := procView{
		Stats: Stats{Received: 120, Results: 100, Duplicates: 3, Replayed: 2,
			Rejected: map[string]int64{ShedOverload: 5, RejectStageError: 1}},
		Queued: 7, Workers: 4, Busy: 2500 * time.Millisecond, Utilisation: 0.25,
		Devices: map[string]deviceView{
			"pi1":            {Results: 60, Heard: now.Add(-time.Second), StagesMS: map[string]float64{"mask": 0.5, "sink": 0.02}},
			"sites/home/pi1": {Results: 30, Heard: now.Add(-2 * time.Minute), StagesMS: map[string]float64{"contours": 1.5}},
			"old":            {Results: 10, Heard: now.Add(-11 * time.Minute), StagesMS: map[string]float64{"mask": 9}},
			"pi9":            {Results: 0, Heard: now.Add(-5 * time.Minute)},
		},
	}
	c := newCollector(func() procView { return view }, func() time.Time { return now }, 2, 10*time.Minute)
	want := metricstest.Series{
		"splitpoint_cloudproc_received_total":     120,
		"splitpoint_cloudproc_results_total":      100,
		"splitpoint_cloudproc_duplicates_total":   3,
		"splitpoint_cloudproc_replayed_total":     2,
		"splitpoint_cloudproc_queued_frames":      7,
		"splitpoint_cloudproc_workers":            4,
		"splitpoint_cloudproc_busy_seconds_total": 2.5,
		"splitpoint_cloudproc_utilisation_ratio":  0.25,
		// old is forgotten, pi9 over the cap of 2 (the least recently heard)
		"splitpoint_cloudproc_metrics_omitted_devices":                                        1,
		`splitpoint_cloudproc_device_results_total{device="pi1"}`:                             60,
		`splitpoint_cloudproc_device_results_total{device="sites/home/pi1"}`:                  30,
		`splitpoint_cloudproc_device_last_heard_timestamp_seconds{device="pi1"}`:              1_699_999_999,
		`splitpoint_cloudproc_device_last_heard_timestamp_seconds{device="sites/home/pi1"}`:   1_699_999_880,
		`splitpoint_cloudproc_device_stage_seconds{device="pi1",stage="mask"}`:                0.0005,
		`splitpoint_cloudproc_device_stage_seconds{device="pi1",stage="sink"}`:                0.00002,
		`splitpoint_cloudproc_device_stage_seconds{device="sites/home/pi1",stage="contours"}`: 0.0015,
	}
	for _, r := range rejectReasons {
		want[`splitpoint_cloudproc_rejected_total{reason="`+r+`"}`] = float64(view.Stats.Rejected[r])
	}
	if d := metricstest.Equal(metricstest.Collect(t, c), want); d != "" {
		t.Error(d)
	}
}

// The figures kept for the metrics alone: per-device results (not error
// results), bounded, forgotten entries making room; the stage histogram;
// and the view that copies them with the counters.
func TestMetricsState(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Workers = 3
	p := newProc(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Unix(1_700_000_000, 0)
	p.mx.answered("pi1", true, now)
	p.mx.answered("pi1", true, now.Add(time.Second))
	p.mx.answered("pi1", false, now.Add(2*time.Second)) // an error result: heard, not a result
	p.mx.answered("pi2", false, now)
	p.stats.Results, p.stats.Received = 2, 4
	p.mx.busy, p.mx.utilisation = time.Second, 0.5
	p.perf["pi1"] = map[string]float64{"mask": 0.25}
	v := p.metricsView()
	if v.Stats.Results != 2 || v.Stats.Received != 4 || v.Workers != 3 || v.Queued != 0 || v.Busy != time.Second || v.Utilisation != 0.5 || len(v.Devices) != 2 {
		t.Fatalf("view %+v", v)
	}
	if d := v.Devices["pi1"]; d.Results != 2 || !d.Heard.Equal(now.Add(2*time.Second)) || d.StagesMS["mask"] != 0.25 {
		t.Errorf("pi1: %+v", d)
	}
	if d := v.Devices["pi2"]; d.Results != 0 || !d.Heard.Equal(now) || d.StagesMS != nil {
		t.Errorf("pi2: %+v", d)
	}

	// Full: entries not heard from for forgetAfter make room, else a new
	// device is not tracked.
	m := metricsState{forgetAfter: time.Minute, devices: map[string]*deviceCounts{}}
	for i := range maxTrackedDevices {
		m.devices[fmt.Sprint("d", i)] = &deviceCounts{heard: now}
	}
	m.answered("new", true, now.Add(30*time.Second))
	if _, ok := m.devices["new"]; ok || len(m.devices) != maxTrackedDevices {
		t.Errorf("tracked past the bound: %d", len(m.devices))
	}
	m.answered("new", true, now.Add(2*time.Minute))
	if c, ok := m.devices["new"]; !ok || c.results != 1 || len(m.devices) != 1 {
		t.Errorf("forgotten entries made no room: %d", len(m.devices))
	}

	// The stage histogram, fed where a stage's time is measured.
	p.mx.stages = newStageHistogram()
	p.observe("pi1", "mask", 300*time.Microsecond)
	p.observe("pi1", "mask", 3*time.Millisecond)
	p.observe("pi2", "sink", 20*time.Microsecond)
	got := metricstest.Collect(t, p.mx.stages)
	want := metricstest.Series{}
	for _, b := range stageBuckets {
		le := metricstest.Series{"mask": 0, "sink": 0}
		if b >= 0.0003 {
			le["mask"]++
		}
		if b >= 0.003 {
			le["mask"]++
		}
		if b >= 0.00002 {
			le["sink"]++
		}
		for stage, n := range le {
			want[`splitpoint_cloudproc_stage_duration_seconds_bucket{le="`+fmt.Sprint(b)+`",stage="`+stage+`"}`] = n
		}
	}
	for stage, n := range map[string]float64{"mask": 2, "sink": 1} {
		want[`splitpoint_cloudproc_stage_duration_seconds_bucket{le="+Inf",stage="`+stage+`"}`] = n
		want[`splitpoint_cloudproc_stage_duration_seconds_count{stage="`+stage+`"}`] = n
	}
	want[`splitpoint_cloudproc_stage_duration_seconds_sum{stage="mask"}`] = 0.0033
	want[`splitpoint_cloudproc_stage_duration_seconds_sum{stage="sink"}`] = 0.00002
	if d := metricstest.Equal(got, want); d != "" {
		t.Error(d)
	}
}

func TestMetricsSettingsValidated(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.MetricsListen = "localhost" }, `metrics_listen: "localhost" is not host:port`},
		{func(c *Config) { c.MetricsMaxDevices = 10001 }, "metrics_max_devices: must be 0..10000 (got 10001)"},
		{func(c *Config) { c.MetricsForgetAfter = -1 }, "metrics_forget_after: must be 1s..8760h"},
		{func(c *Config) { c.MetricsListen = "127.0.0.1:0" }, ""},
	} {
		c := DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want))) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
