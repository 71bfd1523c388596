package main

import (
	"fmt"
	"io"
	"math"
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
	// roundTrip is the round-trip section (-roundtrip).
	roundTrip *rtResults
	profiles  []profileResult
	elapsed   time.Duration
}

// median is the median of f over xs, leaving out NaN (not measured): 0
// for no xs, NaN when every value is NaN.
func median[T any](xs []T, f func(T) float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if y := f(x); !math.IsNaN(y) {
			v = append(v, y)
		}
	}
	if len(v) == 0 {
		return math.NaN()
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
	if r.roundTrip != nil {
		r.printRoundTrip(w)
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
		fmt.Fprintf(w, "\nMemory of each device (its peak resident set, VmHWM, and the peak of its anonymous memory, smaps_rollup sampled every %v; ru_maxrss from its rusage) and the Go heap allocations per frame of the baseline and in-process loops (the bench's process, runtime.MemStats):\n\n", memSampleEvery)
		fmt.Fprintf(w, "| mode | device peak RSS | device peak Anonymous | device ru_maxrss | Go mallocs/frame | Go bytes allocated/frame |\n")
		fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
		for _, m := range p.modes {
			s := ss[m.name]
			if m.split == 0 {
				fmt.Fprintf(w, "| %s | – | – | – | %s¹ | %s¹ |\n", m.name, count(median(s, func(s sample) float64 { return s.mallocs })),
					kib(median(s, func(s sample) float64 { return s.allocBytes })))
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | –² | –² |\n", m.name, mib(median(s, func(s sample) float64 { return float64(s.mem.peak.hwm) })),
				mib(median(s, func(s sample) float64 { return float64(s.mem.peak.anon) })), mib(median(s, func(s sample) float64 { return float64(s.maxrss) })))
		}
		if p.paced != nil {
			fmt.Fprintf(w, "\n² the device's Go allocations are measured in its paced runs (below), whose length is known in advance.\n")
		} else {
			fmt.Fprintf(w, "\n² the device's Go allocations are measured in the paced runs, not run (-paced=false).\n")
		}
	}
	fmt.Fprintf(w, "\nModes: **baseline** — one goroutine: decode (gocv.VideoCapture, or the synthetic source's frame), then exactly balltrack's OpenCV calls (resize INTER_AREA to width %d, GaussianBlur 11×11, BGR→HSV, inRange, erode ×2, dilate ×2, findContours, contourArea, minEnclosingCircle, moments); no framework, no MQTT; OpenCV's own threads (TBB, FFmpeg's decoder) may use more than one core. **baseline ×N** — N such loops at once (N = cores), each with its own capture and frames/N frames: the plain program using every core. **in-process** — the framework's pipeline (source package, tasks.Pipeline.Run over the seven stages) in the bench's process, no MQTT. **split k** — the real binaries: gateway + cloudproc c1 started once, a device per run (`--split k --frames N`, default config); the device runs stages 1..k and the cloudproc the rest; split 6 is the device's all-local mode (the device cannot run the sink: split is 1..6). Frames/s until the last result; latency capture→result (from the decoded frame); CPU from /proc/PID/stat and the device's rusage between its \"device started\" line and its exit; state bytes per frame published.\n", bWidth)
	r.printMemoryNote(w)
	if p.paced != nil {
		r.printPaced(w)
	}
	if p.stackMemOK {
		fmt.Fprintf(w, "\nThe gateway's and the cloudproc's memory at the end of the pipeline section (each ran through all of it):\n\n")
		fmt.Fprintf(w, "| process | RSS | Anonymous | peak RSS |\n|---|---:|---:|---:|\n")
		for _, x := range []struct {
			name string
			m    memInfo
		}{{pGW, p.gwMem}, {pCloud, p.cpMem}} {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", x.name, mib(float64(x.m.rss)), mib(float64(x.m.anon)), mib(float64(x.m.hwm)))
		}
	}
}

