package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/splitpoint/splitpoint/bridge"
	"github.com/splitpoint/splitpoint/controller"
	"github.com/splitpoint/splitpoint/wire"
)

// maxDevices bounds the devices the gateway tracks.
const maxDevices = 10000

// event is a message the inline client received.
type event struct {
	topic   string
	payload []byte
	retain  bool
}

// dev is what the gateway knows about one device.
type dev struct {
	id string
	// run is the gateway run id in this device's decisions: the gateway's
	// own, until a forged decision claims it (see audit).
	run     string
	decided bool // a decision was published by this gateway run
	mode    string
	target  float64
	split   int
	epoch   uint64
	stages  int
	state   wire.DeviceState
	online  bool

	tele      *wire.Telemetry
	teleNew   bool // a telemetry arrived since the last control step
	sameSplit int  // consecutive telemetry reports at the same split
	ctrl      *controller.Controller
	cloudMS   map[string]float64 // last cloud time per stage, from cloudprocs
	hasTemp   bool

	// The last decision published, to check that the retained one and the
	// device's state still agree with it (audit).
	lastDecision  []byte
	cmdID         string
	decidedAt     time.Time
	hasState      bool
	mismatchSince time.Time // zero: the device's state agrees
	repairs       int       // consecutive repairs, for their backoff
	nextRepair    time.Time

	// For the metrics (metrics.go): when the device was last heard from,
	// and the controller's last step.
	heard      time.Time
	bottleneck string
	predicted  float64

	// delivered is the rate of results the gateway saw for the device
	// (results/s) over the last control period; resultsAt/resultsSeen the
	// count and time it was taken from.
	delivered   float64
	deliveredOK bool // delivered was measured over a whole period
	resultsSeen int64
	resultsAt   time.Time
}

type cloudInfo struct {
	online bool
	tele   *wire.CloudTelemetry
}

// plane is the gateway's control plane: it derives split decisions from
// telemetry and commands, and announces devices to Home Assistant. All of
// its state is owned by the goroutine running loop.
type plane struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	run     string
	events  chan event
	dropped atomic.Int64
	// repaired counts decisions republished by audit.
	repaired atomic.Int64
	devs     map[string]*dev
	clouds   map[string]*cloudInfo
	// link, with a bridge, is what the bridge measures of its link to the
	// upstream: the uplink every device behind this gateway shares.
	link func() bridge.Link
	// Malformed messages, counted per kind and logged once per kind and
	// device.
	badMu  sync.Mutex
	bad    map[string]int64
	warned map[string]bool
	// viewReq serves the metrics a copy of the devices (metrics.go).
	viewReq chan chan planeView
	// results counts the results delivered to each device, by an inline
	// subscription that does not go through events (at most maxDevices).
	resultsMu sync.Mutex
	results   map[string]int64
}

// malformedCounts returns the malformed messages counted per kind.
func (p *plane) malformedCounts() map[string]int64 {
	p.badMu.Lock()
	defer p.badMu.Unlock()
	return maps.Clone(p.bad)
}

func newPlane(cfg Config, srv *mqtt.Server, log *slog.Logger) *plane {
	return &plane{
		cfg: cfg, log: log, srv: srv, run: newRunID(),
		events:  make(chan event, 4096),
		devs:    map[string]*dev{},
		clouds:  map[string]*cloudInfo{},
		bad:     map[string]int64{},
		warned:  map[string]bool{},
		results: map[string]int64{},

		viewReq: make(chan chan planeView),
	}
}

// subscribe makes the inline subscriptions. mochi runs their handler on the
// publisher's goroutine: it only hands the message to the loop, never
// blocking (a full queue drops the message and counts it).
func (p *plane) subscribe() error {
	filters := []string{wire.StateFilter, wire.StatusFilter, wire.TelemetryFilter, wire.SplitSetFilter, wire.TargetSetFilter,
		wire.CloudStatusFilter, wire.CloudTelemetryFilter}
	if p.cfg.HomeAssistant.Enabled {
		filters = append(filters, wire.HAStatusTopic(p.cfg.HomeAssistant.Prefix))
	}
	for i, f := range filters {
		err := p.srv.Subscribe(f, i+1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			ev := event{topic: pk.TopicName, payload: append([]byte(nil), pk.Payload...), retain: pk.FixedHeader.Retain}
			select {
			case p.events <- ev:
			default:
				if p.dropped.Add(1)%1000 == 1 {
					p.log.Warn("gateway event queue full; message dropped", "topic", pk.TopicName, "dropped", p.dropped.Load())
				}
			}
		})
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", f, err)
		}
	}
	// Results only count: the delivery rate the controller checks the
	// device's own figure against (control).
	err := p.srv.Subscribe(wire.ResultFilter, len(filters)+1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if device, leaf, err := wire.ParseDeviceTopic(pk.TopicName); err == nil && leaf == "result" {
			p.resultsMu.Lock()
			if _, ok := p.results[device]; ok || len(p.results) < maxDevices {
				p.results[device]++
			}
			p.resultsMu.Unlock()
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", wire.ResultFilter, err)
	}
	return nil
}

