package cloudproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/emulate"
	"github.com/splitpoint/splitpoint/internal/cmalloc"
	"github.com/splitpoint/splitpoint/internal/gctune"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

// Reasons a stage message is rejected or shed. Each is counted and logged
// with its topic and device.
const (
	RejectBadTopic        = "bad_topic"
	RejectBadState        = "bad_state"
	RejectWrongDevice     = "wrong_device"
	RejectUnknownPipeline = "unknown_pipeline"
	RejectUnknownStage    = "unknown_stage"
	RejectTooLarge        = "too_large"
	RejectStageError      = "stage_error"
	ShedOverload          = "overload"
	FailedPublish         = "publish_failed"
)

// Stats are cloudproc's counters.
type Stats struct {
	Received int64
	Results  int64
	// Duplicates are stage messages for a frame being processed or
	// already answered.
	Duplicates int64
	// Replayed are remembered results published again for a resent frame.
	Replayed int64
	Rejected map[string]int64
}

// String formats the counters on one line.
func (s Stats) String() string {
	var parts []string
	for k, v := range s.Rejected {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return fmt.Sprintf("received=%d results=%d duplicates=%d replayed=%d rejected=[%s]", s.Received, s.Results, s.Duplicates, s.Replayed, strings.Join(parts, " "))
}

type job struct {
	msg   paho.Message
	env   *wire.Envelope
	key   key
	stage string
	// site is the topic prefix the frame came under ("" on a LAN,
	// "sites/<site>/" behind an upstream): its answers go under it, and
	// everything kept per device is kept per site and device.
	site string
}

type proc struct {
	cfg    Config
	log    *slog.Logger
	client *mqttc.Client
	queue  *fairQueue
	seen   *seen

	closing atomic.Bool
	mu      sync.Mutex
	stats   Stats
	pipes   map[string]*tasks.Pipeline // name + "\x00" + options
	// logged limits the log to one line per (reason, device).
	logged map[string]bool
	// perf: smoothed CPU ms per device and stage, results per device and
	// busy time since the last telemetry.
	perf    map[string]map[string]float64
	results map[string]int
	busy    time.Duration
	// mx is kept for the metrics alone (metrics.go).
	mx metricsState
}

// GCPercent is the GOGC a cloudproc sets unless GOGC is set (with a soft
// memory limit of half the physical memory: internal/gctune): paho
// allocates every message it reads twice (at split 1, 208 collections for
// 600 frames with the default GOGC=100; 36 with these).
const GCPercent = 400

// Run connects, announces itself once its subscriptions are acknowledged,
// and processes stage messages until ctx is done. It then finishes the
// frames it has queued (at most 10 s), announces offline and returns its
// counters.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) (Stats, error) {
	if err := cfg.Validate(); err != nil {
		return Stats{}, err
	}
	p := newProc(cfg, log)
	p.log.Info("malloc", "settings", cmalloc.String(), "go_gc", gctune.Apply(GCPercent))
	defer p.serveMetrics().Close() // nil when off
	announced := make(chan struct{})
	if err := p.connect(ctx, announced); err != nil {
		return Stats{}, err
	}
	defer p.client.Close(250)
	work, stopWork := context.WithCancel(context.Background())
	workersDone := p.startWorkers(work)
	select {
	case <-announced:
		fmt.Fprintf(out, "cloudproc %s online: group %s, %d workers, stages %v\n", cfg.ID, cfg.Group, cfg.workers(), remoteStages())
		if cfg.Ready != nil {
			cfg.Ready()
		}
	case <-p.client.Done(): // serve returns at once
	case <-ctx.Done():
	}
	gaveUp := p.serve(ctx)
	return p.shutdown(gaveUp, stopWork, workersDone)
}

func newProc(cfg Config, log *slog.Logger) *proc {
	return &proc{
		cfg:     cfg,
		log:     log.With("cloudproc", cfg.ID),
		queue:   newFairQueue(cfg.Queue),
		seen:    newSeen(cfg.Remember, cfg.RememberBytes),
		stats:   Stats{Rejected: map[string]int64{}},
		pipes:   map[string]*tasks.Pipeline{},
		logged:  map[string]bool{},
		perf:    map[string]map[string]float64{},
		results: map[string]int{},
		mx:      metricsState{forgetAfter: cfg.MetricsForgetAfter.D()},
	}
}

