package cloudproc

import (
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/splitpoint/splitpoint/internal/metrics"
)

// cloudproc's Prometheus metrics (metrics_listen). The collector reads, at
// scrape time, the counters cloudproc keeps anyway (Stats, the queue, the
// smoothed stage times of its telemetry) and the few figures kept for the
// metrics alone (metricsState). The one histogram, the stages' times, is
// fed where each stage's time is measured (observe).

// stageBuckets are the stage-time histogram's buckets, seconds: 50 µs to
// 5 s (balltrack's cloud stages take 0.01 to 2 ms on a PC; an emulated
// slowdown or a slow host multiplies them).
var stageBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// rejectReasons are the values of splitpoint_cloudproc_rejected_total's
// reason.
var rejectReasons = []string{RejectBadTopic, RejectBadState, RejectWrongDevice, RejectUnknownPipeline, RejectUnknownStage,
	RejectTooLarge, RejectStageError, ShedOverload, FailedPublish}

// metricsState is what cloudproc keeps for its metrics alone; guarded by
// proc.mu.
type metricsState struct {
	// devices holds each device's (site and id) answered frames, at most
	// maxTrackedDevices; past that the entries not heard from for
	// forgetAfter make room, else a new device is not tracked.
	devices     map[string]*deviceCounts
	forgetAfter time.Duration
	// busy is the workers' busy time since the start.
	busy time.Duration
	// utilisation is the workers' busy fraction over the last telemetry
	// period.
	utilisation float64
	// stages is the stage-time histogram; nil while the metrics are off.
	// Set before the workers start.
	stages *prometheus.HistogramVec
}

// deviceCounts are one device's figures for the metrics.
type deviceCounts struct {
	results int64     // results published (error results not counted)
	heard   time.Time // when a frame of it was last answered
}

// answered counts a frame of device answered at now, with a result (ok)
// or an error result.
func (m *metricsState) answered(device string, ok bool, now time.Time) {
	c := m.devices[device]
	if c == nil {
		if m.devices == nil {
			m.devices = map[string]*deviceCounts{}
		}
		if len(m.devices) >= maxTrackedDevices {
			maps.DeleteFunc(m.devices, func(_ string, c *deviceCounts) bool { return now.Sub(c.heard) > m.forgetAfter })
			if len(m.devices) >= maxTrackedDevices {
				return
			}
		}
		c = &deviceCounts{}
		m.devices[device] = c
	}
	c.heard = now
	if ok {
		c.results++
	}
}

// observeStage records one stage's time on one frame.
func (m *metricsState) observeStage(stage string, d time.Duration) {
	if m.stages != nil {
		m.stages.WithLabelValues(stage).Observe(d.Seconds())
	}
}

// serveMetrics serves the metrics on cfg.MetricsListen; it returns nil
// when they are off or the address cannot be bound (see metrics.Start).
// It is called before the workers start.
func (p *proc) serveMetrics() *metrics.Server {
	if p.cfg.MetricsListen == "" {
		return nil
	}
	p.mx.stages = newStageHistogram()
	reg := metrics.NewRegistry()
	reg.MustRegister(newCollector(p.metricsView, time.Now, p.cfg.MetricsMaxDevices, p.cfg.MetricsForgetAfter.D()), p.mx.stages)
	return metrics.Start(p.cfg.MetricsListen, reg, p.log, p.cfg.MetricsReady)
}

func newStageHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "splitpoint_cloudproc_stage_duration_seconds",
		Help:    "Time of each stage run here on one frame, over all devices, emulated slowdown included.",
		Buckets: stageBuckets,
	}, []string{"stage"})
}

// procView is what the collector reads: a consistent copy.
type procView struct {
	Stats       Stats
	Queued      int
	Workers     int
	Busy        time.Duration
	Utilisation float64
	Devices     map[string]deviceView
}

// deviceView is one device's figures.
type deviceView struct {
	Results int64
	Heard   time.Time
	// StagesMS is the smoothed time per frame of each stage, ms.
	StagesMS map[string]float64
}

