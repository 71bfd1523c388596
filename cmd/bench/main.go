// Command bench measures splitpoint against a plain OpenCV loop and its
// broker against mosquitto and raw TCP, and prints one markdown report of
// medians over interleaved rounds.
//
//	go run ./cmd/bench [-frames 600] [-rounds 5] [-sizes 1024,102400,562655] [-paced=false] [-paced-frames 300] [-roundtrip=false] [-rt-rate R] [-quick] [-profile DIR]
//
// Inputs: a 960×540 MJPEG AVI of the moving green ball that the bench
// writes itself (gocv VideoWriter, MJPG, into a temporary directory) and
// the synthetic source (synthetic:?fps=0, 640×480).
//
// Pipeline section, per input and round (rounds interleave every mode):
//   - baseline: one goroutine decoding with gocv.VideoCapture (or drawing
//     the synthetic frame) and making exactly balltrack's OpenCV calls with
//     its parameters — no framework, no MQTT; every ratio is to it;
//   - baseline ×N: N such loops at once (N = cores), the plain program's
//     throughput with every core busy;
//   - in-process: the framework's pipeline (tasks.Pipeline.Run over every
//     stage, source package) in this process, no MQTT;
//   - split 1..6 through the real binaries: one gateway and one cloudproc
//     for the whole bench, a new device per run (--split K --frames N);
//     split 6 is the device's all-local mode (the device always leaves the
//     sink to the cloud: split must be 1..6).
//
// For every run: frames/s until the last result, p50/p99 capture→result
// latency, CPU seconds per frame of each process (/proc/PID/stat and the
// device's rusage, from the device's "device started" line to its exit),
// cores each process used (CPU seconds ÷ wall seconds), its minor page
// faults per frame and the state bytes per frame; the device's memory: its
// peak RSS (VmHWM) and peak anonymous memory (/proc/PID/smaps_rollup read
// every 100 ms), and its rusage ru_maxrss. Baseline and in-process: the Go
// heap allocations per frame of the bench's process (runtime.MemStats).
//
// Paced runs (-paced, on by default), in every round: each split again,
// the device's source the synthetic one at 960×540 paced to 30 fps (the
// AVI cannot be paced: a file is read as fast as the device asks) for
// -paced-frames frames (300: 10 s); p50/p99 capture→result latency beside
// the 50 ms goal, the device's memory and its Go allocations per frame
// (scraped from its Prometheus metrics, metrics_listen = 127.0.0.1:0). At
// the end of the section, the gateway's and the cloudproc's memory.
//
// Broker section: paho QoS 1, a window of -window publishes in flight,
// publisher → broker → one subscriber that must receive every message,
// through the gateway, through Debian's mosquitto (started by the bench on
// a free loopback port) and over a raw loopback TCP connection.
//
// Round-trip section (-roundtrip, on by default): what every split pays per
// frame besides its stages — a 279-byte state published at QoS 1 and
// delivered, a 260-byte result published back at QoS 1 — with nothing else,
// at the goal's rate for splits 3–6 (1.3 × the AVI baseline's frames/s, or
// -rt-rate). Two processes of this binary play the device (a paced paho
// client, -rt-client) and the cloudproc (an echo, -rt-echo), through the
// gateway and through mosquitto with set_tcp_nodelay; the CPU per round
// trip of the broker and of both clients, and the goal's arithmetic: the
// CPU per frame the goal leaves beside two plain loops' OpenCV calls,
// against the round trip's.
//
// -profile DIR builds the three binaries with a CPU and allocation profile
// hook added through go build -overlay (the sources are not touched: main
// is renamed and wrapped), runs splits -profile-splits with fresh
// processes, and prints go tool pprof -top of every profile. -cpuprofile
// FILE profiles the bench's own process (baseline, in-process, clients).
//
// The processes inherit the bench's environment, so e.g.
// GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432
// applies to all of them (the report says so).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	frames      int
	rounds      int
	sizes       []int
	brokerBytes int
	brokerMax   int
	brokerMin   int
	window      int
	inputs      []string
	pipeline    bool
	broker      bool
	bin         string
	profile     string
	profSplits  []int
	splits      []int
	devConfig   string
	selfProfile string
	keep        bool
	quick       bool
	paced       bool
	pacedFrames int
	roundTrip   bool
	rtRate      float64
	rtSeconds   float64
}

