package wire_test

import (
	"strings"
	"testing"

	"github.com/splitpoint/splitpoint/wire"
)

func TestParseSplitCommand(t *testing.T) {
	for in, want := range map[string]wire.SplitCommand{
		"3":                              {Split: 3, Mode: wire.ModeManual},
		" 6\n":                           {Split: 6, Mode: wire.ModeManual},
		"2.0":                            {Split: 2, Mode: wire.ModeManual},
		"auto":                           {Mode: wire.ModeAuto},
		"manual":                         {Mode: wire.ModeManual},
		`{"split":4}`:                    {Split: 4, Mode: wire.ModeManual},
		`{"split":4,"cmd_id":"x1"}`:      {Split: 4, Mode: wire.ModeManual, CmdID: "x1"},
		`{"mode":"auto"}`:                {Mode: wire.ModeAuto},
		`{"mode":"manual","cmd_id":"y"}`: {Mode: wire.ModeManual, CmdID: "y"},
		`{"split":1,"mode":"manual"}`:    {Split: 1, Mode: wire.ModeManual},
	} {
		got, err := wire.ParseSplitCommand([]byte(in), 6)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"0": "out of range", "7": "out of range", "-1": "not a split",
		"1_000": "not a split", "Inf": "not a split", "NaN": "not a split", "1e1": "not a split", "+3": "not a split",
		"3.": "not a split", ".5": "not a split", "0x3": "not a split", `{"split":3e0}`: "not a split", `{"split":-0}`: "not a split", "hello": "not a split", "": "not a split",
		"2.5": "not a split", `{"split":"x"}`: "not a split command", `{"split":9}`: "out of range",
		`{"mode":"fast"}`: "needs", `{}`: "needs", `{"split":2,"mode":"auto"}`: "contradicts", `{"speed":1}`: "unknown field",
		"AUTO": "not a split", "\x00\xff": "not a split",
	} {
		if _, err := wire.ParseSplitCommand([]byte(in), 6); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v, want an error containing %q", in, err, why)
		}
	}
}

func TestParseTargetCommand(t *testing.T) {
	for in, want := range map[string]float64{"20": 20, "0.5": 0.5, `{"target_fps":12.5}`: 12.5, "1000": 1000} {
		if got, err := wire.ParseTargetCommand([]byte(in)); err != nil || got.FPS != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "-3", "1001", "NaN", "Inf", "fast", `{"fps":3}`, `{}`, "",
		"1_000", "1e1", "+3", "3.", ".5", " 5 x", "0x10", `{"target_fps":1e1}`, `{"target_fps":-2}`} {
		if _, err := wire.ParseTargetCommand([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestParseDecisionAndState(t *testing.T) {
	if _, err := wire.ParseDecision([]byte(`{"split":2,"mode":"auto","target_fps":10,"epoch":3}`)); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{`{"split":0,"mode":"auto"}`, `{"split":2,"mode":"x"}`, `nope`, `{"split":2,"mode":"auto","target_fps":-1}`} {
		if _, err := wire.ParseDecision([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if _, err := wire.ParseDeviceState([]byte(`{"split":7,"stages":7,"mode":"auto"}`)); err == nil {
		t.Error("split 7 of 7 stages accepted")
	}
}

func TestControlTopics(t *testing.T) {
	for got, want := range map[string]string{
		wire.ControlSplitTopic("pi1"):       "offload/pi1/control/split",
		wire.ControlSplitSetTopic("pi1"):    "offload/pi1/control/split/set",
		wire.ControlTargetSetTopic("pi1"):   "offload/pi1/control/target_fps/set",
		wire.ControlSlowdownSetTopic("pi1"): "offload/pi1/control/slowdown/set",
		wire.ControlErrorTopic("pi1"):       "offload/pi1/control/error",
		wire.StateTopic("pi1"):              "offload/pi1/state",
		wire.CloudTelemetryTopic("c1"):      "offload/_cloud/c1/telemetry",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
	if d, rest, err := wire.ParseControlTopic("offload/pi1/control/split/set"); err != nil || d != "pi1" || rest != "split/set" {
		t.Errorf("%q %q %v", d, rest, err)
	}
	if _, _, err := wire.ParseControlTopic("offload/pi1/state"); err == nil {
		t.Error("state topic parsed as control")
	}
	if _, err := wire.ParseCloudTelemetryTopic("offload/_cloud/Bad/telemetry"); err == nil {
		t.Error("invalid cloudproc id accepted")
	}
}

// Commands take plain decimals only: what users of other MQTT tools expect,
// not everything Go's ParseFloat accepts.
func TestParseDecimal(t *testing.T) {
	for in, want := range map[string]float64{"0": 0, "12": 12, "12.5": 12.5, "007": 7, "1.000": 1} {
		if got, err := wire.ParseDecimal(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1_000", "Inf", "+Inf", "NaN", "1e1", "+3", "-3", "3.", ".5", "0x1p4", " 3", "3 ", "1,5", "1234567890"} {
		if v, err := wire.ParseDecimal(in); err == nil {
			t.Errorf("%q accepted as %v", in, v)
		}
	}
}
