package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"

	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/wire"
)

func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Discovery is a Home Assistant device-based discovery payload.
type Discovery struct {
	Device       map[string]any            `json:"device"`
	Origin       map[string]any            `json:"origin"`
	Availability []map[string]any          `json:"availability"`
	Components   map[string]map[string]any `json:"components"`
	QoS          int                       `json:"qos"`
}

// discovery builds the announcement of a device: sensors read from its
// periodic telemetry and state, numbers for the split and the target, a
// select for the mode, all commanding through the …/set topics, and what
// the device's pipeline offers (package tasks' registry): a camera on the
// annotated frames only where it has frames, sensors on its results.
func discovery(id string, st wire.DeviceState, withTemperature bool) Discovery {
	uid := func(c string) string { return "splitpoint_" + id + "_" + c }
	tele, state := wire.TelemetryTopic(id), wire.StateTopic(id)
	sensor := func(c, name, topic, tmpl string, extra map[string]any) map[string]any {
		m := map[string]any{"platform": "sensor", "name": name, "unique_id": uid(c), "state_topic": topic, "value_template": tmpl}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	measurement := func(unit string) map[string]any {
		return map[string]any{"unit_of_measurement": unit, "state_class": "measurement"}
	}
	comps := map[string]map[string]any{
		"fps": sensor("fps", "Frames per second", tele, "{{ value_json.fps }}",
			merge(measurement("fps"), map[string]any{"icon": "mdi:speedometer"})),
		"results_per_s": sensor("results_per_s", "Results per second", tele, "{{ value_json.results_per_s }}",
			merge(measurement("results/s"), map[string]any{"icon": "mdi:check-circle-outline"})),
		"cpu": sensor("cpu", "CPU", tele, "{{ value_json.host.cpu_percent }}",
			merge(measurement("%"), map[string]any{"icon": "mdi:cpu-64-bit"})),
		"latency": sensor("latency", "Latency p50", tele, "{{ value_json.latency_ms.p50 }}",
			merge(measurement("ms"), map[string]any{"device_class": "duration"})),
		"split_now": sensor("split_now", "Split", state, "{{ value_json.split }}", map[string]any{"icon": "mdi:call-split"}),
		"mode_now":  sensor("mode_now", "Split mode", state, "{{ value_json.mode }}", map[string]any{"icon": "mdi:auto-mode"}),
		"split": {
			"platform": "number", "name": "Split point", "unique_id": uid("split"),
			"command_topic": wire.ControlSplitSetTopic(id), "command_template": "{{ value | int }}",
			"state_topic": state, "value_template": "{{ value_json.split }}",
			"min": 1, "max": st.Stages - 1, "step": 1, "mode": "box", "icon": "mdi:call-split",
		},
		"target_fps": {
			"platform": "number", "name": "Target fps", "unique_id": uid("target_fps"),
			"command_topic": wire.ControlTargetSetTopic(id),
			"state_topic":   state, "value_template": "{{ value_json.target_fps }}",
			"min": 0.5, "max": wire.MaxTargetFPS, "step": 0.5, "mode": "box", "unit_of_measurement": "fps", "icon": "mdi:target",
		},
		"mode": {
			"platform": "select", "name": "Split control", "unique_id": uid("mode"),
			"command_topic": wire.ControlSplitSetTopic(id),
			"state_topic":   state, "value_template": "{{ value_json.mode }}",
			"options": []string{wire.ModeAuto, wire.ModeManual}, "icon": "mdi:auto-mode",
		},
	}
	spec, ok := tasks.Lookup(st.Pipeline)
	if !ok {
		logUnknownPipeline(st.Pipeline)
	}
	if ok {
		if spec.HomeAssistant.Frames {
			comps["camera"] = map[string]any{
				"platform": "camera", "name": "Annotated frame", "unique_id": uid("camera"), "topic": wire.AnnotatedTopic(id),
			}
		}
		for _, hs := range spec.HomeAssistant.Sensors {
			extra := map[string]any{"state_class": "measurement"}
			for k, v := range map[string]string{"unit_of_measurement": hs.Unit, "device_class": hs.DeviceClass, "icon": hs.Icon} {
				if v != "" {
					extra[k] = v
				}
			}
			comps[hs.Key] = sensor(hs.Key, hs.Name, wire.ResultTopic(id), hs.Template, extra)
		}
	}
	if withTemperature {
		comps["temperature"] = sensor("temperature", "CPU temperature", tele, "{{ value_json.host.temperature_c }}",
			merge(measurement("°C"), map[string]any{"device_class": "temperature"}))
	}
	sw := config.VersionString("splitpoint")
	return Discovery{
		Device: map[string]any{
			"identifiers": []string{"splitpoint_" + id}, "name": "splitpoint " + id,
			"manufacturer": "splitpoint", "model": st.Pipeline, "sw_version": st.SWVersion,
		},
		Origin: map[string]any{"name": "splitpoint", "sw_version": sw, "support_url": "https://github.com/splitpoint/splitpoint"},
		Availability: []map[string]any{{
			"topic": wire.StatusTopic(id), "payload_available": wire.Online, "payload_not_available": wire.Offline,
		}},
		Components: comps,
		QoS:        1,
	}
}

// unknownPipelines remembers the unknown pipeline names already logged
// (at most 64 names are remembered; later ones are logged each time).
var (
	unknownMu        sync.Mutex
	unknownPipelines = map[string]bool{}
)

// logUnknownPipeline logs, once per name, a device whose pipeline this
// gateway does not know: it is announced without the pipeline's
// components.
func logUnknownPipeline(name string) {
	unknownMu.Lock()
	seen := unknownPipelines[name]
	if !seen && len(unknownPipelines) < 64 {
		unknownPipelines[name] = true
	}
	unknownMu.Unlock()
	if !seen {
		slog.Warn("device runs a pipeline this gateway does not know; announced without its camera or sensors", "pipeline", name, "known", tasks.Names())
	}
}

func merge(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// announce publishes a device's discovery config, retained.
func (p *plane) announce(d *dev) {
	if !p.cfg.HomeAssistant.Enabled || d.stages == 0 {
		return
	}
	p.publish(wire.HADiscoveryTopic(p.cfg.HomeAssistant.Prefix, d.id), discovery(d.id, d.state, d.hasTemp), true)
}

func (p *plane) announceAll() {
	for _, d := range p.devs {
		p.announce(d)
	}
}
