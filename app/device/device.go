package device

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/emulate"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
	"gocv.io/x/gocv"
)

// ErrIncomplete is returned when some frame's result never came back.
var ErrIncomplete = errors.New("results missing")

// device is one running device process.
type device struct {
	cfg      Config
	log      *slog.Logger
	out      io.Writer
	run      string
	pipe     *tasks.Pipeline
	enc      tasks.MatEncoding
	client   paho.Client
	win      *window
	stats    *stats
	clouds   *presence
	ready    chan struct{}
	readyOne sync.Once

	split    atomic.Int64
	slowdown atomic.Uint64 // math.Float64bits

	acks chan paho.Token
}

// Run runs the device until it has captured cfg.Frames frames (or the
// source ends) or ctx is done, then drains: it waits, at most
// cfg.DrainTimeout, for the result of every frame in flight. It writes a
// status line every cfg.StatusInterval to out and returns the summary.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	pipe, err := tasks.Build(cfg.Pipeline, cfg.Options)
	if err != nil {
		return Summary{}, err
	}
	codec, _ := wire.ParseMatCodec(cfg.MatCodec)
	d := &device{
		cfg:    cfg,
		log:    log.With("device", cfg.ID),
		out:    out,
		run:    newRunID(),
		pipe:   pipe,
		enc:    tasks.MatEncoding{Codec: codec, JPEGQuality: cfg.JPEGQuality},
		win:    newWindow(cfg.Window),
		clouds: newPresence(),
		ready:  make(chan struct{}),
		acks:   make(chan paho.Token, cfg.Window+16),
	}
	d.stats = newStats(cfg.ID, d.run)
	d.split.Store(int64(cfg.Split))
	d.SetSlowdown(cfg.Emulate.Slowdown)

	src, err := source.Open(cfg.Source)
	if err != nil {
		return Summary{}, err
	}
	defer src.Close()

	d.client, err = mqttc.Connect(ctx, mqttc.Options{
		Broker:   cfg.Broker,
		ClientID: "splitpoint-device-" + cfg.ID,
		Username: cfg.Username,
		Password: cfg.Password,
		Clean:    false, // results queued while we reconnect are kept for us
		Will:     &mqttc.Will{Topic: wire.StatusTopic(cfg.ID), Payload: wire.Offline, Retain: true},
		Subscriptions: map[string]byte{
			wire.ResultTopic(cfg.ID): 1,
			wire.CloudStatusFilter:   1,
		},
		Handler: d.onMessage,
		OnReady: d.onReady,
		Log:     d.log,
	})
	if err != nil {
		return Summary{}, err
	}
	defer d.client.Disconnect(250)

	select {
	case <-d.ready:
	case <-ctx.Done():
		return d.stats.snapshot(), ctx.Err()
	}
	d.log.Info("device started", "run", d.run, "config", cfg.String(), "stages", pipe.StageNames())

	// Background helpers live until the drain is over.
	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); d.watchAcks(bg) }()
	go func() { defer wg.Done(); d.resendLoop(bg) }()
	go func() { defer wg.Done(); d.statusLoop(bg) }()
	defer func() { stopBG(); wg.Wait() }()

	start := time.Now()
	capErr := d.captureLoop(ctx, src)
	if capErr != nil && !errors.Is(capErr, context.Canceled) {
		d.log.Error("capture stopped", "error", capErr)
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout.D())
	drained := d.win.waitEmpty(drainCtx)
	cancel()
	if !drained {
		for range d.win.abandon() {
			d.stats.drop(DropResultTimeout)
		}
	}
	d.stats.add(func(s *Summary) { s.Elapsed = time.Since(start) })
	if err := mqttc.Publish(d.client, wire.StatusTopic(cfg.ID), 1, true, wire.Offline); err != nil {
		d.log.Warn("could not publish offline status", "error", err)
	}
	sum := d.stats.snapshot()
	switch {
	case capErr != nil && !errors.Is(capErr, context.Canceled):
		return sum, capErr
	case sum.Dropped[DropResultTimeout] > 0:
		return sum, fmt.Errorf("%w: %d frames without a result after %v", ErrIncomplete, sum.Dropped[DropResultTimeout], cfg.DrainTimeout.D())
	}
	return sum, nil
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// SetSlowdown changes the emulated slowdown while the device runs.
func (d *device) SetSlowdown(f float64) { d.slowdown.Store(floatBits(f)) }

