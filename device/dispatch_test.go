package device

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// The dispatcher's tests run a device's frame path — capture loop,
// workers, publisher — without MQTT: a fake cloud takes what the
// publisher sends and answers through the device's own result handler.

// testPipe is the behaviour of the "dispatchtest" pipeline's stages, set
// by each test (tests of this package run one after another).
type testPipe struct {
	mu         sync.Mutex
	inStage    int
	maxInStage int
	// gate: the first gateN frames wait in stage "work" until gateN are in
	// it at once (several frames in the local stages at once, whatever
	// this machine's speed).
	gateN    int
	gated    int
	gateOpen chan struct{}
	fail     func(seq uint64) bool // stage "work" fails
	filter   func(seq uint64) bool // stage "work" filters
	fat      func(seq uint64) bool // stage "fat" writes 4 KiB
	sample   func()                // called in every stage
	hold     chan struct{}         // stage "work" waits until it is closed
}

var pipeHooks atomic.Pointer[testPipe]

const testPipeline = "dispatchtest"

type testOptions struct{}

func (*testOptions) Validate() error { return nil }

type testStage struct {
	name          string
	reads, writes []string
	run           func(*testPipe, *tasks.State) (tasks.Outcome, error)
}

func (s testStage) Name() string     { return s.name }
func (s testStage) Reads() []string  { return s.reads }
func (s testStage) Writes() []string { return s.writes }
func (s testStage) Process(_ context.Context, st *tasks.State) (tasks.Outcome, error) {
	h := pipeHooks.Load()
	if h != nil && h.sample != nil {
		h.sample()
	}
	return s.run(h, st)
}

func init() {
	tasks.Register(tasks.Spec{
		Name:       testPipeline,
		NewOptions: func() tasks.Options { return &testOptions{} },
		Stages: func(tasks.Options) ([]tasks.Stage, error) {
			return []tasks.Stage{
				// capture: the source's frame number becomes field v.
				testStage{"capture", []string{tasks.FieldSource}, []string{"v"}, func(_ *testPipe, st *tasks.State) (tasks.Outcome, error) {
					a, ok, err := st.Array(tasks.FieldSource)
					if !ok || err != nil || len(a.Data) != 8 {
						return 0, fmt.Errorf("bad source: %v", err)
					}
					st.Delete(tasks.FieldSource)
					st.SetNum("v", float64(binary.LittleEndian.Uint64(a.Data)))
					return tasks.Continue, nil
				}},
				testStage{"work", []string{"v"}, []string{"w"}, func(h *testPipe, st *tasks.State) (tasks.Outcome, error) {
					if h == nil {
						return tasks.Continue, nil
					}
					if h.hold != nil {
						select {
						case <-h.hold:
						case <-time.After(10 * time.Second):
							return 0, errors.New("hold never released")
						}
					}
					h.mu.Lock()
					h.inStage++
					h.maxInStage = max(h.maxInStage, h.inStage)
					var wait chan struct{}
					if h.gated < h.gateN {
						h.gated++
						wait = h.gateOpen
						if h.gated == h.gateN {
							close(h.gateOpen)
						}
					}
					h.mu.Unlock()
					defer func() { h.mu.Lock(); h.inStage--; h.mu.Unlock() }()
					if wait != nil {
						select {
						case <-wait:
						case <-time.After(5 * time.Second):
							return 0, errors.New("the gate never opened: frames do not go through the stages at once")
						}
					}
					// Frames take different times, so workers finish out of order.
					time.Sleep(time.Duration(st.Seq*7919%1500) * time.Microsecond)
					switch {
					case h.fail != nil && h.fail(st.Seq):
						return 0, errors.New("injected failure")
					case h.filter != nil && h.filter(st.Seq):
						return tasks.Filtered, nil
					}
					st.SetNum("w", 1)
					return tasks.Continue, nil
				}},
				testStage{"fat", []string{"w"}, []string{"blob"}, func(h *testPipe, st *tasks.State) (tasks.Outcome, error) {
					if h != nil && h.fat != nil && h.fat(st.Seq) {
						st.SetArray("blob", tasks.Array{DType: tasks.Uint8, Shape: []int{4096}, Data: make([]byte, 4096)})
					}
					return tasks.Continue, nil
				}},
				testStage{"sink", []string{"v", "w", "blob"}, nil, func(_ *testPipe, st *tasks.State) (tasks.Outcome, error) {
					st.SetResult([]byte(`{}`))
					return tasks.Continue, nil
				}},
			}, nil
		},
		CheckSource: func(string) error { return nil },
		OpenSource: func(context.Context, string, tasks.Options, tasks.SourceOptions) (tasks.Source, error) {
			return nil, errors.New("tests give the source directly")
		},
	})
}

