package device

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/tasks"
)

// BenchmarkWorkers measures the device's frame path — capture of the
// synthetic source, the ball tracker's stages, encoding, publishing —
// all-local (split 6: every stage but the sink on the device), with one
// worker and with one per CPU, and reports both rates, their ratio and
// the CPU cores the process kept busy in each (its CPU time ÷ wall time:
// OpenCV's own threads count too). The cloud is a stub that answers each
// frame as it is published. Each iteration runs benchFrames frames with
// each worker count, one after the other. It runs at this machine's speed
// (slowdown=1) and emulating a device 4× slower (slowdown=4, a Pi-class
// CPU: most of a frame's time is then spent on the worker's own thread).
//
//	go test -run '^$' -bench Workers -benchtime 5x -count 5 ./device/
func BenchmarkWorkers(b *testing.B) {
	for _, slow := range []float64{1, 4} {
		b.Run(fmt.Sprintf("slowdown=%g", slow), func(b *testing.B) { benchWorkers(b, slow) })
	}
}

func benchWorkers(b *testing.B, slowdown float64) {
	const benchFrames = 120
	cpus := runtime.NumCPU()
	var t1, tn, c1, cn time.Duration
	for b.Loop() {
		w, c := benchRun(b, 1, benchFrames, slowdown)
		t1, c1 = t1+w, c1+c
		w, c = benchRun(b, cpus, benchFrames, slowdown)
		tn, cn = tn+w, cn+c
	}
	frames := float64(b.N * benchFrames)
	f1, fn := frames/t1.Seconds(), frames/tn.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(f1, "fps_w1")
	b.ReportMetric(fn, fmt.Sprintf("fps_w%d", cpus))
	b.ReportMetric(fn/f1, "ratio")
	b.ReportMetric(c1.Seconds()/t1.Seconds(), "cores_w1")
	b.ReportMetric(cn.Seconds()/tn.Seconds(), fmt.Sprintf("cores_w%d", cpus))
}

// processCPU is the process's CPU time, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRun runs frames frames with the given workers and returns the time
// from the first capture to the last answer and the CPU time it took.
func benchRun(b *testing.B, workers, frames int, slowdown float64) (wall, cpu time.Duration) {
	b.StopTimer()
	defer b.StartTimer()
	d := testDevice(b, func(c *Config) {
		c.Pipeline, c.Options, c.Split, c.Frames, c.Workers = "balltrack", nil, 6, frames, workers
		c.Emulate.Slowdown = slowdown
	})
	d.clouds.set("c1", true)
	d.send = func(f *flight) { d.win.complete(f.seq, func(f *flight) { d.stats.result(time.Since(f.captured)) }) }
	spec, _ := tasks.Lookup("balltrack")
	src, err := spec.OpenSource(context.Background(), "synthetic:?fps=0", d.cfg.Options, tasks.SourceOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	start, cpu0 := time.Now(), processCPU()
	if err := runFrames(b, d, context.Background(), src); err != nil {
		b.Fatal(err)
	}
	wall, cpu = time.Since(start), processCPU()-cpu0
	if s := d.stats.counters(); s.Results != frames {
		b.Fatalf("%d results of %d frames: %+v", s.Results, frames, s)
	}
	return wall, cpu
}