func (d *device) onReady(c paho.Client) {
	if err := mqttc.Publish(c, wire.StatusTopic(d.cfg.ID), 1, true, wire.Online); err != nil {
		d.log.Warn("could not publish online status", "error", err)
		return
	}
	d.readyOne.Do(func() { close(d.ready) })
}

// onMessage runs on its own goroutine for every message (OrderMatters off).
func (d *device) onMessage(_ paho.Client, m paho.Message) {
	topic := m.Topic()
	if id, err := wire.ParseCloudStatusTopic(topic); err == nil {
		switch string(m.Payload()) {
		case wire.Online:
			d.clouds.set(id, true)
		case wire.Offline, "":
			d.clouds.set(id, false)
		default:
			d.log.Warn("ignoring malformed cloudproc status", "topic", topic, "payload", truncate(m.Payload()))
		}
		return
	}
	if topic != wire.ResultTopic(d.cfg.ID) {
		d.log.Warn("ignoring message on unexpected topic", "topic", topic)
		return
	}
	h, err := wire.ParseResultHead(m.Payload())
	if err != nil || h.Device != d.cfg.ID {
		d.stats.add(func(s *Summary) { s.BadResults++ })
		d.log.Warn("ignoring malformed result", "topic", topic, "device", d.cfg.ID, "error", err, "payload", truncate(m.Payload()))
		return
	}
	if h.Run != d.run {
		d.stats.add(func(s *Summary) { s.BadResults++ })
		d.log.Debug("ignoring result of another run", "topic", topic, "run", h.Run)
		return
	}
	f, ok := d.win.complete(h.Seq)
	if !ok {
		d.stats.add(func(s *Summary) { s.Duplicates++ })
		d.log.Debug("result for a frame not in flight", "seq", h.Seq)
		return
	}
	d.stats.result(time.Since(f.captured))
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// captureLoop captures, processes and sends frames until the count is
// reached, the source ends or ctx is done.
func (d *device) captureLoop(ctx context.Context, src source.Source) error {
	block := d.cfg.Policy == PolicyBlock
	for n := 0; d.cfg.Frames == 0 || n < d.cfg.Frames; n++ {
		if block {
			if err := d.clouds.wait(ctx); err != nil {
				return err
			}
			if err := d.win.acquire(ctx); err != nil {
				return err
			}
		} else if ev := d.win.acquireEvicting(); ev != nil {
			d.stats.drop(DropWindowFull)
		}
		frame, err := src.Read(ctx)
		if err != nil {
			d.win.release()
			if errors.Is(err, io.EOF) {
				d.log.Info("source ended", "frames", n)
				return nil
			}
			return err
		}
		seq := uint64(n)
		d.stats.add(func(s *Summary) { s.Captured++ })
		d.process(ctx, seq, frame)
	}
	return nil
}

// process runs the local stages on one frame and sends its state. It always
// either registers the frame in flight or counts it dropped.
func (d *device) process(ctx context.Context, seq uint64, frame gocv.Mat) {
	captured := time.Now()
	k := int(d.split.Load())
	st := tasks.NewState(d.cfg.ID, seq)
	defer st.Close()
	st.SetMat(tasks.FieldSource, frame)
	slow := floatFrom(d.slowdown.Load())
	var timings []wire.Timing
	filteredAt, err := d.pipe.Run(context.WithoutCancel(ctx), st, 0, k, func(stage string, run func() (tasks.Outcome, error)) (tasks.Outcome, error) {
		var out tasks.Outcome
		var err error
		took := emulate.Run(slow, func() { out, err = run() })
		timings = append(timings, wire.Timing{Stage: stage, Nanos: int64(took), Where: wire.OnDevice})
		return out, err
	})
	if err != nil {
		d.win.release()
		d.stats.drop(DropStageError)
		if ctx.Err() == nil {
			d.log.Error("local stage failed; frame dropped", "seq", seq, "error", err)
		}
		return
	}
	next := k
	if filteredAt != "" {
		next = d.pipe.Len() - 1 // the sink reports the filtered frame
		d.stats.add(func(s *Summary) { s.FilteredLocal++ })
	}
	if d.cfg.Policy == PolicyDropOldest && !d.clouds.any() {
		d.win.release()
		d.stats.drop(DropNoCloud)
		return
	}
	st.Keep(d.pipe.Needs(next))
	fields, err := tasks.EncodeFields(st, d.pipe.Needs(next), d.enc)
	var payload []byte
	if err == nil {
		payload, err = wire.Encode(&wire.Envelope{
			Version:    wire.Version,
			Pipeline:   d.pipe.Name(),
			Opts:       d.pipe.Options(),
			Device:     d.cfg.ID,
			Run:        d.run,
			Seq:        seq,
			Split:      k,
			Next:       d.pipe.Stage(next).Name(),
			CaptureTS:  time.Now().UnixNano(),
			FilteredAt: filteredAt,
			Timings:    timings,
			Fields:     fields,
		})
	}
	if err != nil {
		d.win.release()
		d.stats.drop(DropEncodeError)
		d.log.Error("cannot encode state; frame dropped", "seq", seq, "error", err)
		return
	}
	if len(payload) > d.cfg.MaxMessageBytes {
		d.win.release()
		d.stats.drop(DropTooLarge)
		d.log.Warn("state larger than max_message_bytes; frame dropped", "seq", seq, "bytes", len(payload), "max", d.cfg.MaxMessageBytes)
		return
	}
	now := time.Now()
	f := &flight{seq: seq, topic: wire.StageTopic(d.cfg.ID, d.pipe.Stage(next).Name()), payload: payload, captured: captured, sent: now, split: k}
	d.win.register(f)
	d.stats.add(func(s *Summary) { s.Sent++; s.BytesSent += int64(len(payload)) })
	d.publish(f)
}

// publish hands the frame's state to paho; the ack watcher collects the
// token. The window, not the PUBACK, decides when the frame is done.
func (d *device) publish(f *flight) {
	tok := d.client.Publish(f.topic, 1, false, f.payload)
	select {
	case d.acks <- tok:
	default: // the watcher is behind; the token is simply not observed
	}
}

func (d *device) watchAcks(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case tok := <-d.acks:
			select {
			case <-tok.Done():
				if err := tok.Error(); err != nil {
					d.log.Warn("publish failed; the frame is resent after resend_after", "error", err)
				}
			case <-ctx.Done():
				return
			}
		}
	}
}

