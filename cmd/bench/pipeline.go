package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/splitpoint/splitpoint/pipelines"
	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"gocv.io/x/gocv"
)

const (
	inputAVI       = "avi"
	inputSynthetic = "synthetic"
	aviWidth       = 960
	aviHeight      = 540
	aviFPS         = 30
	synthWidth     = 640
	synthHeight    = 480
	// maxSplit is balltrack's largest split: every stage but the sink on
	// the device, the device's all-local mode.
	maxSplit = 6
)

// The process names of a run's CPU figures.
const (
	pBench  = "bench"
	pDevice = "device"
	pGW     = "gateway"
	pCloud  = "cloudproc"
)

var procNames = []string{pDevice, pGW, pCloud}

// sample is one run of one mode.
type sample struct {
	frames   int
	fps      float64
	p50, p99 time.Duration
	bytes    float64 // state bytes sent per frame
	cpu      map[string]time.Duration
	faults   map[string]int64 // minor page faults
	wall     time.Duration    // the window the CPU figures cover
	detected int              // baseline and in-process: frames with a ball
	workers  string           // device: its workers (from its start-up line)
	// Go heap allocations per frame, NaN when not measured: baseline and
	// in-process, the bench's process (runtime.MemStats, allocMeter); a
	// paced device run, the device (its metrics, devAllocs).
	mallocs, allocBytes float64
	scrapeMallocs       float64 // paced device run: one scrape's own mallocs
	allocFrames         int     // paced device run: frames the allocations cover
	mem                 memPeak // device runs: the device's memory, sampled
	maxrss              int64   // device runs: its rusage ru_maxrss, bytes
}

func (s sample) cpuPerFrame(p string) float64 {
	return s.cpu[p].Seconds() / float64(s.frames)
}

func (s sample) faultsPerFrame(p string) float64 {
	return float64(s.faults[p]) / float64(s.frames)
}

func (s sample) cpuTotalPerFrame() float64 {
	var t time.Duration
	for _, v := range s.cpu {
		t += v
	}
	return t.Seconds() / float64(s.frames)
}

func (s sample) cores(p string) float64 {
	if s.wall <= 0 {
		return 0
	}
	return s.cpu[p].Seconds() / s.wall.Seconds()
}

// mode is a row of the pipeline table.
type mode struct {
	name  string
	split int // 0: in this process
	loops int // baseline: goroutines (0: not a baseline)
}

func modes(splits []int) []mode {
	ms := []mode{{name: "baseline", loops: 1}}
	if n := runtime.NumCPU(); n > 1 {
		ms = append(ms, mode{name: fmt.Sprintf("baseline ×%d", n), loops: n})
	}
	ms = append(ms, mode{name: "in-process"})
	for _, k := range splits {
		name := fmt.Sprintf("split %d", k)
		if k == maxSplit {
			name += " (all-local)"
		}
		ms = append(ms, mode{name: name, split: k})
	}
	return ms
}

// pipelineResults: input → mode name → samples.
type pipelineResults struct {
	inputs  []string
	modes   []mode
	samples map[string]map[string][]sample
	source  map[string]string // input → the source as the device got it
	// The paced runs (-paced): the device's source, and mode name (of the
	// split modes) → samples.
	pacedSource string
	paced       map[string][]sample
	// The gateway's and the cloudproc's memory at the end of the section
	// (both ran through all of it; ok: read).
	gwMem, cpMem memInfo
	stackMemOK   bool
	// benchHWM is the bench's own peak RSS at the end of the section.
	benchHWM int64
	// floor is the memory of a process that only links gocv and makes one
	// OpenCV call (measureGocvFloor); rss 0 when not measured.
	floor memInfo
}

// The paced runs: the synthetic source at the AVI's size, paced to
// pacedFPS (the AVI cannot be paced: the source package reads a file as
// fast as the device asks), and the latency goal for them.
const (
	pacedFPS  = 30
	pacedGoal = 50 * time.Millisecond
)

