package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/wire"
)

// Home Assistant's MQTT discovery rules that our payloads must follow (from
// its documentation of device-based discovery and of each platform): the
// keys each platform accepts, the required ones, and the units each device
// class allows.
var (
	haCommon   = []string{"platform", "name", "unique_id", "icon", "qos", "object_id", "default_entity_id", "entity_category", "enabled_by_default", "availability", "availability_topic", "json_attributes_topic", "json_attributes_template"}
	haPlatform = map[string]struct {
		keys     []string
		required []string
	}{
		"sensor": {
			keys:     []string{"state_topic", "value_template", "unit_of_measurement", "device_class", "state_class", "suggested_display_precision", "expire_after", "force_update"},
			required: []string{"state_topic"},
		},
		"number": {
			keys:     []string{"command_topic", "command_template", "state_topic", "value_template", "min", "max", "step", "mode", "unit_of_measurement", "device_class", "optimistic", "retain", "payload_reset"},
			required: []string{"command_topic"},
		},
		"select": {
			keys:     []string{"command_topic", "command_template", "state_topic", "value_template", "options", "optimistic", "retain"},
			required: []string{"command_topic", "options"},
		},
		"camera": {
			keys:     []string{"topic", "image_encoding"},
			required: []string{"topic"},
		},
	}
	haUnits = map[string][]string{
		"temperature": {"°C", "°F", "K"},
		"duration":    {"d", "h", "min", "s", "ms", "µs"},
	}
	haStateClasses = []string{"measurement", "total", "total_increasing", "measurement_angle"}
)

