package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/internal/cmalloc"
	"github.com/splitpoint/splitpoint/internal/tick"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// decisionWait bounds the wait for a retained decision at start-up.
const decisionWait = 2 * time.Second

// spoolResendBurst bounds the spooled frames resent and not yet answered:
// a drained spool arrives at a cloudproc as a burst, and one that queues
// more than its per-device queue (64 by default) of a device's frames sheds
// the rest (overload); half that queue is resent at once so that the
// resends are not shed again.
const spoolResendBurst = 32

// ErrIncomplete is returned when some frame's result never came back.
var ErrIncomplete = errors.New("results missing")

// device is one running device process.
type device struct {
	cfg        Config
	log        *slog.Logger
	out        io.Writer
	run        string
	pipe       *tasks.Pipeline
	enc        tasks.Encoding
	client     *mqttc.Client
	win        *window
	stats      *stats
	clouds     *presence
	ctl        *controlState
	perf       *perf
	up         *uplink
	sourceFPS  float64
	probeTopic string
	ready      chan struct{}
	readyOne   sync.Once
	decided    chan struct{} // closed when the first decision is applied
	decidedOne sync.Once

	split    atomic.Int64
	slowdown atomic.Uint64 // math.Float64bits

	acks chan pendingAck

	// The frame path (dispatch.go): workers goroutines run the local
	// stages; jobs (capacity workers) feeds them in capture order, sends
	// (capacity window) feeds the publisher, which calls send.
	workers   int
	jobs      chan job
	sends     chan *flight
	profiles  chan profileJob // to the profiler (dispatch.go); capacity 1
	send      func(*flight)
	topics    []string // the stage topic of each stage, by index
	lastSplit int      // the capture loop's: the split of the previous frame
	spooling  bool     // the capture loop's: frames are being spooled (offline = "spool")
	// spoolProgress is when a spooled frame was last answered without a
	// resend or a cloudproc became reachable again (UnixNano): the resend
	// loop resends spooled frames only when it is resend_after old.
	spoolProgress atomic.Int64

	// cloudsFull: the bound of tracked cloudprocs was reached (logged once).
	cloudsFull atomic.Bool
	// lastProgress is when a frame was last captured or a result last came
	// back (UnixNano).
	lastProgress atomic.Int64
}

// Run runs the device until it has captured cfg.Frames frames (or the
// source ends) or ctx is done, then drains: it waits, at most
// cfg.DrainTimeout, for the result of every frame in flight. It publishes
// telemetry, follows the gateway's split decisions, writes a status line
// every cfg.StatusInterval to out and returns the summary.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) (Summary, error) {
	d, err := newDevice(cfg, out, log)
	if err != nil {
		return Summary{}, err
	}
	src, err := d.openSource(ctx)
	if err != nil {
		return Summary{}, err
	}
	defer src.Close()
	defer d.serveMetrics().Close() // nil when metrics_listen is "" (metrics.go)
	if err := d.connect(ctx); err != nil {
		return Summary{}, err
	}
	defer d.client.Close(250)
	if err := d.waitStart(ctx); err != nil {
		return d.stats.snapshot(), err
	}
	return d.runCapture(ctx, src)
}

// newDevice validates the config and builds the device.
func newDevice(cfg Config, out io.Writer, log *slog.Logger) (*device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pipe, err := tasks.Build(cfg.Pipeline, cfg.Options)
	if err != nil {
		return nil, err
	}
	enc, err := tasks.ParseEncoding(cfg.MatCodec, cfg.JPEGQuality)
	if err != nil {
		return nil, err
	}
	d := &device{
		cfg:        cfg,
		log:        log.With("device", cfg.ID),
		out:        out,
		run:        newRunID(),
		pipe:       pipe,
		enc:        enc,
		win:        newWindow(cfg.Window),
		clouds:     newPresence(),
		ctl:        newControlState(cfg),
		perf:       newPerf(pipe.StageNames()),
		up:         &uplink{},
		probeTopic: wire.ProbeTopic(cfg.ID),
		ready:      make(chan struct{}),
		decided:    make(chan struct{}),
		acks:       make(chan pendingAck, cfg.Window+16),
		workers:    cfg.WorkerCount(),
		sends:      make(chan *flight, cfg.Window),
		profiles:   make(chan profileJob, 1),
		lastSplit:  cfg.Split,
	}
	d.jobs = make(chan job, d.workers)
	d.send = d.publish
	for _, name := range pipe.StageNames() {
		d.topics = append(d.topics, wire.StageTopic(cfg.ID, name))
	}
	d.stats = newStats(cfg.ID, d.run)
	d.split.Store(int64(cfg.Split))
	d.SetSlowdown(cfg.Emulate.Slowdown)
	return d, nil
}