// measuredFPS is the rate the controller takes as measured: the device
// reports the frames it captured; what reached the cloud and came back is
// what the gateway saw delivered. When that is below the report by more
// than the margin (frames dropped or stuck on the way), it is the
// measurement.
func measuredFPS(reported float64, d *dev, margin float64) float64 {
	if !d.deliveredOK || d.delivered >= reported*(1-margin) {
		return reported
	}
	return d.delivered
}

// measureDelivery sets every device's delivered rate from the results
// counted since the last control period.
func (p *plane) measureDelivery(now time.Time) {
	p.resultsMu.Lock()
	defer p.resultsMu.Unlock()
	for _, d := range p.devs {
		n := p.results[d.id]
		if !d.resultsAt.IsZero() {
			if dt := now.Sub(d.resultsAt).Seconds(); dt > 0 {
				d.delivered, d.deliveredOK = float64(n-d.resultsSeen)/dt, true
			}
		}
		d.resultsSeen, d.resultsAt = n, now
	}
}

func (p *plane) loop(ctx context.Context) {
	t := time.NewTicker(p.cfg.Control.Period.D())
	defer t.Stop()
	p.announceAll()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-p.events:
			p.handle(ev)
		case reply := <-p.viewReq:
			reply <- p.view()
		case now := <-t.C:
			p.audit(now)
			p.measureDelivery(now)
			p.control(now)
		}
	}
}

func (p *plane) publish(topic string, v any, retain bool) {
	b, err := json.Marshal(v)
	if err != nil {
		p.log.Error("cannot encode message", "topic", topic, "error", err)
		return
	}
	if err := p.srv.Publish(topic, b, retain, 1); err != nil {
		p.log.Error("cannot publish", "topic", topic, "error", err)
	}
}

func (p *plane) device(id string) *dev {
	if d, ok := p.devs[id]; ok {
		return d
	}
	if len(p.devs) >= maxDevices {
		return nil
	}
	d := &dev{id: id, run: p.run, mode: wire.ModeAuto, cloudMS: map[string]float64{}, ctrl: controller.New(p.params())}
	p.devs[id] = d
	return d
}

func (p *plane) params() controller.Params {
	k := p.cfg.Control
	return controller.Params{Period: k.Period.D(), Margin: k.Margin, Headroom: k.Headroom, Dwell: k.Dwell.D(),
		Shortfall: k.Shortfall, Verify: k.Verify, Smoothing: k.Smoothing}
}

func (p *plane) handle(ev event) {
	if ev.topic == wire.BridgeStatusTopic {
		return // the bridge's own health, matched by offload/+/status
	}
	if p.cfg.HomeAssistant.Enabled && ev.topic == wire.HAStatusTopic(p.cfg.HomeAssistant.Prefix) {
		if string(ev.payload) == "online" {
			p.log.Info("Home Assistant is online; announcing devices again")
			p.announceAll()
		}
		return
	}
	if id, err := wire.ParseCloudStatusTopic(ev.topic); err == nil {
		c := p.cloud(id)
		c.online = string(ev.payload) == wire.Online
		return
	}
	if id, err := wire.ParseCloudTelemetryTopic(ev.topic); err == nil {
		p.onCloudTelemetry(id, ev)
		return
	}
	if device, rest, err := wire.ParseControlTopic(ev.topic); err == nil {
		switch rest {
		case "split/set":
			p.onSplitCommand(device, ev)
		case "target_fps/set":
			p.onTargetCommand(device, ev)
		}
		return
	}
	device, leaf, err := wire.ParseDeviceTopic(ev.topic)
	if err != nil {
		p.malformed("topic", ev.topic, "", err)
		return
	}
	switch leaf {
	case "state":
		p.onState(device, ev)
	case "status":
		if d := p.devs[device]; d != nil {
			d.online = string(ev.payload) == wire.Online
		}
	case "telemetry":
		p.onTelemetry(device, ev)
	}
	if d := p.devs[device]; d != nil {
		d.heard = time.Now()
	}
}