func runPipelines(ctx context.Context, o options, bin, tmp string, gw *gateway, avi string) (*pipelineResults, error) {
	res := &pipelineResults{inputs: o.inputs, modes: modes(o.splits), samples: map[string]map[string][]sample{}, source: map[string]string{}}
	var pacedCfg string
	if o.paced {
		res.pacedSource = fmt.Sprintf("synthetic:?size=%dx%d&fps=%d&seed=1", aviWidth, aviHeight, pacedFPS)
		res.paced = map[string][]sample{}
		var err error
		if pacedCfg, err = pacedConfig(tmp, o.devConfig); err != nil {
			return nil, err
		}
	}
	for _, in := range o.inputs {
		res.samples[in] = map[string][]sample{}
		if in == inputAVI {
			res.source[in] = avi
		} else {
			res.source[in] = fmt.Sprintf("synthetic:?size=%dx%d&fps=0&seed=1", synthWidth, synthHeight)
		}
	}
	for r := 1; r <= o.rounds; r++ {
		for _, in := range o.inputs {
			for _, m := range res.modes {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				var s sample
				var err error
				switch {
				case m.loops > 0:
					s, err = baseline(ctx, in, avi, o.frames, m.loops)
				case m.split == 0:
					s, err = inProcess(ctx, res.source[in], o.frames)
				default:
					s, err = deviceRun(ctx, bin, gw, res.source[in], o.frames, m.split, o.devConfig, nil, 0)
				}
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %s: %w", r, in, m.name, err)
				}
				res.samples[in][m.name] = append(res.samples[in][m.name], s)
				progress("round %d/%d %-9s %-20s %7.1f frames/s  p50 %-8v cpu/frame %.2f ms", r, o.rounds, in, m.name, s.fps,
					s.p50.Round(10*time.Microsecond), 1000*s.cpuTotalPerFrame())
			}
		}
		if !o.paced {
			continue
		}
		expect := time.Duration(o.pacedFrames) * time.Second / pacedFPS
		for _, m := range res.modes {
			if m.split == 0 {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s, err := deviceRun(ctx, bin, gw, res.pacedSource, o.pacedFrames, m.split, pacedCfg, nil, expect)
			if err != nil {
				return nil, fmt.Errorf("round %d, paced %d fps, %s: %w", r, pacedFPS, m.name, err)
			}
			res.paced[m.name] = append(res.paced[m.name], s)
			progress("round %d/%d paced %d fps %-20s p50 %-8v p99 %-8v device peak Anonymous %s, %.0f Go mallocs/frame", r, o.rounds, pacedFPS, m.name,
				s.p50.Round(10*time.Microsecond), s.p99.Round(10*time.Microsecond), mib(float64(s.mem.peak.anon)), s.mallocs)
		}
	}
	if m, err := readMem(os.Getpid()); err == nil {
		res.benchHWM = m.hwm
	}
	if memSampleEvery > 0 {
		if m, err := measureGocvFloor(ctx); err != nil {
			progress("the gocv floor was not measured: %v", err)
		} else {
			res.floor = m
			progress("gocv floor: RSS %s, Anonymous %s", mib(float64(m.rss)), mib(float64(m.anon)))
		}
	}
	if m1, err1 := readMem(gw.gw.pid()); err1 == nil {
		if m2, err2 := readMem(gw.cp.pid()); err2 == nil {
			res.gwMem, res.cpMem, res.stackMemOK = m1, m2, true
		}
	}
	return res, nil
}

// writeAVI writes frames frames of the synthetic ball at 960×540 as an
// MJPEG AVI.
func writeAVI(path string, frames int) error {
	src := source.NewSynthetic(source.SyntheticOptions{Width: aviWidth, Height: aviHeight, Seed: 1, Frames: frames})
	defer src.Close()
	vw, err := gocv.VideoWriterFile(path, "MJPG", aviFPS, aviWidth, aviHeight, true)
	if err != nil {
		return fmt.Errorf("video writer: %w", err)
	}
	if !vw.IsOpened() {
		vw.Close()
		return errors.New("video writer: OpenCV cannot write MJPG AVI")
	}
	for {
		f, err := src.Read(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			vw.Close()
			return err
		}
		err = vw.Write(f)
		f.Close()
		if err != nil {
			vw.Close()
			return err
		}
	}
	return vw.Close()
}

// The algorithm's constants as balltrack has them (tasks/balltrack:
// blurSize, morphIterations, MinRadius, GreenLower, GreenUpper, width 500).
const (
	bWidth      = 500
	bBlur       = 11
	bIterations = 2
)