// openSource opens the pipeline's source and wires its counters and rate.
func (d *device) openSource(ctx context.Context) (tasks.Source, error) {
	spec, _ := tasks.Lookup(d.cfg.Pipeline) // Validate checked it
	src, err := spec.OpenSource(ctx, d.cfg.Source, d.cfg.Options, withLog(d.cfg.SourceOptions(), d.log))
	if err != nil {
		return nil, err
	}
	if c, ok := src.(tasks.SourceStats); ok {
		d.stats.source = c.Counters
	}
	if f, ok := src.(tasks.SourceRate); ok {
		d.sourceFPS = f.FPS()
	}
	return src, nil
}

// connect connects to the broker with the device's persistent session.
func (d *device) connect(ctx context.Context) error {
	cfg := d.cfg
	password, tlsConfig, warnings, err := cfg.Credentials.Load(cfg.Broker)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		d.log.Warn(w)
	}
	username := cfg.Username
	if username == "" {
		username = cfg.ID // a device's identity is its id
	}
	d.client, err = mqttc.Connect(ctx, mqttc.Options{
		Broker:   cfg.Broker,
		ClientID: wire.DeviceClientID(cfg.ID),
		Username: username,
		Password: password,
		TLS:      tlsConfig,
		Clean:    false, // results queued while we reconnect are kept for us
		Will:     &mqttc.Will{Topic: wire.StatusTopic(cfg.ID), Payload: wire.Offline, Retain: true},
		Subscriptions: map[string]byte{
			wire.ResultTopic(cfg.ID):             1,
			wire.CloudStatusFilter:               1,
			wire.ControlSplitTopic(cfg.ID):       1,
			wire.ControlSlowdownSetTopic(cfg.ID): 1,
			wire.BridgeStatusTopic:               1,
		},
		Handler: d.onMessage,
		OnReady: d.onReady,
		// While disconnected no cloudproc is known to be online: capture
		// holds (block) or drops (no_cloud), and nothing is resent, so
		// nothing piles up in paho's in-memory store.
		OnLost:         func(error) { d.clouds.clear() },
		TakeoverLimit:  mqttc.TakeoverLimitOf(cfg.TakeoverLimit),
		TakeoverWindow: cfg.TakeoverWindow.D(),
		Log:            d.log,
	})
	return err
}