func main() {
	var o options
	var sizes, inputs, profSplits, splits string
	flag.IntVar(&o.frames, "frames", 600, "frames per pipeline run (the AVI is written with this many)")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds; the report shows medians")
	flag.StringVar(&sizes, "sizes", "1024,102400,562655", "broker load message sizes in bytes (562655: the split-1 state of a 640×480 frame, 500×375×3 + CBOR)")
	flag.IntVar(&o.brokerBytes, "broker-bytes", 256<<20, "broker load: bytes per run and size (messages = bytes/size, clamped to -broker-min..-broker-max)")
	flag.IntVar(&o.brokerMax, "broker-max", 20000, "broker load: at most this many messages per run")
	flag.IntVar(&o.brokerMin, "broker-min", 200, "broker load: at least this many messages per run")
	flag.IntVar(&o.window, "window", 64, "broker load: QoS 1 publishes in flight")
	flag.StringVar(&inputs, "inputs", "avi,synthetic", "pipeline inputs: avi, synthetic")
	flag.BoolVar(&o.pipeline, "pipeline", true, "run the pipeline section")
	flag.BoolVar(&o.broker, "broker", true, "run the broker section")
	flag.StringVar(&o.bin, "bin", "", "use the gateway, device and cloudproc binaries in this directory instead of building them")
	flag.StringVar(&o.profile, "profile", "", "write CPU and allocation profiles of the three processes to this directory and print their top 10")
	flag.StringVar(&profSplits, "profile-splits", "1,3,6", "splits to profile")
	flag.StringVar(&splits, "splits", "1,2,3,4,5,6", "splits to run through the binaries")
	flag.StringVar(&o.devConfig, "device-config", "", "pass -c `FILE` to every device (e.g. workers = 1)")
	flag.StringVar(&o.selfProfile, "cpuprofile", "", "write a CPU profile of the bench's own process (the baseline and in-process loops, the broker clients) to `FILE`")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (AVI, binaries, configs)")
	flag.BoolVar(&o.paced, "paced", true, "pipeline section: also run every split with the device's source paced to 30 fps (synthetic, 960×540) for its latency, memory and Go allocations")
	flag.IntVar(&o.pacedFrames, "paced-frames", 300, "frames per paced run (300: 10 s)")
	flag.DurationVar(&memSampleEvery, "mem-every", memSampleEvery, "read each device's /proc/PID/smaps_rollup and status this often for its peak memory (0: not at all)")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 1 round, 30 frames, 30 paced frames, small broker loads (explicit flags still win)")
	flag.BoolVar(&o.roundTrip, "roundtrip", true, "run the round-trip section: a frame's two QoS 1 messages alone, through the gateway and mosquitto, at the goal's rate")
	flag.Float64Var(&o.rtRate, "rt-rate", 0, "round-trip section: round trips per second (0: 1.3 × the AVI baseline's frames/s, or 350 without it)")
	flag.Float64Var(&o.rtSeconds, "rt-seconds", 6, "round-trip section: seconds per run at the rate")
	rtEchoURL := flag.String("rt-echo", "", "internal: run as the round trip's echo client against this broker URL")
	rtClientURL := flag.String("rt-client", "", "internal: run as the round trip's paced client against this broker URL")
	rtTopic := flag.String("rt-topic", "", "internal: the round trip's topic prefix")
	rtN := flag.Int("rt-n", 0, "internal: the paced client's round trips")
	floor := flag.Bool("gocv-floor", false, "internal: print the memory of this process after one OpenCV call (a PNG encoding) and exit (the bench runs itself so for the floor of a device's RSS)")
	flag.Parse()
	if *floor {
		os.Exit(printGocvFloor())
	}
	if *rtEchoURL != "" {
		os.Exit(rtEcho(*rtEchoURL, *rtTopic))
	}
	if *rtClientURL != "" {
		os.Exit(rtClient(os.Stdout, *rtClientURL, *rtTopic, *rtN, o.rtRate))
	}
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		def("rounds", &o.rounds, 1)
		def("frames", &o.frames, 30)
		def("broker-bytes", &o.brokerBytes, 4<<20)
		def("broker-max", &o.brokerMax, 1000)
		def("broker-min", &o.brokerMin, 20)
		def("paced-frames", &o.pacedFrames, 30)
		if !set["rt-seconds"] {
			o.rtSeconds = 0.3
		}
	}
	var err error
	if o.sizes, err = parseInts(sizes); err != nil {
		fail(fmt.Errorf("-sizes: %w", err))
	}
	if o.profSplits, err = parseInts(profSplits); err != nil {
		fail(fmt.Errorf("-profile-splits: %w", err))
	}
	if o.splits, err = parseInts(splits); err != nil {
		fail(fmt.Errorf("-splits: %w", err))
	}
	for _, k := range append(o.splits, o.profSplits...) {
		if k < 1 || k > maxSplit {
			fail(fmt.Errorf("split %d: balltrack's splits are 1..%d", k, maxSplit))
		}
	}
	if o.devConfig != "" {
		if o.devConfig, err = filepath.Abs(o.devConfig); err != nil {
			fail(err)
		}
	}
	for _, in := range strings.Split(inputs, ",") {
		switch in = strings.TrimSpace(in); in {
		case inputAVI, inputSynthetic:
			o.inputs = append(o.inputs, in)
		case "":
		default:
			fail(fmt.Errorf("-inputs: unknown input %q (avi, synthetic)", in))
		}
	}
	switch {
	case o.frames < 1:
		fail(errors.New("-frames must be ≥ 1"))
	case o.rounds < 1:
		fail(errors.New("-rounds must be ≥ 1"))
	case o.window < 1:
		fail(errors.New("-window must be ≥ 1"))
	case o.roundTrip && !(o.rtRate >= 0 && o.rtRate <= 100000 && o.rtSeconds > 0 && o.rtSeconds <= 3600):
		fail(errors.New("-rt-rate must be 0..100000 and -rt-seconds in (0, 3600]"))
	case o.paced && o.pacedFrames < 1:
		fail(errors.New("-paced-frames must be ≥ 1"))
	case o.brokerMin < 1 || o.brokerMax < o.brokerMin:
		fail(errors.New("-broker-min must be ≥ 1 and ≤ -broker-max"))
	case o.pipeline && len(o.inputs) == 0:
		fail(errors.New("-inputs: none"))
	}
	for _, s := range o.sizes {
		if s < 1 || s > 100<<20 {
			fail(fmt.Errorf("-sizes: %d out of range 1..%d", s, 100<<20))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.selfProfile != "" {
		f, err := os.Create(o.selfProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	err = run(ctx, o)
	killAll()
	if err != nil {
		pprof.StopCPUProfile()
		fail(err)
	}
}

func fail(err error) {
	killAll()
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// progress writes a line to stderr: the report itself is stdout.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, o options) error {
	tmp, err := os.MkdirTemp("", "splitpoint-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	start := time.Now()
	m := machine()
	rep := &report{opts: o, machine: m}

	bin := o.bin
	if bin == "" && (o.pipeline || o.broker || o.roundTrip) {
		bin = tmp + "/bin"
		progress("building gateway, device, cloudproc into %s", bin)
		if err := buildBinaries(ctx, bin, nil); err != nil {
			return err
		}
	}

	var gw *gateway
	if o.pipeline || o.broker || o.roundTrip {
		gw, err = startStack(ctx, bin, o.pipeline)
		if err != nil {
			return err
		}
		defer gw.stop()
	}

	if o.pipeline {
		var avi string
		for _, in := range o.inputs {
			if in == inputAVI {
				avi = tmp + "/ball.avi"
				progress("writing %d frames of %dx%d MJPEG to %s", o.frames, aviWidth, aviHeight, avi)
				if err := writeAVI(avi, o.frames); err != nil {
					return err
				}
			}
		}
		res, err := runPipelines(ctx, o, bin, tmp, gw, avi)
		if err != nil {
			return err
		}
		rep.pipeline = res
	}
	if o.broker {
		res, err := runBrokers(ctx, o, tmp, gw)
		if err != nil {
			return err
		}
		rep.broker = res
	}
	if o.roundTrip {
		res, err := runRoundTrips(ctx, o, tmp, gw, rep.pipeline)
		if err != nil {
			return err
		}
		rep.roundTrip = res
	}
	if gw != nil {
		gw.stop()
	}
	if o.profile != "" {
		res, err := runProfiles(ctx, o, tmp)
		if err != nil {
			return err
		}
		rep.profiles = res
	}
	rep.machine.loadEnd = loadavg()
	rep.elapsed = time.Since(start)
	rep.print(os.Stdout)
	return nil
}
