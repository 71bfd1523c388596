package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/splitpoint/splitpoint/internal/metrics/metricstest"
)

func TestCheckListen(t *testing.T) {
	for _, ok := range []string{"", "127.0.0.1:9464", "127.0.0.1:0", "[::1]:9464", ":9464", "0.0.0.0:9464", "localhost:9464", "192.168.1.10:80"} {
		if err := CheckListen(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"9464", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:65536", "127.0.0.1:-1", "gateway.local:9464", "http://127.0.0.1:9464", "127.0.0.1: 80"} {
		if err := CheckListen(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if key, err := CheckBounds(1000, 10*time.Minute); err != nil {
		t.Errorf("defaults: %s: %v", key, err)
	}
	for _, tc := range []struct {
		max    int
		forget time.Duration
		key    string
	}{{-1, time.Minute, "metrics_max_devices"}, {MaxMaxDevices + 1, time.Minute, "metrics_max_devices"}, {10, 0, "metrics_forget_after"}, {10, 9000 * time.Hour, "metrics_forget_after"}} {
		if key, err := CheckBounds(tc.max, tc.forget); key != tc.key || err == nil {
			t.Errorf("CheckBounds(%d, %v) = %q, %v; want %s", tc.max, tc.forget, key, err, tc.key)
		}
	}
}

func TestSelect(t *testing.T) {
	now := time.Unix(10000, 0)
	devs := []Heard{
		{Key: "e", Online: true, At: now.Add(-time.Hour)}, // online: always eligible
		{Key: "d", At: now.Add(-11 * time.Minute)},        // forgotten
		{Key: "c", At: now.Add(-5 * time.Minute)},
		{Key: "b", At: now.Add(-time.Minute)},
		{Key: "a", At: now.Add(-time.Minute)}, // ties with b: key order
		{Key: "f", At: now.Add(-10 * time.Minute)},
	}
	keys := func(idx []int) string {
		var out []string
		for _, i := range idx {
			out = append(out, devs[i].Key)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		max     int
		want    string
		omitted int
	}{{10, "a,b,c,e,f", 0}, {5, "a,b,c,e,f", 0}, {3, "a,b,e", 2}, {2, "a,e", 3}, {1, "e", 4}, {0, "", 5}} {
		keep, omitted := Select(devs, now, tc.max, 10*time.Minute)
		if keys(keep) != tc.want || omitted != tc.omitted {
			t.Errorf("max %d: kept %s, omitted %d; want %s, %d", tc.max, keys(keep), omitted, tc.want, tc.omitted)
		}
	}
}

type fixed struct{ set Set }

func (f *fixed) Describe(ch chan<- *prometheus.Desc) { f.set.Describe(ch) }
func (f *fixed) Collect(ch chan<- prometheus.Metric) {
	f.set.descs[0].Emit(ch, 3)
	f.set.descs[1].Emit(ch, 1.5, "x")
}

// The server serves the registry's Go, process and build collectors and a
// collector of Descs on /metrics only, in the text format promlint accepts,
// and Close leaves nothing running.
func TestServer(t *testing.T) {
	reg := NewRegistry()
	f := &fixed{}
	f.set.Counter("splitpoint_test_things_total", "Things.")
	f.set.Gauge("splitpoint_test_level_seconds", "A level.", "stage")
	reg.MustRegister(f)
	var ready string
	s := Start("127.0.0.1:0", reg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { ready = a })
	if s == nil || ready != s.Addr() || strings.HasSuffix(ready, ":0") {
		t.Fatalf("Start: %v, ready %q", s, ready)
	}
	defer s.Close()
	got := metricstest.Check(t, s.Addr(), false)
	want := metricstest.Series{"splitpoint_test_things_total": 3, `splitpoint_test_level_seconds{stage="x"}`: 1.5}
	if d := metricstest.Equal(got.WithPrefix("splitpoint_"), want); d != "" {
		t.Error(d)
	}
	for _, k := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %s", k)
		}
	}
	resp, err := http.Get("http://" + s.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /: %s", resp.Status)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := metricstest.Scrape(s.Addr()); err == nil {
		t.Error("still serving after Close")
	}

	// Off, and an address that cannot be bound: nil, which closes as a
	// no-op and has no address.
	if s := Start("", reg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); s != nil || s.Addr() != "" || s.Close() != nil {
		t.Error("metrics off gave a server")
	}
	busy := Start("127.0.0.1:0", reg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	defer busy.Close()
	var logs strings.Builder
	if s := Start(busy.Addr(), reg, slog.New(slog.NewTextHandler(&logs, nil)), func(string) { t.Error("ready called") }); s != nil {
		t.Error("a second server on the same address")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "running without metrics") {
		t.Errorf("log: %s", logs.String())
	}
}
