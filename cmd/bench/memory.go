package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"
)

// memSampleEvery is how often a device's memory is sampled while it runs
// (-mem-every; 0: not sampled).
var memSampleEvery = 100 * time.Millisecond

// memInfo is a process's memory in bytes: from /proc/PID/smaps_rollup its
// resident set (Rss) and the anonymous part of it (Anonymous: heaps,
// stacks, anonymous mmaps — what the process allocated, not the pages of
// the files it maps), and from /proc/PID/status its resident high-water
// mark (VmHWM, kept by the kernel).
type memInfo struct {
	rss, anon, hwm int64
}

// readMem reads a running process's memory. A field the kernel did not
// give (a zombie has no mm) is 0.
func readMem(pid int) (memInfo, error) {
	var m memInfo
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/smaps_rollup")
	if err != nil {
		return m, err
	}
	m.rss = kBField(b, "Rss:")
	m.anon = kBField(b, "Anonymous:")
	if b, err := os.ReadFile(dir + "/status"); err == nil {
		m.hwm = kBField(b, "VmHWM:")
	}
	return m, nil
}

// kBField is the value of a "Name:   1234 kB" line in bytes (0: absent).
func kBField(b []byte, name string) int64 {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) == 0 {
			return 0
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			v <<= 10
		}
		return v
	}
	return 0
}

// memPeak is what a memSampler kept: the maxima over the samples, the
// first sample taken at or after mark (the device's "device started": it
// has connected and captured nothing yet) and the number of samples.
type memPeak struct {
	peak    memInfo
	atStart memInfo
	samples int
}

// memSampler samples a process's memory every memSampleEvery until done is
// closed.
type memSampler struct {
	mu     sync.Mutex
	p      memPeak
	marked atomic.Bool
	got    bool // atStart is set
	end    chan struct{}
}

