package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Modes of the split decision.
const (
	ModeAuto   = "auto"
	ModeManual = "manual"
)

// Decision is the gateway's retained split decision for a device
// (offload/<device>/control/split). It is the single source of truth for
// split, mode and target once it exists.
type Decision struct {
	Split        int       `json:"split"`
	Mode         string    `json:"mode"`
	TargetFPS    float64   `json:"target_fps"`
	Reason       string    `json:"reason"`
	PredictedFPS *float64  `json:"predicted_fps"`
	GatewayRun   string    `json:"gateway_run"`
	Epoch        uint64    `json:"epoch"`
	CmdID        string    `json:"cmd_id,omitempty"`
	TS           time.Time `json:"ts"`
}

// ParseDecision decodes and checks a decision.
func ParseDecision(b []byte) (Decision, error) {
	var d Decision
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("decision is not valid JSON: %w", err)
	}
	if d.Split < 1 || (d.Mode != ModeAuto && d.Mode != ModeManual) || !(d.TargetFPS >= 0) {
		return d, fmt.Errorf("decision has split %d, mode %q, target %g", d.Split, d.Mode, d.TargetFPS)
	}
	return d, nil
}

// DeviceState is the device's retained account of what it runs
// (offload/<device>/state), published after it applies a decision and on
// every connect.
type DeviceState struct {
	Device       string   `json:"device"`
	Split        int      `json:"split"`
	Mode         string   `json:"mode"`
	TargetFPS    float64  `json:"target_fps"`
	Epoch        uint64   `json:"epoch"`
	GatewayRun   string   `json:"gateway_run,omitempty"`
	Pipeline     string   `json:"pipeline"`
	Stages       int      `json:"stages"`
	LocalStages  []string `json:"local_stages"`
	RemoteStages []string `json:"remote_stages"`
	Slowdown     float64  `json:"slowdown"`
	Run          string   `json:"run"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

// ParseDeviceState decodes and checks a device state.
func ParseDeviceState(b []byte) (DeviceState, error) {
	var s DeviceState
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("state is not valid JSON: %w", err)
	}
	if s.Split < 1 || s.Stages < 3 || s.Split >= s.Stages || (s.Mode != ModeAuto && s.Mode != ModeManual) {
		return s, fmt.Errorf("state has split %d of %d stages, mode %q", s.Split, s.Stages, s.Mode)
	}
	return s, nil
}

// SplitCommand is a parsed command from …/control/split/set: a split (which
// implies manual mode) or a mode alone.
type SplitCommand struct {
	Split int    // 0: keep the current split
	Mode  string // ModeAuto or ModeManual
	CmdID string
}

// ParseSplitCommand accepts "3", "auto", "manual", {"split":3},
// {"mode":"auto"}, {"mode":"manual"} and, in JSON, an optional "cmd_id". It
// checks the split against 1..maxSplit.
func ParseSplitCommand(b []byte, maxSplit int) (SplitCommand, error) {
	text := strings.TrimSpace(string(b))
	var c SplitCommand
	switch {
	case text == ModeAuto || text == ModeManual:
		c.Mode = text
		return c, nil
	case strings.HasPrefix(text, "{"):
		var raw struct {
			Split *json.Number `json:"split"`
			Mode  *string      `json:"mode"`
			CmdID string       `json:"cmd_id"`
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil {
			return c, fmt.Errorf("not a split command: %v (want 3, auto, manual, {\"split\":3} or {\"mode\":\"auto\"})", err)
		}
		if len(raw.CmdID) > 64 {
			return c, errors.New("cmd_id longer than 64 characters")
		}
		c.CmdID = raw.CmdID
		if raw.Split != nil {
			if raw.Mode != nil && *raw.Mode != ModeManual {
				return c, fmt.Errorf("a split is manual; mode %q contradicts it", *raw.Mode)
			}
			k, err := parseSplit(raw.Split.String(), maxSplit)
			if err != nil {
				return c, err
			}
			c.Split, c.Mode = k, ModeManual
			return c, nil
		}
		if raw.Mode != nil && (*raw.Mode == ModeAuto || *raw.Mode == ModeManual) {
			c.Mode = *raw.Mode
			return c, nil
		}
		return c, errors.New(`JSON command needs "split" (1..N) or "mode" ("auto" or "manual")`)
	default:
		k, err := parseSplit(text, maxSplit)
		if err != nil {
			return c, err
		}
		c.Split, c.Mode = k, ModeManual
		return c, nil
	}
}

// decimalRe is the only number form commands accept: plain decimal digits
// with an optional fraction. Go's ParseFloat alone would also take "1_000",
// "Inf", "NaN", "1e1", "+3", "3." and ".5".
var decimalRe = regexp.MustCompile(`^[0-9]{1,9}(\.[0-9]{1,9})?$`)

// ParseDecimal parses a number as commands accept it: ^[0-9]+(\.[0-9]+)?$
// (at most nine digits on each side of the point).
func ParseDecimal(s string) (float64, error) {
	if !decimalRe.MatchString(s) {
		return 0, fmt.Errorf("%q is not a plain decimal number (want digits, optionally a point and digits, e.g. 12 or 12.5)", truncate(s, 40))
	}
	return strconv.ParseFloat(s, 64)
}

func parseSplit(s string, maxSplit int) (int, error) {
	// A whole number, also written "3.0" as some clients send one.
	f, err := ParseDecimal(s)
	k := int(f)
	if err == nil && f != math.Trunc(f) {
		err = errors.New("not whole")
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a split (want a whole number 1..%d, auto or manual)", truncate(s, 40), maxSplit)
	}
	if k < 1 || k > maxSplit {
		return 0, fmt.Errorf("split %d out of range (allowed 1..%d)", k, maxSplit)
	}
	return k, nil
}

// TargetCommand is a parsed command from …/control/target_fps/set.
type TargetCommand struct {
	FPS   float64
	CmdID string
}

// MaxTargetFPS bounds the target a command may set.
const MaxTargetFPS = 1000

// ParseTargetCommand accepts a positive number, or {"target_fps":F,"cmd_id":"…"}.
func ParseTargetCommand(b []byte) (TargetCommand, error) {
	text := strings.TrimSpace(string(b))
	var c TargetCommand
	if strings.HasPrefix(text, "{") {
		var raw struct {
			FPS   *json.Number `json:"target_fps"`
			CmdID string       `json:"cmd_id"`
		}
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber()
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil || raw.FPS == nil {
			return c, fmt.Errorf(`not a target command (want a number or {"target_fps":F}): %v`, err)
		}
		if len(raw.CmdID) > 64 {
			return c, errors.New("cmd_id longer than 64 characters")
		}
		text, c.CmdID = raw.FPS.String(), raw.CmdID
	}
	v, err := ParseDecimal(text)
	if err != nil {
		return c, fmt.Errorf("target: %v", err)
	}
	c.FPS = v
	if !(c.FPS > 0 && c.FPS <= MaxTargetFPS) || math.IsInf(c.FPS, 0) {
		return c, fmt.Errorf("target %g fps out of range (want > 0 and ≤ %d)", c.FPS, MaxTargetFPS)
	}
	return c, nil
}

// ControlError is the gateway's answer to a refused command
// (offload/<device>/control/error).
type ControlError struct {
	Topic    string    `json:"topic"`
	Received string    `json:"received"`
	Error    string    `json:"error"`
	TS       time.Time `json:"ts"`
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
