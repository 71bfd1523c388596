package device

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/splitpoint/splitpoint/internal/metrics"
	"github.com/splitpoint/splitpoint/wire"
)

// The device's Prometheus metrics (metrics_listen). The collector reads, at
// scrape time, what the device already keeps for its telemetry and summary
// (metricsView); nothing on the frame path is touched. Every series carries
// the label device (the device's id).
//
// Run starts them with one line, after the source is open (its counters
// wired) and before the device connects:
//
//	defer d.serveMetrics().Close()

// metricsView is what the collector reads; each function returns a
// consistent copy and is safe to call from the metrics server's goroutine.
type metricsView struct {
	// summary returns the counters and the latency percentiles over the
	// kept samples (the last 65 536 results).
	summary func() Summary
	state   func() wire.DeviceState
	window  func() (inFlight, size int)
	// figures returns the telemetry's stage and boundary figures and the
	// per-frame overhead, ms.
	figures func() ([]wire.StageFigure, []wire.BoundaryFigure, float64)
	cloud   func() bool
	// uplink returns the median PUBACK time, ms, and the capacity
	// estimate, bytes/s (nil: unknown).
	uplink func() (ackP50, capacity *float64)
}

// metricsView wires the view to the device's own state.
func (d *device) metricsView() metricsView {
	return metricsView{
		summary: d.stats.snapshot,
		state:   d.currentState,
		window:  func() (int, int) { return d.win.inFlight(), d.cfg.Window },
		figures: func() ([]wire.StageFigure, []wire.BoundaryFigure, float64) {
			return d.perf.figures(int(d.split.Load()), 3*d.cfg.TelemetryInterval.D(), time.Now(),
				func(k int) string { return d.pipe.Stage(k).Name() })
		},
		cloud: d.clouds.any,
		uplink: func() (*float64, *float64) {
			ack, capacity, _ := d.up.snapshot(time.Now())
			return ack, capacity
		},
	}
}

// serveMetrics serves the device's metrics on cfg.MetricsListen; it
// returns nil when they are off or the address cannot be bound (see
// metrics.Start).
func (d *device) serveMetrics() *metrics.Server {
	if d.cfg.MetricsListen == "" {
		return nil
	}
	reg := metrics.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"device": d.cfg.ID}, reg).MustRegister(newCollector(d.metricsView(), d.pipe.Name()))
	return metrics.Start(d.cfg.MetricsListen, reg, d.log, d.cfg.MetricsReady)
}

// dropReasons are the values of splitpoint_device_frames_dropped_total's
// reason.
var dropReasons = []string{DropWindowFull, DropNoCloud, DropTooLarge, DropStageError, DropEncodeError, DropResultTimeout,
	DropDisconnected, DropCloudError, DropUnanswered}

type collector struct {
	view     metricsView
	pipeline string
	set      metrics.Set

	info, captured, filtered, sent, resent, profiled, dropped       metrics.Desc
	results, duplicates, bad, sentBytes, reopens, sourceErrors      metrics.Desc
	p50, p99, inFlight, windowSize, split, target, slowdown, cloud  metrics.Desc
	stage, stageCPU, stageMeasured, boundary, overhead, ack, uplink metrics.Desc
}

