package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel parses debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not a log level (allowed: debug, info, warn, error)", s)
}

// ParseFormat checks a log format: "text" (logfmt-style key=value lines,
// the default; "" means text too) or "json" (one JSON object per line, for
// log shippers).
func ParseFormat(s string) error {
	switch strings.ToLower(s) {
	case "text", "", "json":
		return nil
	}
	return fmt.Errorf("%q is not a log format (allowed: text, json)", s)
}

// NewLogger returns a logger writing to w at the level, in the format
// ("text" or "json"), with every record carrying app=component. The level
// and the format are already validated (ParseLevel, ParseFormat); an
// invalid one falls back to info and text.
func NewLogger(w io.Writer, level, format, component string) *slog.Logger {
	l, _ := ParseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler
	if strings.EqualFold(format, "json") {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("app", component)
}

// CheckLog validates the log_level and log_format settings every binary
// shares: it returns the offending key and why, or "" and nil.
func CheckLog(level, format string) (key string, err error) {
	if _, err := ParseLevel(level); err != nil {
		return "log_level", err
	}
	if err := ParseFormat(format); err != nil {
		return "log_format", err
	}
	return "", nil
}
