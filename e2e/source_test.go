package e2e

import (
	"bytes"
	"fmt"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/splitpoint/splitpoint/source"
)

// mjpegSource serves an MJPEG stream over HTTP on 127.0.0.1
// (multipart/x-mixed-replace, JPEG parts from the synthetic source): each
// connection gets frames parts, then is held open for hold (if any) or
// closed.
type mjpegSource struct {
	url   string
	parts [][]byte
	hold  time.Duration

	mu    sync.Mutex
	conns int
}

func newMJPEGSource(t *testing.T, frames int, hold time.Duration) *mjpegSource {
	t.Helper()
	s := &mjpegSource{hold: hold}
	syn := source.NewSynthetic(source.SyntheticOptions{Width: 640, Height: 480, Seed: 5})
	defer syn.Close()
	for i := 0; i < frames; i++ {
		m, err := syn.Read(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		b, err := gocv.IMEncode(gocv.JPEGFileExt, m)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		s.parts = append(s.parts, bytes.Clone(b.GetBytes()))
		b.Close()
	}
	addr, _ := testutil.Serve(t, http.HandlerFunc(s.serve))
	s.url = "http://" + addr + "/stream.mjpg"
	return s
}

func (s *mjpegSource) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary=e2eframe")
	w.WriteHeader(http.StatusOK)
	for _, b := range s.parts {
		fmt.Fprintf(w, "--e2eframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(b))
		w.Write(b)
		io.WriteString(w, "\r\n")
		w.(http.Flusher).Flush()
	}
	if s.hold > 0 {
		select {
		case <-r.Context().Done():
		case <-time.After(s.hold):
		}
	}
}

func (s *mjpegSource) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// A device whose stream has stalled (OpenCV blocks ~30 s in the read and
// ignores Go contexts) still stops at once on SIGTERM.
func TestDeviceStopsPromptlyWhileSourceStalls(t *testing.T) {
	const frames = 3
	srv := newMJPEGSource(t, frames, 60*time.Second)
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	const drain = 2 * time.Second
	cfg := writeFile(t, "pi.toml", fmt.Sprintf("drain_timeout = %q\nstatus_interval = \"200ms\"\n", drain))
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "stall1", "--source", srv.url)
	captured := regexp.MustCompile(`captured=(\d+) results=(\d+) `)
	waitFor(t, 60*time.Second, "the device to capture and get back the stream's frames", func() bool {
		m := captured.FindAllStringSubmatch(dev.stdout.String(), -1)
		return len(m) > 0 && m[len(m)-1][1] == strconv.Itoa(frames) && m[len(m)-1][2] == strconv.Itoa(frames)
	})
	time.Sleep(500 * time.Millisecond) // the device is now blocked in the read
	t0 := time.Now()
	if err := dev.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := dev.wait(t, drain+time.Second)
	t.Logf("device exited %d, %v after SIGTERM", code, time.Since(t0).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("device exited %d:\n%s", code, tail(dev.stderr.String()))
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.captured != frames || sum.results != frames || sum.drops != 0 {
		t.Errorf("summary %+v, want %d frames captured, each with its result", sum, frames)
	}
	if n := srv.connections(); n != 1 {
		t.Errorf("the server saw %d connections, want 1", n)
	}
}

// A device whose stream drops reopens it and counts the reopens.
func TestDeviceReopensADroppedStream(t *testing.T) {
	const perConn, frames = 10, 25 // three connections: two drops
	srv := newMJPEGSource(t, perConn, 0)
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	cfg := writeFile(t, "pi.toml", "status_interval = \"0s\"\nreopen_backoff_max = \"1s\"\nreopen_give_up = \"30s\"\n")
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "drop1", "--source", srv.url, "--frames", strconv.Itoa(frames))
	if code := dev.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("device exited %d:\n%s", code, tail(dev.stderr.String()))
	}
	out := dev.stdout.String()
	sum := parseSummary(t, out)
	if sum.captured != frames || sum.results != frames || sum.drops != 0 {
		t.Errorf("summary %+v, want %d frames captured across the drops, each with its result", sum, frames)
	}
	if n := srv.connections(); n != 3 {
		t.Errorf("the server saw %d connections, want 3", n)
	}
	m := regexp.MustCompile(`summary device=.* source_reopens=(\d+) source_errors=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no source_reopens=N source_errors=N in the summary:\n%s", tail(out))
	}
	t.Log(m[0])
	if m[1] != "2" || m[2] != "0" {
		t.Errorf("summary says source_reopens=%s source_errors=%s, want 2 and 0", m[1], m[2])
	}
}