// malformed counts a message the gateway cannot use and logs the first one
// of each kind and device.
func (p *plane) malformed(kind, topic, device string, err error) {
	p.badMu.Lock()
	p.bad[kind]++
	p.badMu.Unlock()
	k := kind + "\x00" + device
	if p.warned[k] || len(p.warned) >= maxDevices {
		return
	}
	p.warned[k] = true
	p.log.Warn("ignoring malformed message (further ones of this kind and device are only counted)",
		"kind", kind, "topic", topic, "device", device, "error", err)
}

func (p *plane) cloud(id string) *cloudInfo {
	c, ok := p.clouds[id]
	if !ok {
		if len(p.clouds) >= maxDevices {
			return &cloudInfo{}
		}
		c = &cloudInfo{}
		p.clouds[id] = c
	}
	return c
}

// onState adopts a device's state the first time this gateway run sees it
// (so manual overrides and targets survive a gateway restart), then
// publishes a decision confirming it.
func (p *plane) onState(id string, ev event) {
	if len(ev.payload) == 0 {
		return
	}
	st, err := wire.ParseDeviceState(ev.payload)
	if err != nil {
		p.malformed("state", ev.topic, id, err)
		return
	}
	d := p.device(id)
	if d == nil {
		return
	}
	restarted := d.hasState && st.Run != d.state.Run
	changed := d.hasState && (st.Pipeline != d.state.Pipeline || st.Stages != d.state.Stages)
	d.state, d.stages, d.online, d.hasState = st, st.Stages, true, true
	if changed {
		p.announce(d) // another pipeline: other components
	}
	if d.decided && !(restarted && d.split >= st.Stages) {
		return
	}
	// First sight of the device in this gateway run, or a device restarted
	// with fewer stages than the decided split: adopt its state.
	d.mode, d.split, d.target = st.Mode, st.Split, st.TargetFPS
	reason := "gateway adopted the device's state"
	if d.target <= 0 {
		d.target = p.cfg.DefaultTargetFPS
		reason = fmt.Sprintf("new device: %s mode, target %g fps (the gateway's default)", d.mode, d.target)
	}
	p.decide(d, reason, nil, "")
	p.announce(d)
}

func (p *plane) onTelemetry(id string, ev event) {
	var t wire.Telemetry
	if err := json.Unmarshal(ev.payload, &t); err != nil || t.Split < 1 || len(t.Stages) == 0 {
		if err == nil {
			err = fmt.Errorf("telemetry without split or stages")
		}
		p.malformed("telemetry", ev.topic, id, err)
		return
	}
	d := p.devs[id]
	if d == nil {
		return // the device's state comes first
	}
	if d.tele != nil && d.tele.Split == t.Split {
		d.sameSplit++
	} else {
		d.sameSplit = 1
	}
	d.tele, d.teleNew = &t, true
	if t.Host.TemperatureC != nil && !d.hasTemp {
		d.hasTemp = true
		p.announce(d) // now with a temperature sensor
	}
}

func (p *plane) onCloudTelemetry(id string, ev event) {
	var t wire.CloudTelemetry
	if err := json.Unmarshal(ev.payload, &t); err != nil {
		p.malformed("cloud_telemetry", ev.topic, id, err)
		return
	}
	c := p.cloud(id)
	c.tele = &t
	for devID, cd := range t.Devices {
		if prefix := p.cfg.remotePrefix(); prefix != "" {
			var ok bool
			if devID, ok = strings.CutPrefix(devID, prefix); !ok {
				continue // another site's device
			}
		}
		if d := p.devs[devID]; d != nil {
			for stage, v := range cd.StagesMS {
				if v >= 0 && !math.IsNaN(v) && len(d.cloudMS) < 64 {
					d.cloudMS[stage] = v
				}
			}
		}
	}
}

// refuse answers a command that is not applied.
func (p *plane) refuse(device string, ev event, why string) {
	p.log.Warn("command refused", "topic", ev.topic, "device", device, "payload", truncate(ev.payload), "reason", why)
	p.publish(wire.ControlErrorTopic(device), wire.ControlError{Topic: ev.topic, Received: truncate(ev.payload), Error: why, TS: time.Now().UTC()}, false)
}

// retainedCommand handles a retained message on a command topic: it is
// never applied, and cleared so it is not replayed to the next subscriber.
func (p *plane) retainedCommand(device string, ev event) bool {
	if !ev.retain {
		return false
	}
	if len(ev.payload) > 0 {
		p.refuse(device, ev, "retained commands are ignored (publish without -r); the retained message was cleared")
		if err := p.srv.Publish(ev.topic, nil, true, 1); err != nil {
			p.log.Error("cannot clear retained command", "topic", ev.topic, "error", err)
		}
	}
	return true
}

