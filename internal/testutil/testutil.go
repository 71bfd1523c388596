// Package testutil holds what several packages' tests need: a
// goroutine-safe buffer for logs and output, and an HTTP server on
// 127.0.0.1 for stream sources.
package testutil

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Buffer is a goroutine-safe text buffer (an io.Writer for logs and
// process output).
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write implements io.Writer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Count counts the non-overlapping occurrences of sub.
func (s *Buffer) Count(sub string) int { return strings.Count(s.String(), sub) }

// Serve serves h on a free port of 127.0.0.1 until stop is called or the
// test ends, and returns the server's address (host:port). stop closes the
// listener and every connection.
func Serve(t testing.TB, h http.Handler) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	var once sync.Once
	stop = func() { once.Do(func() { _ = srv.Close() }) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
