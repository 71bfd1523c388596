package device

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/mqttc"
	"github.com/splitpoint/splitpoint/wire"
)

// controlState is the split decision the device follows. The split itself
// lives in device.split, read once per frame.
type controlState struct {
	mu         sync.Mutex
	mode       string
	target     float64
	epoch      uint64
	gatewayRun string
	pending    string      // ignore decisions until one answers this cmd_id…
	sentAt     time.Time   // …or until pendingWait after the commands were sent
	cmds       [][2]string // start-up commands: topic, payload
	stateMu    sync.Mutex  // serialises state publishes
}

// newControlState prepares the start-up commands before the device
// connects, so that a retained decision arriving first is already ignored
// until the gateway answers them.
func newControlState(cfg Config) *controlState {
	c := &controlState{mode: cfg.Mode, target: cfg.TargetFPS}
	if cfg.TargetFPS > 0 {
		id := newID()
		b, _ := json.Marshal(map[string]any{"target_fps": cfg.TargetFPS, "cmd_id": id})
		c.cmds = append(c.cmds, [2]string{wire.ControlTargetSetTopic(cfg.ID), string(b)})
		c.pending = id
	}
	if cfg.Mode == wire.ModeManual {
		id := newID()
		b, _ := json.Marshal(map[string]any{"split": cfg.Split, "cmd_id": id})
		c.cmds = append(c.cmds, [2]string{wire.ControlSplitSetTopic(cfg.ID), string(b)})
		c.pending = id
	}
	return c
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// onDecision applies the gateway's retained decision.
func (d *device) onDecision(client paho.Client, m paho.Message) {
	if len(m.Payload()) == 0 {
		// The retained decision was cleared: keep the current split and
		// wait for the gateway to restore it.
		d.log.Info("split decision cleared; keeping the current split until the gateway republishes it", "topic", m.Topic(), "split", d.split.Load())
		return
	}
	dec, err := wire.ParseDecision(m.Payload())
	if err != nil {
		d.log.Warn("ignoring malformed split decision", "topic", m.Topic(), "error", err, "payload", truncate(m.Payload()))
		return
	}
	if err := d.pipe.CheckSplit(dec.Split); err != nil {
		d.log.Warn("ignoring split decision", "topic", m.Topic(), "error", err)
		return
	}
	c := d.ctl
	c.mu.Lock()
	if pending := c.pending; pending != "" && dec.CmdID != pending && (c.sentAt.IsZero() || time.Since(c.sentAt) < pendingWait) {
		c.mu.Unlock()
		d.log.Debug("ignoring decision: waiting for the answer to our command", "cmd_id", pending, "epoch", dec.Epoch)
		return
	}
	if dec.GatewayRun == c.gatewayRun && dec.Epoch < c.epoch {
		c.mu.Unlock()
		return // an older decision delivered late
	}
	c.pending = ""
	changed := int64(dec.Split) != d.split.Load() || dec.Mode != c.mode || dec.TargetFPS != c.target
	c.mode, c.target, c.epoch, c.gatewayRun = dec.Mode, dec.TargetFPS, dec.Epoch, dec.GatewayRun
	d.split.Store(int64(dec.Split)) // takes effect at the next frame
	c.mu.Unlock()
	if changed {
		d.log.Info("applying split decision", "split", dec.Split, "mode", dec.Mode, "target_fps", dec.TargetFPS, "epoch", dec.Epoch, "reason", dec.Reason)
	}
	d.publishState(client)
	d.decidedOne.Do(func() { close(d.decided) })
}

// onSlowdown changes the emulated slowdown while the device runs.
func (d *device) onSlowdown(client paho.Client, m paho.Message) {
	if m.Retained() {
		d.log.Warn("ignoring a retained slowdown command", "topic", m.Topic())
		return
	}
	text := strings.TrimSpace(string(m.Payload()))
	f, err := wire.ParseDecimal(text)
	if err != nil || !(f >= 1 && f <= 1000) {
		d.log.Warn("refusing slowdown command", "topic", m.Topic(), "payload", truncate(m.Payload()))
		b, _ := json.Marshal(wire.ControlError{Topic: m.Topic(), Received: truncate(m.Payload()), Error: "slowdown must be a plain decimal number from 1 to 1000 (e.g. 4 or 2.5)", TS: time.Now().UTC()})
		client.Publish(wire.ControlErrorTopic(d.cfg.ID), 1, false, b)
		return
	}
	d.SetSlowdown(f)
	d.perf.requestProfile()
	d.log.Info("emulated slowdown changed", "slowdown", f)
	d.publishState(client)
}

// pendingWait bounds how long the device ignores decisions that do not
// answer its start-up commands (an answer lost with a connection must not
// make it deaf to the gateway for good).
const pendingWait = 10 * time.Second

// sendStartCommands sends, once, the target and the manual split the
// configuration asks for, as commands to the gateway. Commands that fail
// are sent again on the next connect.
func (d *device) sendStartCommands(c paho.Client) {
	d.ctl.mu.Lock()
	cmds := d.ctl.cmds
	d.ctl.mu.Unlock()
	var failed [][2]string
	for _, cmd := range cmds {
		if err := mqttc.Publish(c, cmd[0], 1, false, cmd[1]); err != nil {
			d.log.Warn("could not send start-up command; sending it again on the next connect", "topic", cmd[0], "error", err)
			failed = append(failed, cmd)
		}
	}
	d.ctl.mu.Lock()
	d.ctl.cmds = failed
	if len(cmds) > 0 && len(failed) == 0 {
		d.ctl.sentAt = time.Now()
	}
	d.ctl.mu.Unlock()
}

// currentState is what the device runs now.
func (d *device) currentState() wire.DeviceState {
	c := d.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	k := int(d.split.Load())
	names := d.pipe.StageNames()
	return wire.DeviceState{
		Device: d.cfg.ID, Split: k, Mode: c.mode, TargetFPS: c.target, Epoch: c.epoch, GatewayRun: c.gatewayRun,
		Pipeline: d.pipe.Name(), Stages: len(names), LocalStages: names[:k], RemoteStages: names[k:],
		Slowdown: floatFrom(d.slowdown.Load()), Run: d.run, SWVersion: config.VersionString("splitpoint"),
	}
}

// publishState publishes the retained state; on every connect and after
// every applied decision.
func (d *device) publishState(c paho.Client) {
	d.ctl.stateMu.Lock()
	defer d.ctl.stateMu.Unlock()
	b, _ := json.Marshal(d.currentState())
	if err := mqttc.Publish(c, wire.StateTopic(d.cfg.ID), 1, true, b); err != nil {
		d.log.Warn("could not publish state", "error", err)
	}
}
