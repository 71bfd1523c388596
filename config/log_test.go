package config

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLoggerJSONLinesParse(t *testing.T) {
	var b bytes.Buffer
	log := NewLogger(&b, "debug", "json", "gateway")
	log.Debug("first", "n", 1)
	log.Info("second with \"quotes\"\nand a newline", "addr", "127.0.0.1:1883")
	log.Warn("third")
	log.Error("fourth", "error", "boom")

	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), b.String())
	}
	want := []struct{ level, msg string }{
		{"DEBUG", "first"},
		{"INFO", "second with \"quotes\"\nand a newline"},
		{"WARN", "third"},
		{"ERROR", "fourth"},
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
		if rec["level"] != want[i].level || rec["msg"] != want[i].msg || rec["app"] != "gateway" {
			t.Errorf("line %d: level=%v msg=%q app=%v, want level=%s msg=%q app=gateway", i+1, rec["level"], rec["msg"], rec["app"], want[i].level, want[i].msg)
		}
		if _, ok := rec["time"]; !ok {
			t.Errorf("line %d has no time: %s", i+1, line)
		}
	}
}

func TestNewLoggerJSONHonoursLevel(t *testing.T) {
	var b bytes.Buffer
	log := NewLogger(&b, "warn", "JSON", "device")
	log.Info("hidden")
	log.Warn("shown")
	var rec map[string]any
	if err := json.Unmarshal(b.Bytes(), &rec); err != nil {
		t.Fatalf("want exactly one JSON line, got %q: %v", b.String(), err)
	}
	if rec["msg"] != "shown" || rec["app"] != "device" {
		t.Errorf("got %v", rec)
	}
}

func TestNewLoggerTextIsDefault(t *testing.T) {
	for _, format := range []string{"text", ""} {
		var b bytes.Buffer
		NewLogger(&b, "info", format, "cloudproc").Info("hello")
		got := b.String()
		if !strings.Contains(got, "level=INFO msg=hello app=cloudproc") || strings.HasPrefix(got, "{") {
			t.Errorf("format %q: got %q, want a text line", format, got)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, ok := range []string{"text", "json", "JSON", ""} {
		if err := ParseFormat(ok); err != nil {
			t.Errorf("ParseFormat(%q): %v", ok, err)
		}
	}
	err := ParseFormat("logfmt")
	if err == nil || !strings.Contains(err.Error(), `"logfmt" is not a log format (allowed: text, json)`) {
		t.Errorf("ParseFormat(logfmt) = %v", err)
	}
}