func newCollector(view metricsView, pipeline string) *collector {
	c := &collector{view: view, pipeline: pipeline}
	s := &c.set
	const p = "splitpoint_device_"
	c.info = s.Gauge(p+"info", "Always 1; the device's pipeline.", "pipeline")
	c.captured = s.Counter(p+"frames_captured_total", "Frames captured: each gets a result or is dropped with a reason.")
	c.filtered = s.Counter(p+"frames_filtered_total", "Frames a local stage ended early (they still get a result, from the sink).")
	c.sent = s.Counter(p+"frames_sent_total", "Frame states handed to MQTT (resends not counted).")
	c.resent = s.Counter(p+"frames_resent_total", "Frame states published again because their result was overdue.")
	c.profiled = s.Counter(p+"frames_profiled_total", "Frames also run through every stage to profile them.")
	c.dropped = s.Counter(p+"frames_dropped_total", "Frames dropped without a result, by reason: window_full, no_cloud, too_large, stage_error, encode_error, result_timeout, disconnected, cloud_error, unanswered.", "reason")
	c.results = s.Counter(p+"results_total", "Frames whose result came back (the first copy).")
	c.duplicates = s.Counter(p+"results_duplicate_total", "Results for a frame already answered or dropped.")
	c.bad = s.Counter(p+"results_bad_total", "Malformed or foreign messages on the device's result topic.")
	c.sentBytes = s.Counter(p+"sent_bytes_total", "Bytes of the frame states published (resends not counted).")
	c.reopens = s.Counter(p+"source_reopens_total", "Reopens of a live source after it dropped.")
	c.sourceErrors = s.Counter(p+"source_errors_total", "Frames the source could not read or decode (skipped).")
	c.p50 = s.Gauge(p+"latency_p50_seconds", "Median time from capture to result over the last 65536 results (absent before the first).")
	c.p99 = s.Gauge(p+"latency_p99_seconds", "99th percentile of the time from capture to result over the last 65536 results (absent before the first).")
	c.inFlight = s.Gauge(p+"window_in_flight_frames", "Frames in flight now: captured, result not back yet.")
	c.windowSize = s.Gauge(p+"window_size_frames", "The window: frames in flight at most.")
	c.split = s.Gauge(p+"split", "Stages the device runs itself now.")
	c.target = s.Gauge(p+"target_fps", "The target frame rate the device follows (0: none), frames per second.")
	c.slowdown = s.Gauge(p+"slowdown", "The emulated slowdown factor (1: this machine's own speed).")
	c.cloud = s.Gauge(p+"cloud_online", "1 while at least one cloudproc is online.")
	c.stage = s.Gauge(p+"stage_seconds", "Time per frame of the stage on this device, emulated slowdown included: measured for the stages it runs, else estimated from its profile.", "stage")
	c.stageCPU = s.Gauge(p+"stage_cpu_seconds", "This CPU's own time per frame of the stage (without the emulated slowdown).", "stage")
	c.stageMeasured = s.Gauge(p+"stage_measured", "1 when the stage's time is measured on the frames processed now, 0 when estimated from a profile.", "stage")
	c.boundary = s.Gauge(p+"boundary_bytes", "Size of the state shipped at each split (the stages the device runs), measured or from a profile.", "split")
	c.overhead = s.Gauge(p+"overhead_seconds", "Time per frame spent outside the stages: setting up the state and encoding it.")
	c.ack = s.Gauge(p+"uplink_ack_p50_seconds", "Median publish-to-PUBACK time of recent states (absent until one was timed).")
	c.uplink = s.Gauge(p+"uplink_capacity_bytes_per_second", "The uplink's estimated capacity (absent until a large publish was timed).")
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.view.summary()
	c.info.Emit(ch, 1, c.pipeline)
	c.captured.Emit(ch, float64(s.Captured))
	c.filtered.Emit(ch, float64(s.FilteredLocal))
	c.sent.Emit(ch, float64(s.Sent))
	c.resent.Emit(ch, float64(s.Resent))
	c.profiled.Emit(ch, float64(s.Profiled))
	for _, r := range dropReasons {
		c.dropped.Emit(ch, float64(s.Dropped[r]), r)
	}
	c.results.Emit(ch, float64(s.Results))
	c.duplicates.Emit(ch, float64(s.Duplicates))
	c.bad.Emit(ch, float64(s.BadResults))
	c.sentBytes.Emit(ch, float64(s.BytesSent))
	c.reopens.Emit(ch, float64(s.SourceReopens))
	c.sourceErrors.Emit(ch, float64(s.SourceErrors))
	if s.Results > 0 {
		c.p50.Emit(ch, s.LatencyP50.Seconds())
		c.p99.Emit(ch, s.LatencyP99.Seconds())
	}
	inFlight, size := c.view.window()
	c.inFlight.Emit(ch, float64(inFlight))
	c.windowSize.Emit(ch, float64(size))
	st := c.view.state()
	c.split.Emit(ch, float64(st.Split))
	c.target.Emit(ch, st.TargetFPS)
	c.slowdown.Emit(ch, st.Slowdown)
	c.cloud.Emit(ch, metrics.Bool(c.view.cloud()))
	stages, bounds, overheadMS := c.view.figures()
	for _, f := range stages {
		if f.Source != wire.Measured && f.AgeS < 0 {
			continue // never measured nor profiled
		}
		c.stage.Emit(ch, f.DeviceMS/1000, f.Name)
		c.stageCPU.Emit(ch, f.CPUMS/1000, f.Name)
		c.stageMeasured.Emit(ch, metrics.Bool(f.Source == wire.Measured), f.Name)
	}
	for _, b := range bounds {
		if b.AgeS >= 0 {
			c.boundary.Emit(ch, b.Bytes, strconv.Itoa(b.Split))
		}
	}
	c.overhead.Emit(ch, overheadMS/1000)
	ack, capacity := c.view.uplink()
	if ack != nil {
		c.ack.Emit(ch, *ack/1000)
	}
	if capacity != nil {
		c.uplink.Emit(ch, *capacity)
	}
}