// resendLoop republishes frames whose result is overdue, for example because
// the cloudproc that took them died. cloudproc recognises a frame it has
// already answered, so a resend never yields a second result.
func (d *device) resendLoop(ctx context.Context) {
	every := d.cfg.ResendAfter.D() / 4
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !d.clouds.any() {
				continue
			}
			for _, f := range d.win.stale(now.Add(-d.cfg.ResendAfter.D()), now) {
				d.log.Info("result overdue; resending frame", "seq", f.seq, "topic", f.topic)
				d.stats.add(func(s *Summary) { s.Resent++ })
				d.publish(f)
			}
		}
	}
}

func (d *device) statusLoop(ctx context.Context) {
	if d.cfg.StatusInterval <= 0 {
		return
	}
	t := time.NewTicker(d.cfg.StatusInterval.D())
	defer t.Stop()
	prev := d.stats.snapshot()
	prevT := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := d.stats.snapshot()
			dt := now.Sub(prevT).Seconds()
			fmt.Fprintf(d.out, "%s fps=%.1f results/s=%.1f split=%d inflight=%d/%d captured=%d results=%d dropped=%d cloud=%v p50=%s\n",
				d.cfg.ID, float64(s.Captured-prev.Captured)/dt, float64(s.Results-prev.Results)/dt,
				d.split.Load(), d.win.inFlight(), d.cfg.Window, s.Captured, s.Results, s.DroppedTotal(),
				d.clouds.any(), s.LatencyP50.Round(100*time.Microsecond))
			prev, prevT = s, now
		}
	}
}