// baseline is the plain loop: one goroutine, the frame decoded with
// gocv.VideoCapture (or drawn by the synthetic source, as the device gets
// it), then exactly the OpenCV calls balltrack's stages make, with their
// parameters. Latency runs from the decoded frame to the result, as the
// device's capture→result latency does.
//
// With loops > 1, that many such goroutines run at once, each with its own
// capture, each taking frames/loops frames from the start of the input: the
// plain program's throughput when it uses every core the way the device's
// workers do.
func baseline(ctx context.Context, input, avi string, frames, loops int) (sample, error) {
	type out struct {
		lat      []time.Duration
		detected int
		err      error
	}
	outs := make([]out, loops)
	per := (frames + loops - 1) / loops
	var wg sync.WaitGroup
	am := newAllocMeter(frames)
	u0 := selfUsage()
	start := time.Now()
	for i := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[i]
			o.lat, o.detected, o.err = baselineLoop(ctx, input, avi, min(per, frames-i*per), am)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	u := selfUsage().sub(u0)
	mallocs, allocBytes := am.perFrame()
	var lat []time.Duration
	detected := 0
	for _, o := range outs {
		if o.err != nil {
			return sample{}, o.err
		}
		lat = append(lat, o.lat...)
		detected += o.detected
	}
	if len(lat) == 0 {
		return sample{}, errors.New("no frame decoded")
	}
	s := loopSample(lat, wall, u, detected)
	s.mallocs, s.allocBytes = mallocs, allocBytes
	return s, nil
}

func baselineLoop(ctx context.Context, input, avi string, frames int, am *allocMeter) ([]time.Duration, int, error) {
	var read func() (gocv.Mat, bool)
	switch input {
	case inputAVI:
		vc, err := gocv.VideoCaptureFile(avi)
		if err != nil {
			return nil, 0, err
		}
		defer vc.Close()
		read = func() (gocv.Mat, bool) {
			m := gocv.NewMat()
			if !vc.Read(&m) || m.Empty() {
				m.Close()
				return gocv.Mat{}, false
			}
			return m, true
		}
	default:
		src := source.NewSynthetic(source.SyntheticOptions{Width: synthWidth, Height: synthHeight, Seed: 1, Frames: frames})
		defer src.Close()
		read = func() (gocv.Mat, bool) {
			m, err := src.Read(ctx)
			return m, err == nil
		}
	}
	lat := make([]time.Duration, 0, frames)
	detected := 0
	for len(lat) < frames {
		src, ok := read()
		if !ok {
			break
		}
		t0 := time.Now()
		if baselineFrame(src) {
			detected++
		}
		lat = append(lat, time.Since(t0))
		am.frame()
	}
	return lat, detected, ctx.Err()
}

// baselineFrame runs balltrack's calls on one decoded frame, which it
// closes, and reports whether a ball was found.
func baselineFrame(src gocv.Mat) bool {
	// capture: resize to width 500, keeping the aspect.
	w, h := src.Cols(), src.Rows()
	frame := gocv.NewMat()
	gocv.Resize(src, &frame, image.Pt(bWidth, h*bWidth/w), 0, 0, gocv.InterpolationArea)
	src.Close()
	defer frame.Close()
	// hsv: Gaussian blur 11×11, BGR → HSV.
	blurred := gocv.NewMat()
	gocv.GaussianBlur(frame, &blurred, image.Pt(bBlur, bBlur), 0, 0, gocv.BorderDefault)
	hsv := gocv.NewMat()
	gocv.CvtColor(blurred, &hsv, gocv.ColorBGRToHSV)
	blurred.Close()
	// mask: inRange, erode ×2, dilate ×2 (default 3×3 kernel).
	inRange := gocv.NewMat()
	gocv.InRangeWithScalar(hsv, balltrack.GreenLower, balltrack.GreenUpper, &inRange)
	hsv.Close()
	kernel := gocv.NewMat()
	eroded := gocv.NewMat()
	gocv.ErodeWithParams(inRange, &eroded, kernel, image.Pt(-1, -1), bIterations, int(gocv.BorderConstant))
	inRange.Close()
	mask := gocv.NewMat()
	gocv.DilateWithParams(eroded, &mask, kernel, image.Pt(-1, -1), bIterations, gocv.BorderConstant, color.RGBA{})
	eroded.Close()
	kernel.Close()
	// contours: external, simple.
	pv := gocv.FindContours(mask, gocv.RetrievalExternal, gocv.ChainApproxSimple)
	contours := pv.ToPoints()
	pv.Close()
	mask.Close()
	if len(contours) == 0 {
		return false
	}
	// circle: the largest contour's enclosing circle and centroid.
	best, bestArea := -1, -1.0
	for i, c := range contours {
		v := gocv.NewPointVectorFromPoints(c)
		a := gocv.ContourArea(v)
		v.Close()
		if a > bestArea {
			best, bestArea = i, a
		}
	}
	c := contours[best]
	v := gocv.NewPointVectorFromPoints(c)
	_, _, r := gocv.MinEnclosingCircle(v)
	v.Close()
	if r <= balltrack.MinRadius {
		return false
	}
	m := gocv.NewMatWithSize(len(c), 1, gocv.MatTypeCV32SC2)
	defer m.Close()
	b, err := m.DataPtrUint8()
	if err != nil {
		return false
	}
	for i, p := range c {
		binary.NativeEndian.PutUint32(b[8*i:], uint32(int32(p.X)))
		binary.NativeEndian.PutUint32(b[8*i+4:], uint32(int32(p.Y)))
	}
	mo := gocv.Moments(m, false)
	return mo["m00"] != 0
}

