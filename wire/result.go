package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ResultHead is the framework's part of a result: which frame it answers and
// how it was processed. The pipeline's sink adds its own fields.
type ResultHead struct {
	Device     string    `json:"device"`
	Run        string    `json:"run"`
	Seq        uint64    `json:"seq"`
	FilteredAt *string   `json:"filtered_at"`
	Split      int       `json:"split"`
	CaptureTS  time.Time `json:"capture_ts"`
	// Error, when set, says that the cloud could not process the frame (a
	// stage failed on it): the result carries no pipeline fields and the
	// device counts the frame as dropped (cloud_error) instead of
	// resending it forever.
	Error string `json:"error,omitempty"`
}

// MaxResultBytes bounds a result a device accepts.
const MaxResultBytes = 64 << 10

// MarshalResult writes one result object: device, run and seq first, then
// the pipeline's fields (app must be a JSON object, possibly empty), then
// filtered_at, split and capture_ts. The framework's keys win: app may not
// use them.
func MarshalResult(h ResultHead, app json.RawMessage) ([]byte, error) {
	var appFields map[string]json.RawMessage
	if len(app) > 0 {
		if err := json.Unmarshal(app, &appFields); err != nil {
			return nil, fmt.Errorf("pipeline result is not a JSON object: %w", err)
		}
	}
	for _, k := range []string{"device", "run", "seq", "filtered_at", "split", "capture_ts", "error"} {
		if _, ok := appFields[k]; ok {
			return nil, fmt.Errorf("pipeline result uses the framework's key %q", k)
		}
	}
	var b bytes.Buffer
	put := func(key string, v any) error {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(key)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(vb)
		return nil
	}
	b.WriteByte('{')
	_ = put("device", h.Device)
	_ = put("run", h.Run)
	_ = put("seq", h.Seq)
	if len(app) > 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, app); err != nil {
			return nil, err
		}
		inner := bytes.TrimSpace(c.Bytes())
		inner = inner[1 : len(inner)-1]
		if len(inner) > 0 {
			b.WriteByte(',')
			b.Write(inner)
		}
	}
	_ = put("filtered_at", h.FilteredAt)
	_ = put("split", h.Split)
	if err := put("capture_ts", h.CaptureTS.UTC().Format(time.RFC3339Nano)); err != nil {
		return nil, err
	}
	if h.Error != "" {
		_ = put("error", h.Error)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// ParseResultHead reads the framework's fields of a result and checks them.
func ParseResultHead(b []byte) (ResultHead, error) {
	var h ResultHead
	if len(b) > MaxResultBytes {
		return h, fmt.Errorf("result of %d bytes exceeds %d", len(b), MaxResultBytes)
	}
	var raw struct {
		Device     *string    `json:"device"`
		Run        *string    `json:"run"`
		Seq        *uint64    `json:"seq"`
		FilteredAt *string    `json:"filtered_at"`
		Split      *int       `json:"split"`
		CaptureTS  *time.Time `json:"capture_ts"`
		Error      string     `json:"error"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return h, fmt.Errorf("result is not valid JSON: %w", err)
	}
	if raw.Device == nil || raw.Run == nil || raw.Seq == nil || raw.Split == nil {
		return h, errors.New("result lacks device, run, seq or split")
	}
	h.Device, h.Run, h.Seq, h.Split, h.FilteredAt, h.Error = *raw.Device, *raw.Run, *raw.Seq, *raw.Split, raw.FilteredAt, raw.Error
	if raw.CaptureTS != nil {
		h.CaptureTS = *raw.CaptureTS
	}
	return h, nil
}
