package broker

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1883": true, "localhost:0": true, "[::1]:1": true, "0.0.0.0:1883": false, ":1883": false, "192.168.1.2:1883": false} {
		if got, err := IsLoopback(addr); err != nil || got != want {
			t.Errorf("%s: %v %v", addr, got, err)
		}
	}
	if _, err := IsLoopback("nohost"); err == nil {
		t.Error("nohost accepted")
	}
}

func TestAnonymousNonLoopbackRefused(t *testing.T) {
	_, err := Start(Config{Listen: "0.0.0.0:0", MaxMessageBytes: 1024}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "refusing anonymous access") {
		t.Errorf("got %v", err)
	}
}