// inProcess runs the framework's pipeline in this process, no MQTT: the
// source package's reader, every stage through tasks.Pipeline.Run, the sink
// even for a filtered frame (as the cloud does).
func inProcess(ctx context.Context, uri string, frames int) (sample, error) {
	p, err := tasks.Build(balltrack.Name, balltrack.DefaultOptions())
	if err != nil {
		return sample{}, err
	}
	src, err := source.Open(uri)
	if err != nil {
		return sample{}, err
	}
	defer src.Close()
	lat := make([]time.Duration, 0, frames)
	detected := 0
	am := newAllocMeter(frames)
	u0 := selfUsage()
	start := time.Now()
	for len(lat) < frames {
		f, err := src.Read(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sample{}, err
		}
		t0 := time.Now()
		s := tasks.NewState("bench", uint64(len(lat)))
		cvmat.Set(s, tasks.FieldSource, f)
		if _, err := p.Run(ctx, s, 0, p.Len()-1, nil); err != nil {
			s.Close()
			return sample{}, err
		}
		if _, err := p.Run(ctx, s, p.Len()-1, p.Len(), nil); err != nil {
			s.Close()
			return sample{}, err
		}
		var r struct {
			Detected bool `json:"detected"`
		}
		if err := json.Unmarshal(s.Result(), &r); err != nil {
			s.Close()
			return sample{}, fmt.Errorf("result: %w", err)
		}
		if r.Detected {
			detected++
		}
		s.Close()
		lat = append(lat, time.Since(t0))
		am.frame()
	}
	wall := time.Since(start)
	u := selfUsage().sub(u0)
	mallocs, allocBytes := am.perFrame()
	if len(lat) == 0 {
		return sample{}, errors.New("no frame read")
	}
	out := loopSample(lat, wall, u, detected)
	out.mallocs, out.allocBytes = mallocs, allocBytes
	return out, nil
}

func loopSample(lat []time.Duration, wall time.Duration, u usage, detected int) sample {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return sample{
		frames: len(lat), fps: float64(len(lat)) / wall.Seconds(),
		p50: lat[len(lat)/2], p99: lat[min(len(lat)-1, len(lat)*99/100)],
		cpu: map[string]time.Duration{pBench: u.cpu}, faults: map[string]int64{pBench: u.faults}, wall: wall, detected: detected,
		mallocs: math.NaN(), allocBytes: math.NaN(), scrapeMallocs: math.NaN(),
	}
}

var (
	summaryRe = regexp.MustCompile(`summary device=\S+ run=\S+ captured=(\d+) filtered_local=(\d+) sent=(\d+) resent=(\d+) results=(\d+) dropped=(\d+) \[([^\]]*)\] duplicates=(\d+) bad_results=(\d+) fps=([0-9.]+) latency_p50=(\S+) latency_p99=(\S+) bytes_sent=(\d+)`)
	workersRe = regexp.MustCompile(`\bsplit=\d+ workers=(\d+)`)
)