// waitStart waits until the device has announced itself and, in automatic
// mode, a moment for a retained decision (so that a restarted device
// resumes the gateway's split from its first frame); then it reports
// readiness.
func (d *device) waitStart(ctx context.Context) error {
	select {
	case <-d.ready:
	case <-d.client.Done():
		return d.client.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
	if d.cfg.Mode == wire.ModeAuto {
		select {
		case <-d.decided:
		case <-time.After(decisionWait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.log.Info("device started", "run", d.run, "config", d.cfg.String(), "split", d.split.Load(), "workers", d.workers, "stages", d.pipe.StageNames(), "malloc", cmalloc.String())
	if d.cfg.Ready != nil {
		d.cfg.Ready(d.run)
	}
	return nil
}

// runCapture captures until the count, the source's end, ctx, a client that
// gives up or (in a --frames run) a stall; then drains, announces offline
// and returns the summary.
func (d *device) runCapture(ctx context.Context, src tasks.Source) (Summary, error) {
	capCtx, stopCapture := context.WithCancelCause(ctx)
	defer stopCapture(nil)
	d.progress()
	stopHelpers := d.startHelpers(stopCapture)
	defer stopHelpers()

	start := time.Now()
	stopWorkers := d.startWorkers()
	capErr := d.captureLoop(capCtx, src)
	stopWorkers() // now every captured frame is in flight or counted dropped
	if cause := context.Cause(capCtx); capErr != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		capErr = cause // the client gave up, or the run stalled
	}
	if capErr != nil && !errors.Is(capErr, context.Canceled) {
		d.log.Error("capture stopped", "error", capErr)
	}
	d.drain(capErr)
	d.stats.add(func(s *Summary) { s.Elapsed = time.Since(start) })
	if d.client.Err() == nil {
		if err := mqttc.Publish(d.client, wire.StatusTopic(d.cfg.ID), 1, true, wire.Offline); err != nil {
			d.log.Warn("could not publish offline status", "error", err)
		}
	}
	sum := d.stats.snapshot()
	switch {
	case capErr != nil && !errors.Is(capErr, context.Canceled):
		return sum, capErr
	case sum.Dropped[DropResultTimeout] > 0:
		return sum, fmt.Errorf("%w: %d frames without a result after %v", ErrIncomplete, sum.Dropped[DropResultTimeout], d.cfg.DrainTimeout.D())
	}
	return sum, nil
}

// startHelpers starts the background loops, which live until the drain is
// over: PUBACK timing, resends, telemetry, probes, the client watcher and,
// in a --frames run, the stall watcher. The returned function stops them
// and waits.
func (d *device) startHelpers(stopCapture context.CancelCauseFunc) func() {
	bg, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	helpers := []func(context.Context){d.watchAcks, d.resendLoop, d.telemetryLoop, d.probeLoop,
		func(ctx context.Context) { d.watchClient(ctx, stopCapture) }}
	if d.cfg.Frames > 0 && d.cfg.DrainTimeout.D() > 0 {
		helpers = append(helpers, func(ctx context.Context) { d.watchStall(ctx, stopCapture) })
	}
	for _, f := range helpers {
		wg.Add(1)
		go func() { defer wg.Done(); f(bg) }()
	}
	return func() { stop(); wg.Wait() }
}

// errStalled ends a --frames run in which nothing progressed.
var errStalled = errors.New("no progress")

// drain waits, at most drain_timeout, for the results of the frames in
// flight, and counts those that never come as dropped. It does not wait
// when the connection is gone for good or the run already stalled for
// drain_timeout.
func (d *device) drain(capErr error) {
	reason := DropResultTimeout
	var conflict *mqttc.IDConflictError
	switch {
	case errors.As(capErr, &conflict):
		reason = DropDisconnected
	case errors.Is(capErr, errStalled):
	default:
		drainCtx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout.D())
		go func() { // a client that gives up ends the drain
			select {
			case <-d.client.Done():
				cancel()
			case <-drainCtx.Done():
			}
		}()
		drained := d.win.waitEmpty(drainCtx)
		cancel()
		if drained {
			return
		}
		if d.client.Err() != nil {
			reason = DropDisconnected
		}
	}
	for range d.win.abandon() {
		d.stats.drop(reason)
	}
}

// withLog sets the source's logger.
func withLog(o tasks.SourceOptions, log *slog.Logger) tasks.SourceOptions {
	o.Log = log
	return o
}

// progress records that a frame was captured or a result came back.
func (d *device) progress() { d.lastProgress.Store(time.Now().UnixNano()) }

// watchClient stops capture when the client gives up its connection.
func (d *device) watchClient(ctx context.Context, stop context.CancelCauseFunc) {
	select {
	case <-d.client.Done():
		stop(d.client.Err())
	case <-ctx.Done():
	}
}

// watchStall ends a --frames run when no frame was captured and no result
// came back for drain_timeout (for example the connection is lost and the
// window is full), so that it exits with its summary instead of hanging.
func (d *device) watchStall(ctx context.Context, stop context.CancelCauseFunc) {
	limit := d.cfg.DrainTimeout.D()
	tick.Every(ctx, min(limit/4+time.Millisecond, time.Second), func(now time.Time) bool {
		idle := now.Sub(time.Unix(0, d.lastProgress.Load()))
		if idle <= limit {
			return true
		}
		stop(fmt.Errorf("%w: no frame captured and no result for %v (in flight %d, cloudproc online %v)",
			errStalled, idle.Round(time.Millisecond), d.win.inFlight(), d.clouds.any()))
		return false
	})
}

func newRunID() string { return newID() + newID()[:4] }

// SetSlowdown changes the emulated slowdown while the device runs.
func (d *device) SetSlowdown(f float64) { d.slowdown.Store(floatBits(f)) }

// onReady runs after every (re)connect once the subscriptions stand: the
// device republishes its state, announces itself and, the first time,
// sends the commands its configuration asks for.
func (d *device) onReady(c paho.Client) {
	d.publishState(c)
	if err := mqttc.Publish(c, wire.StatusTopic(d.cfg.ID), 1, true, wire.Online); err != nil {
		d.log.Warn("could not publish online status", "error", err)
		return
	}
	d.sendStartCommands(c)
	d.readyOne.Do(func() { close(d.ready) })
}

// onMessage runs on its own goroutine for every message (OrderMatters off).
func (d *device) onMessage(c paho.Client, m paho.Message) {
	topic := m.Topic()
	switch topic {
	case wire.ControlSplitTopic(d.cfg.ID):
		d.onDecision(c, m)
		return
	case wire.ControlSlowdownSetTopic(d.cfg.ID):
		d.onSlowdown(c, m)
		return
	case wire.ResultTopic(d.cfg.ID):
		d.onResult(m)
		return
	}
	if topic == wire.BridgeStatusTopic {
		// Retained while the gateway bridges; cleared (empty) without.
		d.clouds.setBridge(len(m.Payload()) > 0)
		return
	}
	if id, err := wire.ParseCloudStatusTopic(topic); err == nil {
		switch string(m.Payload()) {
		case wire.Online:
			if !d.clouds.set(id, true) && d.cloudsFull.CompareAndSwap(false, true) {
				d.log.Warn("ignoring cloudproc statuses: tracking the most cloudprocs already (logged once)", "topic", topic, "max", maxClouds)
			}
		case wire.Offline, "":
			d.clouds.set(id, false)
		default:
			d.log.Warn("ignoring malformed cloudproc status", "topic", topic, "payload", truncate(m.Payload()))
		}
		return
	}
	d.log.Warn("ignoring message on unexpected topic", "topic", topic)
}

func (d *device) onResult(m paho.Message) {
	h, err := wire.ParseResultHead(m.Payload())
	if err != nil || h.Device != d.cfg.ID {
		d.stats.add(func(s *Summary) { s.BadResults++ })
		d.log.Warn("ignoring malformed result", "topic", m.Topic(), "device", d.cfg.ID, "error", err, "payload", truncate(m.Payload()))
		return
	}
	if h.Run != d.run {
		d.stats.add(func(s *Summary) { s.BadResults++ })
		d.log.Debug("ignoring result of another run", "topic", m.Topic(), "run", h.Run)
		return
	}
	d.progress()
	done := func(f *flight) {
		if f.spooled && f.resends == 0 {
			d.spoolProgress.Store(time.Now().UnixNano())
		}
		d.stats.result(time.Since(f.captured))
	}
	if h.Error != "" {
		done = func(*flight) { d.stats.drop(DropCloudError) }
		d.log.Warn("the cloud could not process a frame; dropped", "seq", h.Seq, "error", h.Error)
	}
	if !d.win.complete(h.Seq, done) {
		d.stats.add(func(s *Summary) { s.Duplicates++ })
		d.log.Debug("result for a frame not in flight", "seq", h.Seq)
	}
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// publish hands the frame's state to paho; the ack watcher times it. The
// window, not the PUBACK, decides when the frame is done.
func (d *device) publish(f *flight) {
	d.track(d.client.Publish(f.topic, 1, false, f.payload), len(f.payload))
}

// resendLoop republishes frames whose result is overdue, for example because
// the cloudproc that took them died or the result was lost with a
// connection. cloudproc answers a resend of a frame it has answered with
// the same result again; the device counts each frame once (extra copies
// are counted as duplicates).
func (d *device) resendLoop(ctx context.Context) {
	after := d.cfg.ResendAfter.D()
	online := false
	tick.Every(ctx, after/4, func(now time.Time) bool {
		if !d.clouds.any() || !d.client.IsConnectionOpen() {
			online = false
			return true
		}
		if !online { // a cloudproc is reachable (again): the spool drains now
			online = true
			d.spoolProgress.Store(now.UnixNano())
		}
		stale, gaveUp := d.win.stale(now.Add(-after), now, d.cfg.MaxResends)
		// Spooled frames wait behind the gateway's spool: they are resent
		// only once no spooled frame was answered for resend_after, at most
		// spoolResendBurst (or a window) outstanding.
		if now.Sub(time.Unix(0, d.spoolProgress.Load())) > after {
			s, g := d.win.staleSpooled(now.Add(-after), now, max(d.cfg.Window, spoolResendBurst), d.cfg.MaxResends)
			stale, gaveUp = append(stale, s...), append(gaveUp, g...)
		}
		for _, f := range gaveUp {
			d.stats.drop(DropUnanswered)
			d.log.Warn("no result after the most resends; frame dropped", "seq", f.seq, "topic", f.topic, "max_resends", d.cfg.MaxResends)
		}
		for _, f := range stale {
			d.log.Info("result overdue; resending frame", "seq", f.seq, "topic", f.topic, "resend", f.resends)
			d.stats.add(func(s *Summary) { s.Resent++ })
			d.publish(f)
		}
		return true
	})
}