// countSource yields frames 0, 1, 2, … as 8-byte arrays holding their
// number, and calls onRead with each number before returning it.
type countSource struct {
	n      uint64
	onRead func(n uint64)
}

func (s *countSource) Read(ctx context.Context) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := s.n
	s.n++
	if s.onRead != nil {
		s.onRead(n)
	}
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, n)
	return tasks.Array{DType: tasks.Uint8, Shape: []int{8}, Data: b}, nil
}

func (s *countSource) Close() error { return nil }

// fakeCloud receives what the device publishes and answers each state
// through the device's result handler, after a random delay (so results
// come back out of order), twice for the frames dup names.
type fakeCloud struct {
	d      *device
	mu     sync.Mutex
	sent   []*wire.Envelope
	answer bool
	dup    func(seq uint64) bool
	delay  time.Duration
	dups   int
	rng    *rand.Rand
	wg     sync.WaitGroup
}

type fakeMessage struct {
	topic   string
	payload []byte
}

func (fakeMessage) Duplicate() bool   { return false }
func (fakeMessage) Qos() byte         { return 1 }
func (fakeMessage) Retained() bool    { return false }
func (m fakeMessage) Topic() string   { return m.topic }
func (fakeMessage) MessageID() uint16 { return 0 }
func (m fakeMessage) Payload() []byte { return m.payload }
func (fakeMessage) Ack()              {}

func newFakeCloud(t *testing.T, d *device) *fakeCloud {
	c := &fakeCloud{d: d, answer: true, rng: rand.New(rand.NewPCG(1, 2))}
	d.clouds.set("c1", true)
	d.send = func(f *flight) {
		env, err := wire.Decode(f.payload, wire.DefaultMaxMessageBytes)
		if err != nil {
			t.Errorf("seq %d: undecodable state: %v", f.seq, err)
			return
		}
		if f.topic != wire.StageTopic(d.cfg.ID, env.Next) {
			t.Errorf("seq %d: published on %s for stage %s", f.seq, f.topic, env.Next)
		}
		c.mu.Lock()
		c.sent = append(c.sent, env)
		delay := time.Duration(c.rng.Int64N(int64(c.delay) + 1))
		times := 1
		if c.dup != nil && c.dup(env.Seq) {
			times, c.dups = 2, c.dups+1
		}
		answer := c.answer
		c.mu.Unlock()
		if !answer {
			return
		}
		res := fmt.Appendf(nil, `{"device":%q,"run":%q,"seq":%d,"split":%d}`, env.Device, env.Run, env.Seq, env.Split)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			time.Sleep(delay)
			for range times {
				d.onResult(fakeMessage{topic: wire.ResultTopic(d.cfg.ID), payload: res})
			}
		}()
	}
	return c
}

