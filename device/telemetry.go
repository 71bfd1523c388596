package device

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/splitpoint/splitpoint/internal/hostinfo"
	"github.com/splitpoint/splitpoint/wire"
)

// telemetryLoop publishes telemetry every telemetry_interval and prints the
// status line every status_interval.
func (d *device) telemetryLoop(ctx context.Context) {
	tel := time.NewTicker(d.cfg.TelemetryInterval.D())
	defer tel.Stop()
	var status <-chan time.Time
	if d.cfg.StatusInterval > 0 {
		t := time.NewTicker(d.cfg.StatusInterval.D())
		defer t.Stop()
		status = t.C
	}
	hostinfo.Read(ctx) // prime the CPU counter
	prevT, prev := time.Now(), d.stats.counters()
	statT, statPrev := prevT, prev
	var lastHost wire.Host
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tel.C:
			s := d.stats.counters() // telemetry has its own recent percentiles
			lastHost = hostinfo.Read(ctx)
			t := d.telemetry(now, s, prev, now.Sub(prevT), lastHost)
			prev, prevT = s, now
			b, _ := json.Marshal(t)
			d.client.Publish(wire.TelemetryTopic(d.cfg.ID), 0, false, b)
		case now := <-status:
			s := d.stats.snapshot()
			dt := now.Sub(statT).Seconds()
			st := d.currentState()
			cpu := "n/a"
			if lastHost.CPUPercent != nil {
				cpu = fmt.Sprintf("%.0f%%", *lastHost.CPUPercent)
			}
			target := "none"
			if st.TargetFPS > 0 {
				target = fmt.Sprintf("%.1f", st.TargetFPS)
			}
			fmt.Fprintf(d.out, "%s fps=%.1f/%s results/s=%.1f split=%d mode=%s cpu=%s inflight=%d/%d captured=%d results=%d dropped=%d cloud=%v p50=%s\n",
				d.cfg.ID, float64(s.Captured-statPrev.Captured)/dt, target, float64(s.Results-statPrev.Results)/dt,
				st.Split, st.Mode, cpu, d.win.inFlight(), d.cfg.Window, s.Captured, s.Results, s.DroppedTotal(),
				d.clouds.any(), s.LatencyP50.Round(100*time.Microsecond))
			statPrev, statT = s, now
		}
	}
}

func (d *device) telemetry(now time.Time, s, prev Summary, dt time.Duration, host wire.Host) wire.Telemetry {
	st := d.currentState()
	t := wire.Telemetry{
		TS: now.UTC(), Device: d.cfg.ID, Run: d.run, Pipeline: d.pipe.Name(),
		TargetFPS: st.TargetFPS, Split: st.Split, Mode: st.Mode, Epoch: st.Epoch, Slowdown: st.Slowdown,
		SourceFPS: d.sourceFPS, Workers: d.parallelism(), Host: host, CloudOnline: d.clouds.any(),
	}
	if sec := dt.Seconds(); sec > 0 {
		t.FPS = round3(float64(s.Captured-prev.Captured) / sec)
		t.ResultsPerS = round3(float64(s.Results-prev.Results) / sec)
		t.Uplink.BytesPerS = float64(int64(float64(s.BytesSent-prev.BytesSent) / sec))
	}
	t.Stages, t.Boundaries, t.OverheadMS = d.perf.figures(st.Split, 3*d.cfg.TelemetryInterval.D(), now, func(k int) string { return d.pipe.Stage(k).Name() })
	t.Uplink.AckMSP50, t.Uplink.CapacityBps, t.Uplink.CapacityAge = d.up.snapshot(now)
	if p50, p99, ok := d.stats.recentLatency(); ok {
		t.LatencyMS.P50, t.LatencyMS.P99 = &p50, &p99
	}
	t.Window.InFlight, t.Window.Size = d.win.inFlight(), d.cfg.Window
	t.Window.Spooled, t.Window.SpooledBytes = d.win.spooledSize()
	t.Counters = wire.Counters{Captured: s.Captured, FilteredLocal: s.FilteredLocal, Sent: s.Sent, Resent: s.Resent,
		Results: s.Results, Duplicates: s.Duplicates, BadResults: s.BadResults, Profiled: s.Profiled, Dropped: s.Dropped,
		SourceReopens: s.SourceReopens, SourceErrors: s.SourceErrors}
	return t
}

// parallelism is the number of frames the device really runs through its
// stages at once, which the controller's model multiplies the device's
// rate by: its workers, but no more than the CPUs Go runs on (workers
// beyond them only take turns).
func (d *device) parallelism() int {
	return max(1, min(d.workers, runtime.GOMAXPROCS(0)))
}