// printMemoryNote says what the memory and allocation figures count.
func (r *report) printMemoryNote(w io.Writer) {
	p := r.pipeline
	var devs []sample
	for _, in := range p.inputs {
		for _, m := range p.modes {
			if m.split > 0 {
				devs = append(devs, p.samples[in][m.name]...)
			}
		}
	}
	for _, s := range p.paced {
		devs = append(devs, s...)
	}
	var started []sample
	for _, s := range devs {
		if s.mem.atStart.rss > 0 {
			started = append(started, s)
		}
	}
	here := ""
	if len(started) > 0 {
		here = fmt.Sprintf(" (in this bench, at its \"device started\" line, source open and connected, nothing captured: RSS %s, Anonymous %s, median over %d device runs)",
			mib(median(started, func(s sample) float64 { return float64(s.mem.atStart.rss) })),
			mib(median(started, func(s sample) float64 { return float64(s.mem.atStart.anon) })), len(started))
	}
	const goAllocs = "Go allocations count the Go heap only (objects and bytes: runtime.MemStats Mallocs and TotalAlloc in the bench's process, from the frame N/10 on; the device's go_memstats_mallocs_total and go_memstats_alloc_bytes_total): OpenCV's own allocations (cv::Mat buffers, through glibc malloc) are not in them.\n"
	if memSampleEvery <= 0 {
		fmt.Fprintf(w, "\nMemory: the devices' memory was not sampled (-mem-every 0). %s", goAllocs)
		return
	}
	floor := ""
	if p.floor.rss > 0 {
		floor = fmt.Sprintf(" The floor: a Go process that links gocv and makes one OpenCV call (this bench run with -gocv-floor: one 960×540 PNG encoding, nothing else) has RSS %s, Anonymous %s — no device built on Debian 12's OpenCV 4.6 and gocv v0.31 can be below that RSS.",
			mib(float64(p.floor.rss)), mib(float64(p.floor.anon)))
	}
	fmt.Fprintf(w, "\nMemory: RSS counts ~70 MB of file-backed pages of the ~260 shared libraries Debian's OpenCV 4.6 pulls in (GDAL via imgcodecs, Qt via highgui, FFmpeg/GStreamer via videoio) — measured: an idle device that has connected but captured nothing has Rss ≈ 90 MB of which Anonymous ≈ 20 MB%s — so Anonymous is the figure the process controls.%s "+
		"Peak RSS is the kernel's high-water mark (VmHWM in /proc/PID/status, read every %v until the process exits); peak Anonymous is the largest Anonymous of /proc/PID/smaps_rollup read every %v (a shorter peak between two reads is missed; each read walks the device's mappings under its mmap lock, held for reading: -mem-every 0 turns the reads off). "+
		"ru_maxrss (the device's rusage at exit, KiB on Linux) is shown for comparison only: Go starts a child with clone(CLONE_VM|CLONE_VFORK), and at exec Linux folds the high-water mark of the memory it leaves — the bench's — into the child's maxrss, so it is at least the bench's own peak RSS at the device's start (%s at the end of this section; checked: /bin/true started by a Go process holding 300 MiB reports ru_maxrss 303 MiB). "+
		"%s",
		here, floor, memSampleEvery, memSampleEvery, mib(float64(p.benchHWM)), goAllocs)
}

func (r *report) printPaced(w io.Writer) {
	p := r.pipeline
	frames := r.opts.pacedFrames
	fmt.Fprintf(w, "\n## Paced %d fps — device source %s, %d frames per run (%v)\n\n", pacedFPS, p.pacedSource, frames, time.Duration(frames)*time.Second/pacedFPS)
	fmt.Fprintf(w, "paced %d fps: p50, p99 per split; the goal is p99 ≤ %v at every split.\n\n", pacedFPS, pacedGoal)
	fmt.Fprintf(w, "| mode | p50 latency | p99 latency | p99 ≤ %v | device cores | device peak RSS | device peak Anonymous | device Go mallocs/frame | device Go bytes allocated/frame |\n", pacedGoal)
	fmt.Fprintf(w, "|---|---:|---:|:---:|---:|---:|---:|---:|---:|\n")
	var scrapes, windows []float64
	for _, m := range p.modes {
		s, ok := p.paced[m.name]
		if !ok {
			continue
		}
		p50 := median(s, func(s sample) float64 { return s.p50.Seconds() })
		p99 := median(s, func(s sample) float64 { return s.p99.Seconds() })
		goal := "✓"
		if p99 > pacedGoal.Seconds() {
			goal = "✗"
		}
		for _, x := range s {
			if !math.IsNaN(x.scrapeMallocs) {
				scrapes = append(scrapes, x.scrapeMallocs)
				windows = append(windows, float64(x.allocFrames))
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f | %s | %s | %s | %s |\n", m.name, ms(p50), ms(p99), goal,
			median(s, func(s sample) float64 { return s.cores(pDevice) }),
			mib(median(s, func(s sample) float64 { return float64(s.mem.peak.hwm) })),
			mib(median(s, func(s sample) float64 { return float64(s.mem.peak.anon) })),
			count(median(s, func(s sample) float64 { return s.mallocs })),
			kib(median(s, func(s sample) float64 { return s.allocBytes })))
	}
	scrape, window := "?", "?"
	if len(scrapes) > 0 {
		scrape = fmt.Sprintf("%.0f", median(scrapes, func(v float64) float64 { return v }))
		window = fmt.Sprintf("%.0f", median(windows, func(v float64) float64 { return v }))
	}
	fmt.Fprintf(w, "\nThe real binaries as in the pipeline tables, the device's source paced to %d fps by the synthetic source at the AVI's size (the AVI cannot be paced: the source package reads a file as fast as the device asks, its nominal rate does not bound it); latency capture→result from the device's summary line (nearest rank over every frame of the run, the first ones included: the p99 of %d frames is their %slargest latency). Device Go allocations: its Prometheus metrics (metrics_listen = \"127.0.0.1:0\", prepended to the device's config), go_memstats_mallocs_total and go_memstats_alloc_bytes_total per captured frame between a scrape at 20%% and one at 80%% of the run (%s frames), minus one scrape's own allocations (≈%s mallocs: the median interval between %d scrapes made back to back at 20%%); they include the device's background work (telemetry, status) spread over the frames at %d fps, so a window of few frames (-quick) is noisy, by hundreds per frame, even below 0.\n", pacedFPS, frames, ordinal(frames-int(math.Ceil(0.99*float64(frames)))+1), window, scrape, pairScrapes, pacedFPS)
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

// count formats a count per frame ("–": not measured).
func count(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

// kib formats bytes per frame in KiB ("–": not measured).
func kib(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f KiB", v/1024)
}

// ordinal is "" for 1, else "2nd ", "3rd ", "4th "…
func ordinal(n int) string {
	if n <= 1 {
		return ""
	}
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return fmt.Sprintf("%d%s ", n, suffix)
}