// testDevice builds a device of the dispatchtest pipeline (or another
// one) without connecting it.
func testDevice(t testing.TB, edit func(*Config)) *device {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Pipeline, cfg.Options, cfg.Split = testPipeline, nil, 3
	cfg.ProfileFrames = 0
	if edit != nil {
		edit(&cfg)
	}
	d, err := newDevice(cfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runFrames runs the frame path until the source is read cfg.Frames times
// and every frame has left the window (results back or dropped).
func runFrames(t testing.TB, d *device, ctx context.Context, src tasks.Source) error {
	t.Helper()
	stop := d.startWorkers()
	err := d.captureLoop(ctx, src)
	stop()
	wait, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !d.win.waitEmpty(wait) {
		t.Fatalf("frames still in flight: %d", d.win.inFlight())
	}
	return err
}

// maxUsed records the most window slots ever seen taken.
type maxUsed struct {
	d *device
	n atomic.Int64
}

func (m *maxUsed) sample() {
	m.d.win.mu.Lock()
	u := int64(m.d.win.used())
	m.d.win.mu.Unlock()
	for {
		old := m.n.Load()
		if u <= old || m.n.CompareAndSwap(old, u) {
			return
		}
	}
}

func TestDispatchOrderSplitsAndAccounting(t *testing.T) {
	const frames, workers = 150, 4
	d := testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window = frames, workers, 8 })
	// The split changes while frames are captured: at frames 20, 60, 100.
	changes := []struct {
		at uint64
		to int
	}{{20, 1}, {60, 2}, {100, 3}}
	splitOf := func(seq uint64) int {
		k := 3
		for _, c := range changes {
			if seq >= c.at {
				k = c.to
			}
		}
		return k
	}
	used := &maxUsed{d: d}
	h := &testPipe{gateN: workers, gateOpen: make(chan struct{}), sample: used.sample,
		fail:   func(s uint64) bool { return s%17 == 5 },
		filter: func(s uint64) bool { return s%10 == 3 },
		fat:    func(s uint64) bool { return s%19 == 7 },
	}
	pipeHooks.Store(h)
	defer pipeHooks.Store(nil)
	d.cfg.MaxMessageBytes = 2048 // a fat state is too large
	cloud := newFakeCloud(t, d)
	cloud.delay = 2 * time.Millisecond
	cloud.dup = func(s uint64) bool { return s%9 == 0 }
	src := &countSource{onRead: func(n uint64) {
		used.sample()
		for _, c := range changes {
			if c.at == n {
				d.split.Store(int64(c.to)) // as a decision would, while earlier frames are still in the stages
			}
		}
	}}
	if err := runFrames(t, d, context.Background(), src); err != nil {
		t.Fatal(err)
	}
	cloud.wg.Wait()

	// Expected fate of each frame at its split.
	want := Summary{Captured: frames, Dropped: map[string]int{}}
	for s := uint64(0); s < frames; s++ {
		k := splitOf(s)
		switch {
		case k >= 2 && s%17 == 5:
			want.Dropped[DropStageError]++
		case k >= 2 && s%10 == 3:
			want.FilteredLocal++
			want.Results++
		case k >= 3 && s%19 == 7:
			want.Dropped[DropTooLarge]++
		default:
			want.Results++
		}
	}
	got := d.stats.snapshot()
	if got.Captured != want.Captured || got.Results != want.Results || got.FilteredLocal != want.FilteredLocal ||
		got.Dropped[DropStageError] != want.Dropped[DropStageError] || got.Dropped[DropTooLarge] != want.Dropped[DropTooLarge] ||
		got.DroppedTotal() != want.DroppedTotal() {
		t.Errorf("summary %+v\nwant %+v", got, want)
	}
	if got.Captured != got.Results+got.DroppedTotal() {
		t.Errorf("captured %d ≠ results %d + dropped %d", got.Captured, got.Results, got.DroppedTotal())
	}
	if got.Duplicates != cloud.dups || got.Sent != len(cloud.sent) {
		t.Errorf("duplicates %d, want %d; sent %d, published %d", got.Duplicates, cloud.dups, got.Sent, len(cloud.sent))
	}
	// Every state carries its capture number as seq, once, at the split in
	// force when it was captured, and seq follows the capture clock.
	seen := map[uint64]*wire.Envelope{}
	for _, env := range cloud.sent {
		if seen[env.Seq] != nil {
			t.Errorf("seq %d published twice", env.Seq)
		}
		seen[env.Seq] = env
		if want := splitOf(env.Seq); env.Split != want {
			t.Errorf("seq %d ran at split %d, want %d (the split when it was captured)", env.Seq, env.Split, want)
		}
		if f, ok := env.Fields["v"]; !ok || f.Num != float64(env.Seq) {
			t.Errorf("seq %d carries frame %v: seq is not the capture order", env.Seq, f.Num)
		}
	}
	var last int64
	for s := uint64(0); s < frames; s++ {
		if env := seen[s]; env != nil {
			if env.CaptureTS < last {
				t.Errorf("seq %d captured before seq %d's predecessor", s, s)
			}
			last = env.CaptureTS
		}
	}
	if h.maxInStage < 2 || h.maxInStage > workers {
		t.Errorf("at most %d frames in the stages at once, want 2..%d", h.maxInStage, workers)
	}
	if m := used.n.Load(); m > int64(d.cfg.Window) {
		t.Errorf("%d window slots used, window %d", m, d.cfg.Window)
	}
}