// deviceRun runs one device to completion (--frames) at split k against the
// running gateway and cloudproc, and measures the three processes' CPU
// time from the device's "device started" line (just before its first
// capture) to its exit, and the device's memory (sampled every
// memSampleEvery from its start to its exit, and its rusage).
//
// With expect > 0 (a paced run, whose capture takes about expect), config
// must set metrics_listen: the device's metrics are scraped during the run
// for its Go allocations per frame (scrapeAllocs).
func deviceRun(ctx context.Context, bin string, gw *gateway, src string, frames, k int, config string, env []string, expect time.Duration) (sample, error) {
	type snap struct {
		t        time.Time
		dev      usage
		gw, cp   usage
		workers  string
		err      error
		captured bool
	}
	var mu sync.Mutex
	var s0 snap
	var metricsAddr string
	started := make(chan struct{})
	var devPID int
	var mem *memSampler
	pidSet := make(chan struct{})
	var allocs devAllocs
	var allocsErr error
	allocsDone := make(chan struct{})
	var d *proc
	watch := func(isErr bool, line string) {
		if !isErr {
			return
		}
		if strings.Contains(line, "metrics listening") {
			if m := metricsAddrRe.FindStringSubmatch(line); m != nil {
				mu.Lock()
				metricsAddr = m[1]
				mu.Unlock()
			}
			return
		}
		if !containsStarted(line) {
			return
		}
		<-pidSet
		mu.Lock()
		defer mu.Unlock()
		if s0.captured {
			return
		}
		s0.captured = true
		s0.t = time.Now()
		var e1, e2, e3 error
		s0.dev, e1 = procUsage(devPID)
		s0.gw, e2 = procUsage(gw.gw.pid())
		s0.cp, e3 = procUsage(gw.cp.pid())
		s0.err = errors.Join(e1, e2, e3)
		if m := workersRe.FindStringSubmatch(line); m != nil {
			s0.workers = m[1]
		}
		mem.mark(devPID)
		if expect > 0 {
			t0 := s0.t
			go func() {
				defer close(allocsDone)
				addr := func() string { mu.Lock(); defer mu.Unlock(); return metricsAddr }
				allocs, allocsErr = scrapeAllocs(ctx, addr, t0, expect, d.done)
			}()
		}
		close(started)
	}
	args := []string{"--broker", gw.broker(), "--id", "pi1", "--source", src, "--frames", strconv.Itoa(frames), "--split", strconv.Itoa(k)}
	if config != "" {
		args = append([]string{"-c", config}, args...)
	}
	d, err := startProc("device", env, watch, filepath.Join(bin, "device"), args...)
	if err != nil {
		return sample{}, err
	}
	devPID = d.pid()
	mem = sampleMem(devPID, d.done)
	close(pidSet)
	werr := d.wait(ctx, 10*time.Minute)
	gw1, e2 := procUsage(gw.gw.pid())
	cp1, e3 := procUsage(gw.cp.pid())
	peak := mem.result()
	if werr != nil {
		return sample{}, fmt.Errorf("device: %v\nstdout:\n%s\nstderr:\n%s", werr, tail(d.stdout()), tail(d.stderr()))
	}
	if err := errors.Join(e2, e3); err != nil {
		return sample{}, err
	}
	select {
	case <-started:
	default:
		return sample{}, fmt.Errorf("device never logged \"device started\":\n%s", tail(d.stderr()))
	}
	mu.Lock()
	defer mu.Unlock()
	if s0.err != nil {
		return sample{}, s0.err
	}
	m := summaryRe.FindStringSubmatch(d.stdout())
	if m == nil {
		return sample{}, fmt.Errorf("no summary line in the device's output:\n%s", tail(d.stdout()))
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	captured, sent, results, dropped := n(1), n(3), n(5), n(6)
	if dropped != 0 || results != captured || captured == 0 {
		return sample{}, fmt.Errorf("device lost frames: %s", m[0])
	}
	fps, _ := strconv.ParseFloat(m[10], 64)
	p50, err1 := time.ParseDuration(m[11])
	p99, err2 := time.ParseDuration(m[12])
	if err := errors.Join(err1, err2); err != nil {
		return sample{}, fmt.Errorf("summary latencies: %w", err)
	}
	bytesSent, _ := strconv.ParseFloat(m[13], 64)
	bpf := 0.0
	if sent > 0 {
		bpf = bytesSent / float64(sent)
	}
	mallocs, allocBytes, scrapeMallocs, allocFrames := math.NaN(), math.NaN(), math.NaN(), 0
	if expect > 0 {
		<-allocsDone
		if allocsErr != nil {
			progress("split %d: no allocations per frame for the device: %v", k, allocsErr)
		} else {
			mallocs, allocBytes, scrapeMallocs, allocFrames = allocs.mallocs, allocs.bytes, allocs.scrape, allocs.frames
		}
	}
	var maxrss int64
	if ru, ok := d.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxrss = ru.Maxrss << 10 // KiB on Linux
	}
	return sample{
		frames: captured, fps: fps, p50: p50, p99: p99, bytes: bpf,
		cpu: map[string]time.Duration{
			pDevice: d.exitedUsage().sub(s0.dev).cpu,
			pGW:     gw1.sub(s0.gw).cpu,
			pCloud:  cp1.sub(s0.cp).cpu,
		},
		faults: map[string]int64{
			pDevice: d.exitedUsage().sub(s0.dev).faults,
			pGW:     gw1.sub(s0.gw).faults,
			pCloud:  cp1.sub(s0.cp).faults,
		},
		wall:    d.exited.Sub(s0.t),
		workers: s0.workers,
		mallocs: mallocs, allocBytes: allocBytes, scrapeMallocs: scrapeMallocs, allocFrames: allocFrames,
		mem: peak, maxrss: maxrss,
	}, nil
}

// containsStarted: the device's log line (text or JSON) just before its
// first capture.
func containsStarted(line string) bool { return strings.Contains(line, "device started") }