// metricsView copies what the metrics show.
func (p *proc) metricsView() procView {
	v := procView{Stats: p.snapshot(), Queued: p.queue.len(), Workers: p.cfg.workers()}
	p.mu.Lock()
	defer p.mu.Unlock()
	v.Busy, v.Utilisation = p.mx.busy, p.mx.utilisation
	v.Devices = make(map[string]deviceView, len(p.mx.devices))
	for k, c := range p.mx.devices {
		v.Devices[k] = deviceView{Results: c.results, Heard: c.heard, StagesMS: maps.Clone(p.perf[k])}
	}
	return v
}

type collector struct {
	view        func() procView
	now         func() time.Time
	maxDevices  int
	forgetAfter time.Duration
	set         metrics.Set

	received, results, duplicates, replayed, rejected metrics.Desc
	queued, workers, busy, utilisation, omitted       metrics.Desc
	devResults, devStage, devHeard                    metrics.Desc
}

func newCollector(view func() procView, now func() time.Time, maxDevices int, forgetAfter time.Duration) *collector {
	c := &collector{view: view, now: now, maxDevices: maxDevices, forgetAfter: forgetAfter}
	s := &c.set
	const p = "splitpoint_cloudproc_"
	c.received = s.Counter(p+"received_total", "Stage messages received.")
	c.results = s.Counter(p+"results_total", "Results published (error results and replays not counted).")
	c.duplicates = s.Counter(p+"duplicates_total", "Stage messages for a frame being processed or already answered.")
	c.replayed = s.Counter(p+"replayed_total", "Remembered results published again for a resent frame.")
	c.rejected = s.Counter(p+"rejected_total", "Stage messages that yielded no result, or an error result, by reason: bad_topic, bad_state, wrong_device, unknown_pipeline, unknown_stage, too_large, stage_error, overload (the device's queue was full), publish_failed.", "reason")
	c.queued = s.Gauge(p+"queued_frames", "Frames waiting for a worker now, over all devices.")
	c.workers = s.Gauge(p+"workers", "Frames processed in parallel.")
	c.busy = s.Counter(p+"busy_seconds_total", "Time the workers spent on frames; its rate divided by workers is the utilisation.")
	c.utilisation = s.Gauge(p+"utilisation_ratio", "The workers' busy fraction over the last telemetry period (0..1).")
	c.omitted = s.Gauge(p+"metrics_omitted_devices", "Devices heard from within metrics_forget_after that have no per-device series because of metrics_max_devices.")
	c.devResults = s.Counter(p+"device_results_total", "Results published for the device (site prefix and id under a topic_prefix).", "device")
	c.devStage = s.Gauge(p+"device_stage_seconds", "Smoothed time per frame of the stage for the device (as in the telemetry), emulated slowdown included.", "device", "stage")
	c.devHeard = s.Gauge(p+"device_last_heard_timestamp_seconds", "When a frame of the device was last answered, Unix time.", "device")
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect implements prometheus.Collector. Devices not heard from for
// forgetAfter have no series, and at most maxDevices have.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.view()
	s := v.Stats
	c.received.Emit(ch, float64(s.Received))
	c.results.Emit(ch, float64(s.Results))
	c.duplicates.Emit(ch, float64(s.Duplicates))
	c.replayed.Emit(ch, float64(s.Replayed))
	for _, r := range rejectReasons {
		c.rejected.Emit(ch, float64(s.Rejected[r]), r)
	}
	c.queued.Emit(ch, float64(v.Queued))
	c.workers.Emit(ch, float64(v.Workers))
	c.busy.Emit(ch, v.Busy.Seconds())
	c.utilisation.Emit(ch, v.Utilisation)
	heard := make([]metrics.Heard, 0, len(v.Devices))
	for k, d := range v.Devices {
		heard = append(heard, metrics.Heard{Key: k, At: d.Heard})
	}
	keep, omitted := metrics.Select(heard, c.now(), c.maxDevices, c.forgetAfter)
	c.omitted.Emit(ch, float64(omitted))
	for _, i := range keep {
		k := heard[i].Key
		d := v.Devices[k]
		c.devResults.Emit(ch, float64(d.Results), k)
		c.devHeard.Emit(ch, float64(d.Heard.UnixNano())/1e9, k)
		for stage, ms := range d.StagesMS {
			c.devStage.Emit(ch, ms/1000, k, stage)
		}
	}
}