func sampleMem(pid int, done <-chan struct{}) *memSampler {
	s := &memSampler{end: make(chan struct{})}
	if memSampleEvery <= 0 {
		close(s.end)
		return s
	}
	go func() {
		defer close(s.end)
		t := time.NewTicker(memSampleEvery)
		defer t.Stop()
		for {
			s.sample(pid)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *memSampler) sample(pid int) {
	m, err := readMem(pid)
	if err != nil || m.rss == 0 { // not started yet, or exited
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.samples++
	s.p.peak.rss = max(s.p.peak.rss, m.rss)
	s.p.peak.anon = max(s.p.peak.anon, m.anon)
	s.p.peak.hwm = max(s.p.peak.hwm, m.hwm)
	if s.marked.Load() && !s.got {
		s.got = true
		s.p.atStart = m
	}
}

// mark asks for the next sample to be kept as atStart; pid is sampled at
// once.
func (s *memSampler) mark(pid int) {
	if memSampleEvery <= 0 {
		return
	}
	s.marked.Store(true)
	s.sample(pid)
}

// result waits for the sampler to end (done closed) and returns what it
// kept.
func (s *memSampler) result() memPeak {
	<-s.end
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// allocMeter counts the Go heap allocations of the bench's own process
// over a run's steady state: from the frame warm (a tenth of the run) to
// the end, with runtime.ReadMemStats (Mallocs: objects allocated,
// TotalAlloc: bytes). The loops call frame after each frame; with several
// loops, frames in flight at the mark are counted approximately.
type allocMeter struct {
	warm   int64
	n      atomic.Int64
	once   sync.Once
	m0     runtime.MemStats
	n0     int64
	marked atomic.Bool
}

func newAllocMeter(frames int) *allocMeter {
	a := &allocMeter{warm: int64(frames / 10)}
	if a.warm == 0 {
		a.start(0)
	}
	return a
}

func (a *allocMeter) start(n int64) {
	a.once.Do(func() {
		runtime.ReadMemStats(&a.m0)
		a.n0 = n
		a.marked.Store(true)
	})
}

func (a *allocMeter) frame() {
	if n := a.n.Add(1); n == a.warm {
		a.start(n)
	}
}

// perFrame returns the mallocs and bytes allocated per frame since the
// mark (NaN if no frame came after it).
func (a *allocMeter) perFrame() (mallocs, bytes float64) {
	if !a.marked.Load() {
		return math.NaN(), math.NaN()
	}
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	n := a.n.Load() - a.n0
	if n <= 0 {
		return math.NaN(), math.NaN()
	}
	return float64(m1.Mallocs-a.m0.Mallocs) / float64(n), float64(m1.TotalAlloc-a.m0.TotalAlloc) / float64(n)
}

// The device's metrics the paced runs scrape.
const (
	mMallocs  = "go_memstats_mallocs_total"
	mBytes    = "go_memstats_alloc_bytes_total"
	mCaptured = "splitpoint_device_frames_captured_total"
)

// metricsAddrRe finds the address in the device's "metrics listening" log
// line, text (addr=127.0.0.1:40000) or JSON ("addr":"127.0.0.1:40000").
var metricsAddrRe = regexp.MustCompile(`"?\baddr"?[=:]"?([0-9A-Za-z.:\[\]-]+)`)

// scrape reads the device's /metrics once and returns the values of the
// series named in mMallocs, mBytes and mCaptured (labels ignored: the
// device's registry has one series of each). It asks for no compression
// (gzip would add its own allocations to the device's).
func scrape(ctx context.Context, c *http.Client, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		switch name {
		case mMallocs, mBytes, mCaptured:
			// name[{labels}] value [timestamp]: the value follows the
			// labels, whose values may hold spaces.
			f := strings.Fields(line[max(len(name), strings.LastIndexByte(line, '}')+1):])
			if len(f) == 0 {
				continue
			}
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[name] = v
			}
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range []string{mMallocs, mBytes, mCaptured} {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("no %s in the device's metrics", n)
		}
	}
	return out, nil
}

// devAllocs is the device's Go heap allocations per frame over a paced
// run's middle, from its Prometheus metrics: pairScrapes scrapes back to
// back at 20% of the run, one more at 80%. Each interval between two
// scrapes also holds one scrape's own allocations s (the end of the first,
// the start of the second; it varies, the collectors running in parallel):
// with m per frame, the window from the last early scrape to the late one
// holds s + m·f frames, and each back-to-back interval i holds s + m·f_i
// (f_i mostly 0). s is the median over the back-to-back intervals, less
// their frames, and m the rest of the window per frame.
type devAllocs struct {
	mallocs, bytes float64 // per frame
	scrape         float64 // one scrape's own mallocs
	frames         int     // frames in the window
}

// pairScrapes is how many scrapes are made back to back at 20% of a paced
// run: pairScrapes-1 intervals to estimate a scrape's own allocations.
const pairScrapes = 4

// scrapeAllocs scrapes the device at addr() as devAllocs says, the run's
// capture taking about expect from t0; it gives up when done is closed.
func scrapeAllocs(ctx context.Context, addr func() string, t0 time.Time, expect time.Duration, done <-chan struct{}) (devAllocs, error) {
	wait := func(at time.Time) error {
		t := time.NewTimer(time.Until(at))
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-done:
			return errors.New("the device exited before the scrape")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	if err := wait(t0.Add(expect / 5)); err != nil {
		return devAllocs{}, err
	}
	a := addr()
	if a == "" {
		return devAllocs{}, errors.New("the device did not log its metrics address")
	}
	var v [pairScrapes + 1]map[string]float64
	for i := range v {
		if i == pairScrapes {
			if err := wait(t0.Add(expect * 4 / 5)); err != nil {
				return devAllocs{}, err
			}
		}
		var err error
		if v[i], err = scrape(ctx, c, a); err != nil {
			return devAllocs{}, err
		}
	}
	d := func(i int, n string) float64 { return v[i+1][n] - v[i][n] }
	win := pairScrapes - 1
	f := d(win, mCaptured)
	if f < 1 {
		return devAllocs{}, errors.New("no frame between the scrapes")
	}
	// perFrame solves for m and s of the series n (two rounds: the
	// back-to-back intervals hold few frames, if any).
	perFrame := func(n string) (m, s float64) {
		for range 2 {
			rest := make([]float64, win)
			for i := range win {
				rest[i] = d(i, n) - m*d(i, mCaptured)
			}
			s = median(rest, func(x float64) float64 { return x })
			m = (d(win, n) - s) / f
		}
		return m, s
	}
	r := devAllocs{frames: int(f)}
	r.mallocs, r.scrape = perFrame(mMallocs)
	r.bytes, _ = perFrame(mBytes)
	return r, nil
}

// pacedConfig writes the device configuration of the paced runs into dir:
// the user's -device-config (if any) with metrics_listen = "127.0.0.1:0"
// put first, unless it sets metrics_listen itself.
func pacedConfig(dir, user string) (string, error) {
	var b []byte
	if user != "" {
		var err error
		if b, err = os.ReadFile(user); err != nil {
			return "", err
		}
		if regexp.MustCompile(`(?m)^\s*metrics_listen\s*=`).Match(b) {
			return user, nil
		}
	}
	path := dir + "/paced-device.toml"
	b = append([]byte("# written by cmd/bench for the paced runs\nmetrics_listen = \"127.0.0.1:0\"\n\n"), b...)
	return path, os.WriteFile(path, b, 0o644)
}

// mib formats bytes in MiB ("–": not measured).
func mib(b float64) string {
	if b <= 0 || math.IsNaN(b) {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", b/(1<<20))
}

// printGocvFloor is the bench run with -gocv-floor: it encodes one 960×540
// frame as PNG (the libraries Debian's OpenCV 4.6 links are loaded at
// start; the call makes OpenCV initialise), then prints its Rss and
// Anonymous in bytes on one line and returns the exit code.
func printGocvFloor() int {
	m := gocv.NewMatWithSize(aviHeight, aviWidth, gocv.MatTypeCV8UC3)
	defer m.Close()
	buf, err := gocv.IMEncode(gocv.PNGFileExt, m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocv floor:", err)
		return 1
	}
	buf.Close()
	mi, err := readMem(os.Getpid())
	if err != nil {
		fmt.Fprintln(os.Stderr, "gocv floor:", err)
		return 1
	}
	fmt.Println(mi.rss, mi.anon)
	return 0
}

// measureGocvFloor runs the bench's own binary with -gocv-floor: the memory
// of a Go process that links gocv v0.31 (so every library Debian's OpenCV
// 4.6 pulls in) and does nothing else — the floor under a device's RSS.
func measureGocvFloor(ctx context.Context) (memInfo, error) {
	exe, err := os.Executable()
	if err != nil {
		return memInfo{}, err
	}
	out, err := exec.CommandContext(ctx, exe, "-gocv-floor").Output()
	if err != nil {
		return memInfo{}, fmt.Errorf("%s -gocv-floor: %w", exe, err)
	}
	var m memInfo
	if _, err := fmt.Sscan(string(out), &m.rss, &m.anon); err != nil {
		return memInfo{}, fmt.Errorf("%s -gocv-floor printed %q: %w", exe, out, err)
	}
	return m, nil
}