// connect connects with a clean session and shared subscriptions to every
// stage that can run in the cloud; announced is closed the first time the
// cloudproc has announced itself online.
func (p *proc) connect(ctx context.Context, announced chan struct{}) error {
	subs := map[string]byte{}
	for _, stage := range remoteStages() {
		subs[wire.StageFilter(p.cfg.Group, p.cfg.TopicPrefix, stage)] = 1
	}
	var once sync.Once
	password, tlsConfig, warnings, err := p.cfg.Credentials.Load(p.cfg.Broker)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		p.log.Warn(w)
	}
	p.client, err = mqttc.Connect(ctx, mqttc.Options{
		Broker:        p.cfg.Broker,
		ClientID:      wire.CloudClientID(p.cfg.ID),
		Username:      p.cfg.Username,
		Password:      password,
		TLS:           tlsConfig,
		Clean:         true, // a dead cloudproc's queue must not hold frames: devices resend
		ManualAck:     true,
		Will:          &mqttc.Will{Topic: wire.CloudStatusTopic(p.cfg.ID), Payload: wire.Offline, Retain: true},
		Subscriptions: subs,
		Handler:       p.onMessage,
		OnReady: func(c paho.Client) {
			if err := mqttc.Publish(c, wire.CloudStatusTopic(p.cfg.ID), 1, true, wire.Online); err != nil {
				p.log.Warn("could not announce online", "error", err)
				return
			}
			once.Do(func() { close(announced) })
		},
		TakeoverLimit:  mqttc.TakeoverLimitOf(p.cfg.TakeoverLimit),
		TakeoverWindow: p.cfg.TakeoverWindow.D(),
		Log:            p.log,
	})
	return err
}

// startWorkers starts the workers; the channel closes when all have ended.
func (p *proc) startWorkers(work context.Context) <-chan struct{} {
	var wg sync.WaitGroup
	for i := 0; i < p.cfg.workers(); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); p.worker(work) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// serve logs counters and publishes telemetry until ctx ends or the client
// gives up (its error).
func (p *proc) serve(ctx context.Context) error {
	var tick <-chan time.Time
	if p.cfg.StatsInterval > 0 {
		t := time.NewTicker(p.cfg.StatsInterval.D())
		defer t.Stop()
		tick = t.C
	}
	tele := time.NewTicker(p.cfg.TelemetryInterval.D())
	defer tele.Stop()
	lastTele := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.client.Done():
			return p.client.Err()
		case <-tick:
			p.log.Info("stats", "counters", p.snapshot().String())
		case now := <-tele.C:
			b, _ := json.Marshal(p.telemetry(now, now.Sub(lastTele)))
			lastTele = now
			p.client.Publish(wire.CloudTelemetryTopic(p.cfg.ID), 0, false, b)
		}
	}
}

// shutdown stops taking work (what is unacknowledged is resent by its
// device); unless the client gave up, it announces offline and finishes
// the queued frames (at most 10 s) first.
func (p *proc) shutdown(gaveUp error, stopWork context.CancelFunc, workersDone <-chan struct{}) (Stats, error) {
	p.closing.Store(true)
	if gaveUp == nil {
		if err := mqttc.Publish(p.client, wire.CloudStatusTopic(p.cfg.ID), 1, true, wire.Offline); err != nil {
			p.log.Warn("could not announce offline", "error", err)
		}
		drain, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p.queue.waitEmpty(drain)
		cancel()
	}
	stopWork()
	<-workersDone
	s := p.snapshot()
	if gaveUp != nil {
		p.log.Error("cloudproc stopped", "counters", s.String(), "error", gaveUp)
		return s, gaveUp
	}
	p.log.Info("cloudproc stopped", "counters", s.String())
	return s, nil
}