// More workers than the window: the window, not the workers, bounds the
// frames between the source and their result, under both policies.
func TestDispatchNeverExceedsTheWindow(t *testing.T) {
	for _, policy := range []string{PolicyBlock, PolicyDropOldest} {
		t.Run(policy, func(t *testing.T) {
			const frames = 80
			d := testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window, c.Policy = frames, 6, 2, policy })
			used := &maxUsed{d: d}
			pipeHooks.Store(&testPipe{sample: used.sample})
			defer pipeHooks.Store(nil)
			cloud := newFakeCloud(t, d)
			cloud.delay = 3 * time.Millisecond
			inner := d.send
			d.send = func(f *flight) { used.sample(); inner(f) }
			if err := runFrames(t, d, context.Background(), &countSource{onRead: func(uint64) { used.sample() }}); err != nil {
				t.Fatal(err)
			}
			cloud.wg.Wait()
			if m := used.n.Load(); m > 2 {
				t.Errorf("%d window slots used, window 2", m)
			}
			s := d.stats.snapshot()
			if s.Captured != frames || s.Captured != s.Results+s.DroppedTotal() {
				t.Errorf("captured %d, results %d, dropped %v", s.Captured, s.Results, s.Dropped)
			}
			answered := s.Results + s.Duplicates
			if answered != len(cloud.sent) {
				t.Errorf("%d answers counted (%d results, %d duplicates), %d published", answered, s.Results, s.Duplicates, len(cloud.sent))
			}
			if policy == PolicyBlock && s.DroppedTotal() != 0 {
				t.Errorf("block dropped %v", s.Dropped)
			}
			if policy == PolicyDropOldest && s.Dropped[DropWindowFull] != s.DroppedTotal() {
				t.Errorf("drop-oldest dropped %v, want window_full only", s.Dropped)
			}
		})
	}
}

// Frames the cloud never answers are abandoned at the drain and counted;
// frames dropped for want of a cloud never reach a stage.
func TestDispatchCountsDrops(t *testing.T) {
	const frames = 30
	d := testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window, c.Policy = frames, 3, 4, PolicyDropOldest })
	var staged atomic.Int64
	pipeHooks.Store(&testPipe{sample: func() { staged.Add(1) }})
	defer pipeHooks.Store(nil)
	// No cloudproc online: every frame is dropped no_cloud at capture.
	d.send = func(*flight) { t.Error("published without a cloud") }
	stop := d.startWorkers()
	if err := d.captureLoop(context.Background(), &countSource{}); err != nil {
		t.Fatal(err)
	}
	stop()
	if s := d.stats.snapshot(); s.Captured != frames || s.Dropped[DropNoCloud] != frames || staged.Load() != 0 {
		t.Errorf("captured %d, dropped %v, %d stage runs", s.Captured, s.Dropped, staged.Load())
	}

	// A cloud that never answers: drop-oldest evicts, the drain abandons.
	d = testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window, c.Policy = frames, 3, 4, PolicyDropOldest })
	cloud := newFakeCloud(t, d)
	cloud.answer = false
	stop = d.startWorkers()
	if err := d.captureLoop(context.Background(), &countSource{}); err != nil {
		t.Fatal(err)
	}
	stop()
	for range d.win.abandon() {
		d.stats.drop(DropResultTimeout)
	}
	s := d.stats.snapshot()
	if s.Captured != frames || s.Results != 0 || s.Dropped[DropResultTimeout] != 4 || s.Dropped[DropWindowFull] != frames-4 {
		t.Errorf("captured %d, results %d, dropped %v; want %d window_full and 4 result_timeout", s.Captured, s.Results, s.Dropped, frames-4)
	}
}