func in(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var templateRef = regexp.MustCompile(`value_json((?:\.[a-z_0-9]+)+)`)

// validateDiscovery checks a payload against the rules, and that every
// value_template refers to a field that the topic it reads really carries
// (samples: topic → a real payload).
func validateDiscovery(t *testing.T, raw []byte, samples map[string]map[string]any, wantMax int) map[string]map[string]any {
	t.Helper()
	var d struct {
		Device       map[string]any            `json:"device"`
		Origin       map[string]any            `json:"origin"`
		Availability []map[string]any          `json:"availability"`
		Components   map[string]map[string]any `json:"components"`
		QoS          int                       `json:"qos"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("discovery payload: %v", err)
	}
	if ids, _ := d.Device["identifiers"].([]any); len(ids) == 0 || d.Device["name"] == "" || d.Device["model"] != "balltrack" || d.Device["sw_version"] == nil {
		t.Errorf("device block %v", d.Device)
	}
	if d.Origin["name"] != "splitpoint" || d.Origin["sw_version"] == nil {
		t.Errorf("origin block %v", d.Origin)
	}
	if len(d.Availability) != 1 || d.Availability[0]["payload_available"] != "online" || d.Availability[0]["payload_not_available"] != "offline" {
		t.Errorf("availability %v", d.Availability)
	}
	unique := map[string]bool{}
	for id, c := range d.Components {
		p, _ := c["platform"].(string)
		rules, ok := haPlatform[p]
		if !ok {
			t.Errorf("%s: platform %q", id, p)
			continue
		}
		for k := range c {
			if !in(haCommon, k) && !in(rules.keys, k) {
				t.Errorf("%s: key %q is not one Home Assistant's %s accepts", id, k, p)
			}
		}
		for _, k := range rules.required {
			if c[k] == nil {
				t.Errorf("%s: lacks %s", id, k)
			}
		}
		uid, _ := c["unique_id"].(string)
		if uid == "" || unique[uid] {
			t.Errorf("%s: unique_id %q missing or repeated", id, uid)
		}
		unique[uid] = true
		if dc, ok := c["device_class"].(string); ok {
			if units, known := haUnits[dc]; !known || !in(units, fmt.Sprint(c["unit_of_measurement"])) {
				t.Errorf("%s: unit %v does not match device class %s", id, c["unit_of_measurement"], dc)
			}
		}
		if sc, ok := c["state_class"].(string); ok && !in(haStateClasses, sc) {
			t.Errorf("%s: state_class %q", id, sc)
		}
		if tmpl, ok := c["value_template"].(string); ok {
			topic, _ := c["state_topic"].(string)
			sample := samples[topic]
			m := templateRef.FindStringSubmatch(tmpl)
			if sample == nil || m == nil {
				t.Errorf("%s: template %q on %s cannot be checked", id, tmpl, topic)
				continue
			}
			var v any = sample
			for _, key := range strings.Split(m[1][1:], ".") {
				obj, ok := v.(map[string]any)
				if !ok {
					t.Errorf("%s: template %q: %s is not an object in %s", id, tmpl, key, topic)
					break
				}
				if v, ok = obj[key]; !ok {
					t.Errorf("%s: template %q: %s has no field %q", id, tmpl, topic, key)
					break
				}
			}
		}
		if p == "number" {
			if mn, mx := c["min"].(float64), c["max"].(float64); !(mn < mx) || c["step"].(float64) <= 0 {
				t.Errorf("%s: min %v max %v step %v", id, c["min"], c["max"], c["step"])
			}
		}
		if p == "select" {
			if opts, _ := c["options"].([]any); len(opts) != 2 {
				t.Errorf("%s: options %v", id, c["options"])
			}
		}
	}
	if sp := d.Components["split"]; sp == nil || sp["min"].(float64) != 1 || sp["max"].(float64) != float64(wantMax) || sp["step"].(float64) != 1 {
		t.Errorf("split number %v: want min 1, max %d, step 1", sp, wantMax)
	}
	for _, need := range []string{"fps", "cpu", "latency", "results_per_s", "split_now", "mode_now", "camera", "split", "target_fps", "mode"} {
		if d.Components[need] == nil {
			t.Errorf("no %s component", need)
		}
	}
	return d.Components
}

func TestHomeAssistantDiscovery(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	w := watch(t, broker)
	var mu sync.Mutex
	var configs [][]byte
	ha := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-ha"))
	if tok := ha.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer ha.Disconnect(100)
	topic := "homeassistant/device/splitpoint_ha1/config"
	if tok := ha.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		configs = append(configs, m.Payload())
		mu.Unlock()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	dev := start(t, "device", "--broker", broker, "--id", "ha1", "--source", "synthetic:?fps=20", "-c", writeFile(t, "pi.toml", "telemetry_interval = \"500ms\"\n"))
	run := runOf(t, w, "ha1")
	waitFor(t, 30*time.Second, "discovery and telemetry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(configs) > 0 && len(w.tele) > 0 && len(w.raw[wire.StateTopic("ha1")]) > 0
	})
	samples := map[string]map[string]any{}
	w.mu.Lock()
	for _, tp := range []string{wire.TelemetryTopic("ha1"), wire.StateTopic("ha1")} {
		var m map[string]any
		list := w.raw[tp]
		if err := json.Unmarshal([]byte(list[len(list)-1]), &m); err != nil {
			t.Fatal(err)
		}
		samples[tp] = m
	}
	w.mu.Unlock()
	mu.Lock()
	latest := configs[len(configs)-1]
	n := len(configs)
	mu.Unlock()
	comps := validateDiscovery(t, latest, samples, 6)

	// The split number's advertised command topic changes the split.
	split := comps["split"]
	if tok := ha.Publish(split["command_topic"].(string), 1, false, "2"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitFor(t, 30*time.Second, "state echo of split 2 from the Home Assistant number", func() bool {
		s, _ := w.lastState(run)
		return s.Split == 2
	})
	// The mode select's command topic takes "auto".
	if tok := ha.Publish(comps["mode"]["command_topic"].(string), 1, false, "auto"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitFor(t, 30*time.Second, "state echo of auto", func() bool {
		s, _ := w.lastState(run)
		return s.Mode == wire.ModeAuto
	})
	// Home Assistant restarting: announce again.
	if tok := ha.Publish("homeassistant/status", 1, false, "online"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitFor(t, 30*time.Second, "a new announcement", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(configs) > n
	})
	dev.stop(t)
}