// remoteStages lists every stage name, over all registered pipelines, that
// can run in the cloud (all but each pipeline's first).
func remoteStages() []string {
	set := map[string]bool{}
	for _, name := range tasks.Names() {
		p, err := tasks.BuildEncoded(name, nil)
		if err != nil {
			continue
		}
		for _, s := range p.StageNames()[1:] {
			set[s] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (p *proc) snapshot() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Rejected = maps.Clone(p.stats.Rejected)
	return s
}

// reject counts a message that yields no result and logs it once per
// reason and device.
func (p *proc) reject(reason, topic, device string, err error) {
	p.mu.Lock()
	p.stats.Rejected[reason]++
	k := reason + "\x00" + device
	first := !p.logged[k]
	if first && len(p.logged) < 10000 {
		p.logged[k] = true
	}
	p.mu.Unlock()
	if first {
		p.log.Warn("stage message rejected (further ones of this device and reason are only counted)",
			"reason", reason, "topic", topic, "device", device, "error", err)
	}
}

// onMessage runs on its own goroutine per message. It validates cheaply and
// queues; every path acknowledges the message except a shutdown, which
// leaves it to the device's resend.
func (p *proc) onMessage(_ paho.Client, m paho.Message) {
	if p.closing.Load() {
		return
	}
	p.mu.Lock()
	p.stats.Received++
	p.mu.Unlock()
	topic := m.Topic()
	site, rest, ok := wire.CutTopicPrefix(p.cfg.TopicPrefix, topic)
	device, stage, err := wire.ParseDeviceTopic(rest)
	if !ok && err == nil {
		err = fmt.Errorf("topic %q is not under topic_prefix %q", topic, p.cfg.TopicPrefix)
	}
	if err != nil {
		p.reject(RejectBadTopic, topic, "", err)
		m.Ack()
		return
	}
	env, err := wire.Decode(m.Payload(), p.cfg.MaxMessageBytes)
	if err != nil {
		reason := RejectBadState
		if errors.Is(err, wire.ErrTooLarge) {
			reason = RejectTooLarge
		}
		p.reject(reason, topic, device, err)
		if h, herr := wire.DecodeHead(m.Payload()); herr == nil && h.Device == device {
			p.answerError(m, site, h, reason, err)
			return
		}
		m.Ack() // nothing names the frame: it cannot be answered
		return
	}
	if env.Device != device {
		// Not answered: the state does not belong to the topic's device.
		p.reject(RejectWrongDevice, topic, device, fmt.Errorf("state of device %q on this device's topic", env.Device))
		m.Ack()
		return
	}
	head := wire.Head{Version: env.Version, Device: env.Device, Run: env.Run, Seq: env.Seq, Split: env.Split, CaptureTS: env.CaptureTS}
	if env.Next != stage {
		err := fmt.Errorf("state for stage %q on the topic of stage %q", env.Next, stage)
		p.reject(RejectUnknownStage, topic, device, err)
		p.answerError(m, site, head, RejectUnknownStage, err)
		return
	}
	if _, ok := tasks.Lookup(env.Pipeline); !ok {
		err := fmt.Errorf("pipeline %q is not registered here", env.Pipeline)
		p.reject(RejectUnknownPipeline, topic, device, err)
		p.answerError(m, site, head, RejectUnknownPipeline, err)
		return
	}
	k := key{device: site + device, run: env.Run, seq: env.Seq}
	switch state, res := p.seen.claim(k); state {
	case claimBusy: // its result is coming
		p.mu.Lock()
		p.stats.Duplicates++
		p.mu.Unlock()
		m.Ack()
		return
	case claimAnswered: // the device did not get it: the same result again
		p.mu.Lock()
		p.stats.Duplicates++
		p.mu.Unlock()
		if err := mqttc.Publish(p.client, site+wire.ResultTopic(device), 1, false, res); err != nil {
			p.reject(FailedPublish, topic, device, err)
			return // not acknowledged: the device resends
		}
		p.mu.Lock()
		p.stats.Replayed++
		p.mu.Unlock()
		m.Ack()
		return
	}
	if !p.queue.push(site+device, &job{msg: m, env: env, key: k, stage: stage, site: site}) {
		p.seen.unclaim(k)
		p.reject(ShedOverload, topic, device, fmt.Errorf("device's queue of %d frames is full", p.cfg.Queue))
		m.Ack()
	}
}

// answerError publishes an error result for a frame that cannot be
// processed, so that its device counts it dropped instead of resending it
// forever, and acknowledges the message once that is published.
func (p *proc) answerError(m paho.Message, site string, h wire.Head, reason string, cause error) {
	res, err := wire.MarshalResult(wire.ResultHead{Device: h.Device, Run: h.Run, Seq: h.Seq, Split: h.Split,
		CaptureTS: time.Unix(0, h.CaptureTS), Error: fmt.Sprintf("%s: %v", reason, cause)}, nil)
	if err == nil {
		if err := mqttc.Publish(p.client, site+wire.ResultTopic(h.Device), 1, false, res); err != nil {
			return // not acknowledged: the device resends and it is answered then
		}
	}
	m.Ack()
}

func (p *proc) pipeline(name string, opts []byte) (*tasks.Pipeline, error) {
	k := name + "\x00" + string(opts)
	p.mu.Lock()
	pl, ok := p.pipes[k]
	p.mu.Unlock()
	if ok {
		return pl, nil
	}
	pl, err := tasks.BuildEncoded(name, opts)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if len(p.pipes) >= 64 {
		clear(p.pipes)
	}
	p.pipes[k] = pl
	p.mu.Unlock()
	return pl, nil
}

func (p *proc) worker(ctx context.Context) {
	for {
		j, ok := p.queue.pop(ctx)
		if !ok {
			return
		}
		p.handle(ctx, j)
		p.queue.finish()
	}
}

// handle runs the remaining stages of one frame and publishes its result;
// the stage message is acknowledged only after that. A frame that cannot be
// processed (bad state, wrong stage, a stage fails) is answered too, with a
// result that says why (its "error" field), so that its device counts it
// dropped instead of resending it forever; the answer is remembered like
// any result.
func (p *proc) handle(ctx context.Context, j *job) {
	start := time.Now()
	defer func() {
		took := time.Since(start)
		p.mu.Lock()
		p.busy += took
		p.mx.busy += took
		p.mu.Unlock()
	}()
	env, topic := j.env, j.msg.Topic()
	head := wire.ResultHead{Device: env.Device, Run: env.Run, Seq: env.Seq, Split: env.Split, CaptureTS: time.Unix(0, env.CaptureTS)}
	res, annotated, reason, err := p.process(ctx, j)
	if ctx.Err() != nil {
		// Shutting down: not acknowledged, the device resends it.
		p.seen.unclaim(j.key)
		return
	}
	if err != nil {
		p.reject(reason, topic, env.Device, err)
		head.Error = fmt.Sprintf("%s: %v", reason, err)
		if res, err = wire.MarshalResult(head, nil); err != nil {
			p.seen.unclaim(j.key)
			j.msg.Ack()
			return
		}
	}
	if err := mqttc.Publish(p.client, j.site+wire.ResultTopic(env.Device), 1, false, res); err != nil {
		// Not acknowledged: the device resends after its resend_after.
		p.seen.unclaim(j.key)
		p.reject(FailedPublish, topic, env.Device, err)
		return
	}
	p.seen.done(j.key, res)
	p.mu.Lock()
	p.mx.answered(j.site+env.Device, head.Error == "", time.Now())
	if head.Error == "" {
		p.stats.Results++
		if _, ok := p.results[j.site+env.Device]; ok || len(p.results) < maxTrackedDevices {
			p.results[j.site+env.Device]++
		}
	}
	p.mu.Unlock()
	if annotated != nil {
		p.client.Publish(j.site+wire.AnnotatedTopic(env.Device), 0, false, annotated)
	}
	j.msg.Ack()
}

// process runs the frame's remaining stages (tasks.Finish) and returns its
// result and annotated image, or the reason and error when it cannot.
func (p *proc) process(ctx context.Context, j *job) (res, annotated []byte, reason string, err error) {
	env := j.env
	pl, err := p.pipeline(env.Pipeline, env.Opts)
	if err != nil {
		return nil, nil, RejectBadState, err
	}
	wrap := func(stage string, run func() (tasks.Outcome, error)) (tasks.Outcome, error) {
		var out tasks.Outcome
		var err error
		_, emu := emulate.Run(p.cfg.Emulate.Slowdown, func() { out, err = run() })
		p.observe(j.site+env.Device, stage, emu)
		return out, err
	}
	done, err := tasks.Finish(ctx, pl, env, wrap)
	switch {
	case err == nil:
		return done.Result, done.Annotated, "", nil
	case errors.Is(err, tasks.ErrWrongStage):
		return nil, nil, RejectUnknownStage, err
	case errors.Is(err, tasks.ErrBadState):
		return nil, nil, RejectBadState, err
	}
	return nil, nil, RejectStageError, err
}

// maxTrackedDevices bounds the per-device figures cloudproc keeps.
const maxTrackedDevices = 10000

// observe smooths one stage's CPU time for a device.
func (p *proc) observe(device, stage string, d time.Duration) {
	v := float64(d) / 1e6
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mx.observeStage(stage, d)
	m, ok := p.perf[device]
	if !ok {
		if len(p.perf) >= maxTrackedDevices {
			return
		}
		m = map[string]float64{}
		p.perf[device] = m
	}
	if old, ok := m[stage]; ok {
		v = old + 0.2*(v-old)
	}
	m[stage] = v
}

// telemetry reports per-device stage times and the workers' utilisation
// over the last period dt.
func (p *proc) telemetry(now time.Time, dt time.Duration) wire.CloudTelemetry {
	s := p.snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := wire.CloudTelemetry{TS: now.UTC(), ID: p.cfg.ID, Workers: p.cfg.workers(), Queued: p.queue.len(),
		Slowdown: p.cfg.Emulate.Slowdown, Devices: map[string]wire.CloudDevice{},
		Received: s.Received, Results: s.Results, Duplicates: s.Duplicates, Replayed: s.Replayed, Rejected: s.Rejected}
	if dt > 0 {
		t.Utilisation = math.Round(1000*p.busy.Seconds()/(dt.Seconds()*float64(p.cfg.workers()))) / 1000
		p.mx.utilisation = t.Utilisation
	}
	for dev, stages := range p.perf {
		cd := wire.CloudDevice{StagesMS: map[string]float64{}}
		for k, v := range stages {
			cd.StagesMS[k] = math.Round(v*1000) / 1000
		}
		if dt > 0 {
			cd.FPS = math.Round(10*float64(p.results[dev])/dt.Seconds()) / 10
		}
		t.Devices[dev] = cd
	}
	p.busy = 0
	clear(p.results)
	return t
}