// Every OpenCV matrix the source, the stages, the profile and the drops
// make is closed once, with several workers, at every split, when frames
// are dropped and when capture is cancelled (-tags matprofile counts them).
func TestDispatchClosesEveryMat(t *testing.T) {
	before := matcheck.Open()
	spec, ok := tasks.Lookup("balltrack")
	if !ok {
		t.Fatal("balltrack not registered")
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		cloud bool
		stop  int // cancel capture after this many frames
	}{
		{"split 3, profiled", func(c *Config) { c.Split, c.ProfileFrames = 3, 3 }, true, 0},
		{"split 6", func(c *Config) { c.Split = 6 }, true, 0},
		{"split 1, too large", func(c *Config) { c.Split, c.MaxMessageBytes, c.ProbeBytes = 1, 1024, 1024 }, true, 0},
		{"no cloud", func(c *Config) { c.Policy = PolicyDropOldest }, false, 0},
		{"cancelled", func(c *Config) { c.Split, c.Frames = 2, 0 }, true, 12},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := testDevice(t, func(c *Config) {
				c.Pipeline, c.Options, c.Frames, c.Workers, c.Window = "balltrack", nil, 24, 4, 6
				tc.edit(c)
			})
			if tc.cloud {
				newFakeCloud(t, d)
			}
			src, err := spec.OpenSource(context.Background(), "synthetic:?fps=0&seed=3", d.cfg.Options, tasks.SourceOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var read atomic.Int64
			counted := countingSource{src, func() {
				if read.Add(1) == int64(tc.stop) {
					cancel()
				}
			}}
			err = runFrames(t, d, ctx, counted)
			if tc.stop == 0 && err != nil || tc.stop > 0 && !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			s := d.stats.snapshot()
			if s.Captured == 0 || s.Captured != s.Results+s.DroppedTotal() {
				t.Errorf("captured %d, results %d, dropped %v", s.Captured, s.Results, s.Dropped)
			}
		})
	}
	matcheck.Assert(t, before)
}

type countingSource struct {
	tasks.Source
	after func()
}

func (c countingSource) Read(ctx context.Context) (any, error) {
	v, err := c.Source.Read(ctx)
	if err == nil {
		c.after()
	}
	return v, err
}

func TestWorkersSetting(t *testing.T) {
	for _, n := range []int{-1, MaxWorkers + 1} {
		c := DefaultConfig()
		c.Workers = n
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "workers: must be 0..64") {
			t.Errorf("workers %d: %v", n, err)
		}
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil || c.WorkerCount() < 1 {
		t.Errorf("workers 0: %v, count %d", err, c.WorkerCount())
	}
	c.Workers = 3
	if c.WorkerCount() != 3 {
		t.Errorf("workers 3: count %d", c.WorkerCount())
	}
}

// The telemetry tells the controller how many frames the device runs
// through its stages at once: its workers, no more than the CPUs Go uses.
func TestTelemetryReportsWorkers(t *testing.T) {
	for _, w := range []int{1, 2, MaxWorkers} {
		d := testDevice(t, func(c *Config) { c.Workers = w })
		now := time.Now()
		s := d.stats.counters()
		tel := d.telemetry(now, s, s, time.Second, wire.Host{})
		if want := min(w, runtime.GOMAXPROCS(0)); tel.Workers != want {
			t.Errorf("workers %d: telemetry says %d, want %d", w, tel.Workers, want)
		}
	}
}