// commandTarget returns the device a command is for, or nil when the
// command is retained or the device unknown (both answered already).
func (p *plane) commandTarget(id string, ev event) *dev {
	if p.retainedCommand(id, ev) {
		return nil
	}
	d := p.devs[id]
	if d == nil || d.stages == 0 {
		p.refuse(id, ev, "unknown device: it has not published its state yet")
		return nil
	}
	return d
}

func (p *plane) onSplitCommand(id string, ev event) {
	d := p.commandTarget(id, ev)
	if d == nil {
		return
	}
	cmd, err := wire.ParseSplitCommand(ev.payload, d.stages-1)
	if err != nil {
		p.refuse(id, ev, err.Error())
		return
	}
	var reason string
	switch {
	case cmd.Split > 0:
		d.mode, d.split = wire.ModeManual, cmd.Split
		reason = fmt.Sprintf("manual: split %d set by command", cmd.Split)
	case cmd.Mode == wire.ModeManual:
		d.mode = wire.ModeManual
		reason = fmt.Sprintf("manual: holding split %d, set by command", d.split)
	default:
		d.mode = wire.ModeAuto
		d.ctrl.Reset()
		reason = fmt.Sprintf("automatic mode set by command; the controller decides from split %d", d.split)
	}
	p.decide(d, reason, nil, cmd.CmdID)
}

func (p *plane) onTargetCommand(id string, ev event) {
	d := p.commandTarget(id, ev)
	if d == nil {
		return
	}
	cmd, err := wire.ParseTargetCommand(ev.payload)
	if err != nil {
		p.refuse(id, ev, err.Error())
		return
	}
	d.target = cmd.FPS
	p.decide(d, fmt.Sprintf("target set to %g fps by command", cmd.FPS), nil, cmd.CmdID)
}

// audit keeps the retained control topics true: within a control period of
// finding the retained decision of a device cleared or overwritten by
// another client, or the state of an online device disagreeing with the
// decision for a whole period, it republishes its decision and logs what
// it found. Repeated repairs of one device back off up to 32 periods.
//
// The gateway never adopts an epoch it did not issue: when a decision or a
// state claims the device's gateway run with an epoch the gateway has not
// reached (a forgery, which could be as high as the largest uint64), the
// device's run id is replaced, and a device takes any decision of another
// run whatever its epoch.
func (p *plane) audit(now time.Time) {
	period := p.cfg.Control.Period.D()
	for _, d := range p.devs {
		if !d.decided {
			continue
		}
		found := p.retainedProblem(d)
		if found == "" && d.hasState && d.online {
			st := d.state
			if st.Split != d.split || st.Mode != d.mode || st.TargetFPS != d.target {
				if d.mismatchSince.IsZero() {
					d.mismatchSince = now
				}
				if now.Sub(d.mismatchSince) >= period && now.Sub(d.decidedAt) >= period {
					found = fmt.Sprintf("the device reports split %d, %s, target %g in its state, the decision says split %d, %s, target %g",
						st.Split, st.Mode, st.TargetFPS, d.split, d.mode, d.target)
				}
			} else {
				d.mismatchSince, d.repairs = time.Time{}, 0
			}
		}
		if found == "" || now.Before(d.nextRepair) {
			continue
		}
		if d.state.GatewayRun == d.run && d.state.Epoch > d.epoch {
			d.run = newRunID() // the device took an epoch this gateway never issued
		}
		d.repairs++
		d.nextRepair = now.Add(period << min(d.repairs, 5))
		p.log.Warn("control state inconsistent; republishing the decision", "device", d.id, "found", found, "repairs", d.repairs)
		p.repaired.Add(1)
		p.decide(d, "decision restored by the gateway: "+found, nil, d.cmdID)
	}
}

// retainedProblem says what is wrong with the device's retained decision,
// or "" when it is the gateway's last one.
func (p *plane) retainedProblem(d *dev) string {
	msgs := p.srv.Topics.Messages(wire.ControlSplitTopic(d.id))
	if len(msgs) == 0 || len(msgs[0].Payload) == 0 {
		return "the retained decision was cleared"
	}
	if bytes.Equal(msgs[0].Payload, d.lastDecision) {
		return ""
	}
	if dec, err := wire.ParseDecision(msgs[0].Payload); err == nil && dec.GatewayRun == d.run && dec.Epoch > d.epoch {
		d.run = newRunID() // the device may have taken it: leave its run behind
	}
	return fmt.Sprintf("the retained decision was overwritten by another client (%s)", truncate(msgs[0].Payload))
}

