package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"gocv.io/x/gocv"
)

type machineInfo struct {
	cpu       string
	cores     int
	goVersion string
	opencv    string
	gocv      string
	kernel    string
	loadStart string
	loadEnd   string
}

func machine() machineInfo {
	m := machineInfo{cpu: "unknown", cores: runtime.NumCPU(), goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		opencv: gocv.OpenCVVersion(), gocv: gocv.Version(), loadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

// loadavg is the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

type report struct {
	opts     options
	machine  machineInfo
	pipeline *pipelineResults
	broker   *brokerResults
	profiles []profileResult
	elapsed  time.Duration
}

func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ratio(v, base float64) string {
	if base == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

func ms(sec float64) string { return fmt.Sprintf("%.2f ms", 1000*sec) }

func (r *report) print(w io.Writer) {
	m := r.machine
	o := r.opts
	fmt.Fprintf(w, "# splitpoint bench\n\n")
	fmt.Fprintf(w, "- machine: %s, %d cores, Linux %s; %s; OpenCV %s, gocv %s", m.cpu, m.cores, m.kernel, m.goVersion, m.opencv, m.gocv)
	if r.broker != nil && r.broker.mosquitto != "" {
		fmt.Fprintf(w, "; %s", r.broker.mosquitto)
	}
	fmt.Fprintf(w, "\n- load average (1 5 15 min): %s at the start, %s at the end — other processes share the machine\n", m.loadStart, m.loadEnd)
	fmt.Fprintf(w, "- command: %s\n", strings.Join(append([]string{"go run ./cmd/bench"}, os.Args[1:]...), " "))
	fmt.Fprintf(w, "- %d round(s), every mode interleaved in each; figures are medians, ratios are to the median of the baseline (×baseline); %v in all\n", o.rounds, r.elapsed.Round(time.Second))
	if v := os.Getenv("GLIBC_TUNABLES"); v != "" {
		fmt.Fprintf(w, "- GLIBC_TUNABLES=%s (every process inherits it)\n", v)
	}
	if r.pipeline != nil {
		r.printPipeline(w)
	}
	if r.broker != nil {
		r.printBroker(w)
	}
	if len(r.profiles) > 0 {
		printProfiles(w, r.opts.profile, r.profiles)
	}
}

func (r *report) printPipeline(w io.Writer) {
	p := r.pipeline
	for _, in := range p.inputs {
		ss := p.samples[in]
		base := ss["baseline"]
		bFPS := median(base, func(s sample) float64 { return s.fps })
		bP50 := median(base, func(s sample) float64 { return s.p50.Seconds() })
		bP99 := median(base, func(s sample) float64 { return s.p99.Seconds() })
		bCPU := median(base, func(s sample) float64 { return s.cpuTotalPerFrame() })
		frames := 0
		if len(base) > 0 {
			frames = base[0].frames
		}
		switch in {
		case inputAVI:
			fmt.Fprintf(w, "\n## Pipeline — %d×%d MJPEG AVI, %d frames (resized to %d×%d)\n\n", aviWidth, aviHeight, frames, bWidth, aviHeight*bWidth/aviWidth)
		default:
			fmt.Fprintf(w, "\n## Pipeline — synthetic source %s, %d frames (resized to %d×%d)\n\n", p.source[in], frames, bWidth, synthHeight*bWidth/synthWidth)
		}
		fmt.Fprintf(w, "| mode | frames/s | p50 latency | p99 latency | CPU/frame, all processes | state bytes/frame |\n")
		fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
		for _, m := range p.modes {
			s := ss[m.name]
			fps := median(s, func(s sample) float64 { return s.fps })
			p50 := median(s, func(s sample) float64 { return s.p50.Seconds() })
			p99 := median(s, func(s sample) float64 { return s.p99.Seconds() })
			cpu := median(s, func(s sample) float64 { return s.cpuTotalPerFrame() })
			bytes := "–"
			if m.split > 0 {
				bytes = fmt.Sprintf("%.0f", median(s, func(s sample) float64 { return s.bytes }))
			}
			fmt.Fprintf(w, "| %s | %.1f (%s) | %s (%s) | %s (%s) | %s (%s) | %s |\n", m.name,
				fps, ratio(fps, bFPS), ms(p50), ratio(p50, bP50), ms(p99), ratio(p99, bP99), ms(cpu), ratio(cpu, bCPU), bytes)
		}
		fmt.Fprintf(w, "\nCPU per frame of each process (×baseline: of the baseline's CPU per frame), the cores it used (CPU s ÷ wall s) and its minor page faults per frame:\n\n")
		fmt.Fprintf(w, "| mode | device CPU/frame | gateway CPU/frame | cloudproc CPU/frame | device cores | gateway cores | cloudproc cores | page faults/frame device / gateway / cloudproc | device workers |\n")
		fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, m := range p.modes {
			s := ss[m.name]
			if m.split == 0 {
				c := median(s, func(s sample) float64 { return s.cpuPerFrame(pBench) })
				k := median(s, func(s sample) float64 { return s.cores(pBench) })
				f := median(s, func(s sample) float64 { return s.faultsPerFrame(pBench) })
				fmt.Fprintf(w, "| %s | %s (%s)¹ | – | – | %.2f¹ | – | – | %.0f¹ | – |\n", m.name, ms(c), ratio(c, bCPU), k, f)
				continue
			}
			fmt.Fprintf(w, "| %s ", m.name)
			for _, pn := range procNames {
				c := median(s, func(s sample) float64 { return s.cpuPerFrame(pn) })
				fmt.Fprintf(w, "| %s (%s) ", ms(c), ratio(c, bCPU))
			}
			for _, pn := range procNames {
				fmt.Fprintf(w, "| %.2f ", median(s, func(s sample) float64 { return s.cores(pn) }))
			}
			var faults []string
			for _, pn := range procNames {
				faults = append(faults, fmt.Sprintf("%.0f", median(s, func(s sample) float64 { return s.faultsPerFrame(pn) })))
			}
			workers := "?"
			if len(s) > 0 && s[0].workers != "" {
				workers = s[0].workers
			}
			fmt.Fprintf(w, "| %s | %s |\n", strings.Join(faults, " / "), workers)
		}
		bd := median(base, func(s sample) float64 { return float64(s.detected) })
		id := median(ss["in-process"], func(s sample) float64 { return float64(s.detected) })
		check := "same as the framework's"
		if bd != id {
			check = fmt.Sprintf("the framework found %.0f: the baseline does not replicate it", id)
		}
		fmt.Fprintf(w, "\n¹ the bench's own process (every thread, OpenCV's included). The baseline found the ball in %.0f of %d frames (%s).\n", bd, frames, check)
	}
	fmt.Fprintf(w, "\nModes: **baseline** — one goroutine: decode (gocv.VideoCapture, or the synthetic source's frame), then exactly balltrack's OpenCV calls (resize INTER_AREA to width %d, GaussianBlur 11×11, BGR→HSV, inRange, erode ×2, dilate ×2, findContours, contourArea, minEnclosingCircle, moments); no framework, no MQTT; OpenCV's own threads (TBB, FFmpeg's decoder) may use more than one core. **baseline ×N** — N such loops at once (N = cores), each with its own capture and frames/N frames: the plain program using every core. **in-process** — the framework's pipeline (source package, tasks.Pipeline.Run over the seven stages) in the bench's process, no MQTT. **split k** — the real binaries: gateway + cloudproc c1 started once, a device per run (`--split k --frames N`, default config); the device runs stages 1..k and the cloudproc the rest; split 6 is the device's all-local mode (the device cannot run the sink: split is 1..6). Frames/s until the last result; latency capture→result (from the decoded frame); CPU from /proc/PID/stat and the device's rusage between its \"device started\" line and its exit; state bytes per frame published.\n", bWidth)
}

func (r *report) printBroker(w io.Writer) {
	b := r.broker
	fmt.Fprintf(w, "\n## Broker — paho QoS 1, %d publishes in flight, publisher → broker → one subscriber (every message counted)\n\n", b.window)
	fmt.Fprintf(w, "| message | messages | path | messages/s | MB/s | ×mosquitto | broker CPU/message | broker cores | clients cores |\n")
	fmt.Fprintf(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, size := range b.sizes {
		mq := median(b.samples[bMosquitto][size], func(s loadSample) float64 { return s.msgsPerS() })
		for _, name := range brokerNames {
			ss := b.samples[name][size]
			if len(ss) == 0 {
				why := b.skipped[name]
				if why == "" {
					why = "not run"
				}
				fmt.Fprintf(w, "| %d B | %d | %s | skipped: %s | | | | | |\n", size, b.counts[size], name, why)
				continue
			}
			rate := median(ss, func(s loadSample) float64 { return s.msgsPerS() })
			cpu, cores := "–", "–"
			if ss[0].hasCPU {
				cpu = fmt.Sprintf("%.1f µs", 1e6*median(ss, func(s loadSample) float64 { return s.cpu.Seconds() / float64(s.msgs) }))
				cores = fmt.Sprintf("%.2f", median(ss, func(s loadSample) float64 { return s.cpu.Seconds() / s.elapsed.Seconds() }))
			}
			cl := median(ss, func(s loadSample) float64 { return s.clients.Seconds() / s.elapsed.Seconds() })
			fmt.Fprintf(w, "| %d B | %d | %s | %.0f | %.1f | %s | %s | %s | %.2f |\n", size, b.counts[size], name, rate, rate*float64(size)/1e6, ratio(rate, mq), cpu, cores, cl)
		}
	}
	fmt.Fprintf(w, "\nmosquitto: started by the bench on a free loopback port (allow_anonymous, max_inflight_messages 0, max_queued_messages 10000000, persistence off). raw TCP: one loopback connection, the writer writes the messages back to back, a sink reads and counts them (no MQTT, no acknowledgement): the ceiling of the loopback path. Broker CPU is the broker process's /proc/PID/stat time (10 ms ticks) over the run; clients cores is the publisher's and subscriber's (paho, in the bench's process) CPU ÷ wall: near 1 or more, the clients, not the broker, bound the rate.\n")
}