// offline = "spool": when the cloud goes away with the window full of
// frames whose results cannot come, capture goes on (the frames move out
// of the window); frames captured offline run every stage but the sink,
// and a result completes a spooled frame like any other.
func TestDispatchSpoolsWhenTheCloudGoesAway(t *testing.T) {
	const frames = 20
	d := testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window, c.Offline = frames, 1, 2, OfflineSpool })
	cloud := newFakeCloud(t, d)
	cloud.answer = false
	d.clouds.setBridge(true)
	src := &countSource{onRead: func(n uint64) {
		if n == 1 { // frames 0 and 1 fill the window, unanswered; then the cloud goes
			go func() {
				for d.win.inFlight() < 2 {
					time.Sleep(time.Millisecond)
				}
				time.Sleep(20 * time.Millisecond) // capture waits for a slot by now
				d.clouds.set("c1", false)
			}()
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := d.startWorkers()
	err := d.captureLoop(ctx, src)
	stop()
	if err != nil {
		t.Fatalf("capture: %v (spooled %d, in flight %d)", err, d.stats.snapshot().Spooled, d.win.inFlight())
	}
	s := d.stats.snapshot()
	if n, _ := d.win.spooledSize(); s.Captured != frames || s.Spooled != frames-2 || n != frames || d.win.inFlight() != frames {
		t.Fatalf("captured %d, spooled %d (window spooled %d, in flight %d); want %d captured, all spooled", s.Captured, s.Spooled, n, d.win.inFlight(), frames)
	}
	maxSplit := d.pipe.MaxSplit()
	cloud.mu.Lock()
	offline := 0
	for _, env := range cloud.sent {
		if env.Seq >= 2 {
			offline++
			if env.Split != maxSplit {
				t.Errorf("seq %d captured offline at split %d, want %d", env.Seq, env.Split, maxSplit)
			}
		}
	}
	cloud.mu.Unlock()
	if offline != frames-2 {
		t.Errorf("%d frames sent offline, want %d", offline, frames-2)
	}
	for seq := range frames {
		d.onResult(fakeMessage{topic: wire.ResultTopic(d.cfg.ID), payload: fmt.Appendf(nil, `{"device":%q,"run":%q,"seq":%d,"split":%d}`, d.cfg.ID, d.run, seq, maxSplit)})
	}
	if s := d.stats.snapshot(); s.Results != frames || d.win.inFlight() != 0 {
		t.Errorf("after the results: %d results, %d in flight", s.Results, d.win.inFlight())
	}
}

// Profiling runs beside the frames, not in their path: with the one worker
// busy with nothing else, frames at split 1 (stage capture only) all go
// out and come back while the profiling pass of the first frame is held in
// stage "work" (before, the worker profiled the frame first, and every
// frame waited behind the pass).
func TestProfilingDoesNotHoldFrames(t *testing.T) {
	defer matcheck.Assert(t, matcheck.Open())
	const frames = 20
	d := testDevice(t, func(c *Config) { c.Frames, c.Workers, c.Window, c.Split, c.ProfileFrames = frames, 1, 4, 1, 1 })
	d.split.Store(1)
	h := &testPipe{hold: make(chan struct{})}
	pipeHooks.Store(h)
	defer pipeHooks.Store(nil)
	cloud := newFakeCloud(t, d)
	stop := d.startWorkers()
	done := make(chan error, 1)
	go func() { done <- d.captureLoop(context.Background(), &countSource{}) }()
	wait, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for d.stats.snapshot().Results < frames && wait.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	s := d.stats.snapshot()
	close(h.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stop()
	cloud.wg.Wait()
	if s.Results != frames || s.Profiled != 0 {
		t.Fatalf("while the profiling pass was held: %d of %d results, %d profiled", s.Results, frames, s.Profiled)
	}
	if s := d.stats.snapshot(); s.Profiled != 1 {
		t.Errorf("after: %d profiled, want 1", s.Profiled)
	}
}