// decide publishes the device's decision, retained, with a new epoch.
func (p *plane) decide(d *dev, reason string, predicted *float64, cmdID string) {
	d.epoch++
	d.decided = true
	dec := wire.Decision{Split: d.split, Mode: d.mode, TargetFPS: d.target, Reason: reason, PredictedFPS: predicted,
		GatewayRun: d.run, Epoch: d.epoch, CmdID: cmdID, TS: time.Now().UTC()}
	p.log.Info("split decision", "device", d.id, "split", d.split, "mode", d.mode, "target_fps", d.target, "epoch", d.epoch, "reason", reason)
	b, err := json.Marshal(dec)
	if err != nil {
		p.log.Error("cannot encode decision", "device", d.id, "error", err)
		return
	}
	d.lastDecision, d.cmdID, d.decidedAt, d.mismatchSince = b, cmdID, time.Now(), time.Time{}
	if err := p.srv.Publish(wire.ControlSplitTopic(d.id), b, true, 1); err != nil {
		p.log.Error("cannot publish", "topic", wire.ControlSplitTopic(d.id), "error", err)
	}
}

// control runs the controller of every online device in automatic mode
// that reported since the last period, at the split last decided.
func (p *plane) control(now time.Time) {
	cloudOnline, workers := false, 0.0
	for _, c := range p.clouds {
		if c.online {
			cloudOnline = true
			if c.tele != nil {
				workers += float64(c.tele.Workers)
			}
		}
	}
	// With a bridge, every device's uplink is the bridge's link, shared
	// equally by the devices that stream.
	shareBps := 0.0
	if p.link != nil {
		active := 0
		for _, d := range p.devs {
			if d.online && d.tele != nil {
				active++
			}
		}
		if l := p.link(); l.CapacityBps > 0 && active > 0 {
			shareBps = l.CapacityBps / float64(active)
		}
	}
	for _, d := range p.devs {
		if !d.online || d.mode != wire.ModeAuto || d.tele == nil || !d.teleNew {
			continue
		}
		d.teleNew = false
		t := d.tele
		// Act on measurements taken wholly at the decided split.
		if t.Split != d.split || d.sameSplit < 2 || t.TargetFPS != d.target {
			continue
		}
		snap := snapshot(t, d, now, cloudOnline, workers)
		if p.link != nil {
			snap.UplinkBps = shareBps // the LAN's PUBACKs say nothing about the link that matters
		}
		snap.MeasuredFPS = measuredFPS(snap.MeasuredFPS, d, p.cfg.Control.Margin)
		dec := d.ctrl.Step(snap)
		d.bottleneck, d.predicted = lastStep(snap, dec, p.link != nil)
		if dec.Changed && dec.Split >= 1 && dec.Split < d.stages {
			d.split = dec.Split
			pred := math.Round(dec.PredictedFPS*10) / 10
			p.decide(d, dec.Reason, &pred, "")
		}
	}
}

func snapshot(t *wire.Telemetry, d *dev, now time.Time, cloudOnline bool, workers float64) controller.Snapshot {
	n := d.stages
	s := controller.Snapshot{
		Now: time.Duration(now.UnixNano()), Split: t.Split, Stages: n, Target: d.target, MeasuredFPS: t.FPS,
		SourceFPS: t.SourceFPS, OverheadMS: t.OverheadMS, DeviceWorkers: float64(t.Workers), CloudWorkers: math.Max(workers, 1), CloudOnline: cloudOnline && t.CloudOnline,
		DeviceMS: make([]float64, n), CloudMS: make([]float64, n), Bytes: make([]float64, n), EncodeMS: make([]float64, n),
	}
	for i, st := range t.Stages {
		if i >= n {
			break
		}
		s.DeviceMS[i] = st.DeviceMS
		s.CloudMS[i] = st.CPUMS // never seen in the cloud: this device's own CPU time
		if v, ok := d.cloudMS[st.Name]; ok {
			s.CloudMS[i] = v
		}
	}
	if len(d.state.RemoteStages) > 0 {
		last := d.state.RemoteStages[len(d.state.RemoteStages)-1]
		s.CloudMS[n-1] = d.cloudMS[last]
	}
	for _, b := range t.Boundaries {
		if b.Split >= 1 && b.Split < n {
			s.Bytes[b.Split], s.EncodeMS[b.Split] = b.Bytes, b.EncodeMS
		}
	}
	if t.Uplink.CapacityBps != nil {
		s.UplinkBps = *t.Uplink.CapacityBps
	}
	return s
}

func truncate(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
