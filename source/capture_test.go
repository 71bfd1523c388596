package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"image"
	"image/color"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/splitpoint/splitpoint/internal/matcheck"
)

// The tests here run real OpenCV (FFmpeg) against a real MJPEG-over-HTTP
// server and real AVI files.

// logBuf collects a source's log.
type logBuf struct{ testutil.Buffer }

// count counts the records with message msg.
func (l *logBuf) count(msg string) int { return l.Count(fmt.Sprintf("msg=%q", msg)) }

func testLog() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// Stream frames are 320x240, textured, with a white 40x40 square in the top
// band at column i for the i-th frame of a connection.
const (
	streamW, streamH = 320, 240
	indexCell        = 40
)

func streamFrame(i int) gocv.Mat {
	m := gocv.NewMatWithSize(streamH, streamW, gocv.MatTypeCV8UC3)
	rng := rand.New(rand.NewPCG(7, 7))
	for y := indexCell; y < streamH; y += 8 {
		for x := 0; x < streamW; x += 8 {
			v := uint8(40 + rng.IntN(160))
			gocv.Rectangle(&m, image.Rect(x, y, x+8, y+8), color.RGBA{R: v, G: v / 2, B: 255 - v}, -1)
		}
	}
	x := indexCell * i
	gocv.Rectangle(&m, image.Rect(x, 0, x+indexCell, indexCell), color.RGBA{R: 255, G: 255, B: 255}, -1)
	return m
}

// streamIndex reads the index back from a frame (-1: none found).
func streamIndex(t *testing.T, m gocv.Mat) int {
	t.Helper()
	if m.Cols() != streamW || m.Rows() != streamH || m.Type() != gocv.MatTypeCV8UC3 {
		t.Fatalf("frame is %dx%d type %v, want %dx%d 8UC3", m.Cols(), m.Rows(), m.Type(), streamW, streamH)
	}
	found := -1
	for j := 0; j < streamW/indexCell; j++ {
		r := m.Region(image.Rect(j*indexCell, 0, (j+1)*indexCell, indexCell))
		mean := r.Mean().Val1
		r.Close()
		if mean > 200 {
			if found >= 0 {
				return -1
			}
			found = j
		}
	}
	return found
}

// connPlan is what the MJPEG server does with one connection.
type connPlan struct {
	hangUp      bool // close the connection without answering
	stallBefore bool // hold the request before answering
	frames      int  // send frames 0..frames-1
	stall       bool // then hold the connection open
	after       int  // once released, send this many more frames
	corrupt     int  // if > 0: frame corrupt-1 is sent with its JPEG data zeroed
	corruptAll  bool // every frame is sent with its JPEG data zeroed
}

// mjpegServer serves multipart/x-mixed-replace JPEG streams on 127.0.0.1,
// each connection (counted from 1) as plan says. A hold ends when release
// is closed, the connection closes or after 60 s.
type mjpegServer struct {
	url     string
	stop    func()
	plan    func(n int) connPlan
	parts   [][]byte
	release chan struct{}
	relOnce sync.Once

	mu      sync.Mutex
	conns   int
	accepts []time.Time
}

func newMJPEGServer(t *testing.T, plan func(n int) connPlan) *mjpegServer {
	t.Helper()
	s := &mjpegServer{plan: plan, release: make(chan struct{})}
	for i := 0; i < streamW/indexCell; i++ {
		m := streamFrame(i)
		b, err := gocv.IMEncode(gocv.JPEGFileExt, m)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		s.parts = append(s.parts, bytes.Clone(b.GetBytes()))
		b.Close()
	}
	var addr string
	addr, s.stop = testutil.Serve(t, http.HandlerFunc(s.serve))
	s.url = "http://" + addr + "/stream.mjpg"
	t.Cleanup(s.shutdown)
	return s
}

// shutdown closes the listener and every connection.
func (s *mjpegServer) shutdown() {
	s.stop()
	s.unblock()
}

func (s *mjpegServer) unblock() { s.relOnce.Do(func() { close(s.release) }) }

func (s *mjpegServer) connections() (int, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, append([]time.Time(nil), s.accepts...)
}

func (s *mjpegServer) hold(r *http.Request) bool {
	select {
	case <-s.release:
		return true
	case <-r.Context().Done():
		return false
	case <-time.After(60 * time.Second):
		return true
	}
}

func (s *mjpegServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.conns++
	s.accepts = append(s.accepts, time.Now())
	p := s.plan(s.conns)
	s.mu.Unlock()
	if p.hangUp {
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
		return
	}
	if p.stallBefore && !s.hold(r) {
		return
	}
	w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary=splitpointframe")
	w.WriteHeader(http.StatusOK)
	send := func(i int) {
		b := s.parts[i%len(s.parts)]
		if i == p.corrupt-1 || p.corruptAll {
			b = bytes.Clone(b)
			clear(b[2 : len(b)-2])
		}
		fmt.Fprintf(w, "--splitpointframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(b))
		w.Write(b)
		io.WriteString(w, "\r\n")
		w.(http.Flusher).Flush()
	}
	for i := 0; i < p.frames; i++ {
		send(i)
	}
	if p.stall {
		if !s.hold(r) {
			return
		}
		for i := 0; i < p.after; i++ {
			send(p.frames + i)
		}
	}
}

// readIndex reads one frame and returns its index.
func readIndex(t *testing.T, src Source, ctx context.Context) int {
	t.Helper()
	m, err := src.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	defer m.Close()
	return streamIndex(t, m)
}

// waitIdle waits until no OpenCV operation of c is running and its capture
// is closed.
func waitIdle(t *testing.T, src Source, timeout time.Duration) {
	t.Helper()
	c := src.(*capture)
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		idle := !c.running && c.vc == nil
		c.mu.Unlock()
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned OpenCV operation had not finished %v after the server closed", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitMats waits until the number of open Mats is back to before.
func waitMats(t *testing.T, before int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for matcheck.Open() != before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	matcheck.Assert(t, before)
}

func TestLiveStreamReopensAfterEachDrop(t *testing.T) {
	before := matcheck.Open()
	const k, conns = 4, 4
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: k} })
	log, logs := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Every frame of every connection, in order, none twice: k frames, a
	// drop, k frames, ...
	for c := 0; c < conns; c++ {
		for i := 0; i < k; i++ {
			if got := readIndex(t, src, context.Background()); got != i {
				t.Fatalf("connection %d: frame %d has index %d", c+1, i, got)
			}
		}
		if st := src.Stats(); st.Reopens != int64(c) || st.Errors != 0 {
			t.Errorf("after %d connections: %+v, want Reopens %d, Errors 0", c+1, st, c)
		}
	}
	if n, _ := s.connections(); n != conns {
		t.Errorf("server saw %d connections, want %d", n, conns)
	}
	if lost, back := logs.count("source lost; reopening"), logs.count("source back"); lost != conns-1 || back != conns-1 {
		t.Errorf("logged %d losses and %d returns, want %d each:\n%s", lost, back, conns-1, logs)
	}
	if !strings.Contains(logs.String(), "attempts=1 ") {
		t.Errorf("the return does not say after how many attempts:\n%s", logs)
	}
	if err := src.Close(); err != nil {
		t.Error(err)
	}
	matcheck.Assert(t, before)
}

func TestLiveStreamSkipsABadFrame(t *testing.T) {
	before := matcheck.Open()
	// Frame 3 of 6 cannot be decoded; the stream goes on.
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: 6, corrupt: 4, stall: true} })
	log, logs := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for i := 0; i < 5; i++ {
		got = append(got, readIndex(t, src, context.Background()))
	}
	if fmt.Sprint(got) != "[0 1 2 4 5]" {
		t.Errorf("frames %v, want [0 1 2 4 5]", got)
	}
	if st := src.Stats(); st != (Stats{Errors: 1}) {
		t.Errorf("%+v, want 1 error and no reopen", st)
	}
	if n, _ := s.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if n := logs.count("source frame unreadable; skipped"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs)
	}
	src.Close()
	s.shutdown()
	waitIdle(t, src, 10*time.Second)
	matcheck.Assert(t, before)
}

func TestLiveStreamGivesUp(t *testing.T) {
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: 2} })
	log, logs := testLog()
	const giveUp = time.Second
	src, err := OpenWith(s.url, Options{ReopenGiveUp: giveUp, ReopenBackoffMax: 200 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	readIndex(t, src, context.Background())
	readIndex(t, src, context.Background())
	s.shutdown() // connections refused from now on
	t0 := time.Now()
	m, err := src.Read(context.Background())
	took := time.Since(t0)
	t.Logf("gave up after %v: %v", took, err)
	if err == nil {
		m.Close()
		t.Fatal("Read returned a frame from a server that is gone")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "no frame since") {
		t.Errorf("error %q, want one saying the source could not be reopened", err)
	}
	if took < giveUp || took > giveUp+2*time.Second {
		t.Errorf("gave up after %v, want just after %v", took, giveUp)
	}
	if _, err2 := src.Read(context.Background()); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("next Read: %v, want the same error", err2)
	}
	if st := src.Stats(); st.Reopens != 0 {
		t.Errorf("%+v, want no reopens", st)
	}
	if n := logs.count("source lost; reopening"); n != 1 {
		t.Errorf("%d loss warnings, want 1", n)
	}
}

func TestLiveStreamThatOpensButYieldsNoFrameGivesUp(t *testing.T) {
	// After the first connection, OpenCV can open the stream (its parts
	// are there) but decode none of its frames.
	s := newMJPEGServer(t, func(n int) connPlan { return connPlan{frames: 3, corruptAll: n > 1} })
	log, logs := testLog()
	const giveUp = 2 * time.Second
	src, err := OpenWith(s.url, Options{ReopenGiveUp: giveUp, ReopenBackoffMax: 200 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := 0; i < 3; i++ {
		readIndex(t, src, context.Background())
	}
	t0 := time.Now()
	_, err = src.Read(context.Background())
	took := time.Since(t0)
	t.Logf("after %v: %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "no frame since") {
		t.Fatalf("Read: %v, want a give-up error", err)
	}
	if took < giveUp || took > giveUp+2*time.Second {
		t.Errorf("gave up after %v, want just after %v", took, giveUp)
	}
	if n := logs.count("source reopened"); n < 2 {
		t.Errorf("reopened %d times, want several (the stream opens):\n%s", n, logs)
	}
	if lost, back := logs.count("source lost; reopening"), logs.count("source back"); lost != 1 || back != 0 {
		t.Errorf("%d losses and %d returns logged, want 1 and 0", lost, back)
	}
	if st := src.Stats(); st.Reopens != 0 {
		t.Errorf("%+v, want no reopen counted: no frame came", st)
	}
}

func TestLiveStreamReopenBackoff(t *testing.T) {
	// The first connection streams two frames; every later one is hung up at
	// once, so every reopen fails.
	s := newMJPEGServer(t, func(n int) connPlan { return connPlan{frames: 2, hangUp: n > 1} })
	log, logs := testLog()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()
	src, err := OpenWith(s.url, Options{ReopenGiveUp: 4 * time.Second, ReopenBackoffMax: 600 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	readIndex(t, src, context.Background())
	readIndex(t, src, context.Background())
	lastFrame := time.Now()
	if _, err := src.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "no frame since") {
		t.Fatalf("Read: %v, want a give-up error", err)
	}
	_, accepts := s.connections()
	attempts := accepts[1:]
	if len(attempts) < 3 {
		t.Fatalf("%d reopen attempts, want at least 3", len(attempts))
	}
	// Each delay is at least the backoff (250ms, doubling, capped at
	// 600ms), plus the time the failed open took.
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond, 600 * time.Millisecond}
	prev := lastFrame
	for i, at := range attempts {
		gap := at.Sub(prev)
		t.Logf("attempt %d after %v (at %v)", i+1, gap.Round(time.Millisecond), at.Sub(lastFrame).Round(time.Millisecond))
		if gap < want[i] || gap > want[i]+1500*time.Millisecond {
			t.Errorf("attempt %d came %v after the previous, want %v plus an open's time", i+1, gap, want[i])
		}
		prev = at
	}
}

func TestReadReturnsOnCancelWhileStreamStalls(t *testing.T) {
	before := matcheck.Open()
	// Three frames (OpenCV needs more than one to open the stream), then
	// the connection stays open, silent.
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: 3, stall: true} })
	log, _ := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		readIndex(t, src, context.Background())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var cancelled time.Time
	time.AfterFunc(300*time.Millisecond, func() { cancelled = time.Now(); cancel() })
	m, err := src.Read(ctx)
	returned := time.Now()
	if err == nil {
		m.Close()
		t.Fatal("Read returned a frame from a stalled stream")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Read: %v, want context.Canceled", err)
	}
	t.Logf("Read returned %v after the cancel", returned.Sub(cancelled))
	if d := returned.Sub(cancelled); d > time.Second {
		t.Errorf("Read returned %v after the cancel, want at once", d)
	}
	t0 := time.Now()
	if err := src.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("Close took %v", time.Since(t0))
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("Close took %v while OpenCV was blocked, want at once", d)
	}
	if _, err := src.Read(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	// The abandoned read still holds a Mat; when the server lets go, OpenCV
	// returns and the Mat and the capture are closed.
	s.shutdown()
	waitIdle(t, src, 10*time.Second)
	waitMats(t, before, 5*time.Second)
}

func TestReadAfterCancelGetsTheLateFrame(t *testing.T) {
	before := matcheck.Open()
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: 3, stall: true, after: 1} })
	log, _ := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		readIndex(t, src, context.Background())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := src.Read(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read: %v, want context.DeadlineExceeded", err)
	}
	s.unblock() // the server sends frame 3
	if got := readIndex(t, src, context.Background()); got != 3 {
		t.Errorf("frame after the abandoned read has index %d, want 3 (the one the abandoned read got)", got)
	}
	if st := src.Stats(); st != (Stats{}) {
		t.Errorf("%+v, want zero", st)
	}
	src.Close()
	s.shutdown()
	waitIdle(t, src, 10*time.Second)
	matcheck.Assert(t, before)
}

func TestCloseUnblocksRead(t *testing.T) {
	before := matcheck.Open()
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{frames: 3, stall: true} })
	log, _ := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		readIndex(t, src, context.Background())
	}
	time.AfterFunc(300*time.Millisecond, func() { src.Close() })
	t0 := time.Now()
	if _, err := src.Read(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Read: %v, want errClosed", err)
	}
	if d := time.Since(t0); d > 1300*time.Millisecond {
		t.Errorf("Read returned %v after it started, Close was at 300ms", d)
	}
	s.shutdown()
	waitIdle(t, src, 10*time.Second)
	waitMats(t, before, 5*time.Second)
}

func TestReadReturnsOnCancelWhileReopenStalls(t *testing.T) {
	// The first connection streams two frames and closes; the second is
	// accepted and never answered, so OpenCV's reopen blocks.
	s := newMJPEGServer(t, func(n int) connPlan {
		if n == 1 {
			return connPlan{frames: 2}
		}
		return connPlan{stallBefore: true, frames: 3, stall: true}
	})
	log, logs := testLog()
	src, err := OpenWith(s.url, Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	readIndex(t, src, context.Background())
	readIndex(t, src, context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	var cancelled time.Time
	time.AfterFunc(time.Second, func() { cancelled = time.Now(); cancel() }) // after the 250ms backoff
	if _, err := src.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read: %v, want context.Canceled", err)
	}
	d := time.Since(cancelled)
	t.Logf("Read returned %v after the cancel", d)
	if d > time.Second {
		t.Errorf("Read returned %v after the cancel, want at once", d)
	}
	if n, _ := s.connections(); n != 2 {
		t.Errorf("%d connections, want 2 (the reopen in flight)", n)
	}
	// Released now, the reopen that was in flight succeeds; the next Read
	// takes it over.
	s.unblock()
	if got := readIndex(t, src, context.Background()); got != 0 {
		t.Errorf("first frame after the reopen has index %d", got)
	}
	if st := src.Stats(); st.Reopens != 1 {
		t.Errorf("%+v, want 1 reopen", st)
	}
	if n := logs.count("source back"); n != 1 {
		t.Errorf("%d returns logged, want 1", n)
	}
	src.Close()
}

func TestOpenWithContextAbandonsAStalledOpen(t *testing.T) {
	s := newMJPEGServer(t, func(int) connPlan { return connPlan{stallBefore: true} })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	src, err := OpenWithContext(ctx, s.url, Options{})
	if err == nil {
		src.Close()
		t.Fatal("opened a stream that never answered")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("OpenWithContext: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(t0); d > 1300*time.Millisecond {
		t.Errorf("OpenWithContext returned after %v, the deadline was 300ms", d)
	}
}

func TestOpenLiveFailsAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/stream.mjpg"
	ln.Close()
	_, err = OpenWith("http://user:secret@"+strings.TrimPrefix(url, "http://"), Options{})
	if err == nil || !strings.Contains(err.Error(), "OpenCV cannot open it") || strings.Contains(err.Error(), "secret") {
		t.Errorf("got %v", err)
	}
}

// writeAVI writes an MJPG AVI of n frames; frame i is grey level 10+4i.
func writeAVI(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.avi")
	w, err := gocv.VideoWriterFile(path, "MJPG", 30, 160, 120, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		v := uint8(10 + 4*i)
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(v), float64(v), float64(v), 0), 120, 160, gocv.MatTypeCV8UC3)
		if err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// zeroFrames overwrites the JPEG data of the given frames (between their
// SOI and EOI markers) with zeros.
func zeroFrames(t *testing.T, path string, n int, frames ...int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var soi []int
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0xFF && b[i+1] == 0xD8 && b[i+2] == 0xFF {
			soi = append(soi, i)
		}
	}
	if len(soi) != n {
		t.Fatalf("%d JPEG start markers in the AVI, want %d", len(soi), n)
	}
	for _, f := range frames {
		start := soi[f] + 2
		end := bytes.Index(b[start:], []byte{0xFF, 0xD9})
		if end < 0 {
			t.Fatalf("frame %d has no end marker", f)
		}
		clear(b[start : start+end])
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readAll reads a source to its first error and returns the frames' grey
// levels as indices.
func readAll(t *testing.T, src Source) ([]int, error) {
	t.Helper()
	var idx []int
	for {
		m, err := src.Read(context.Background())
		if err != nil {
			return idx, err
		}
		idx = append(idx, int(math.Round((m.Mean().Val1-10)/4)))
		m.Close()
		if len(idx) > 1000 {
			t.Fatal("endless file")
		}
	}
}

func TestFileSkipsUndecodableFrames(t *testing.T) {
	const n = 60
	span := func(from, to int) []int {
		var s []int
		for i := from; i <= to; i++ {
			s = append(s, i)
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		bad      []int
		max      int
		frames   int   // frames returned
		errors   int64 // Stats().Errors
		warnings int   // "source frame undecodable; skipping"
		fail     string
	}{
		{name: "middle", bad: []int{30}, frames: 59, errors: 1, warnings: 1},
		{name: "first", bad: []int{0}, frames: 59, errors: 1, warnings: 1},
		{name: "last", bad: []int{59}, frames: 59, errors: 1, warnings: 1},
		{name: "two runs", bad: []int{10, 11, 40}, frames: 57, errors: 3, warnings: 2},
		{name: "six in a row", bad: span(20, 25), frames: 54, errors: 6, warnings: 1},
		{name: "six in a row, max 7", bad: span(20, 25), max: 7, frames: 54, errors: 6, warnings: 1},
		{name: "six in a row, max 6", bad: span(20, 25), max: 6, frames: 20, errors: 6, warnings: 1,
			fail: `6 undecodable frames in a row (frames 20 to 25 of 60), the limit (max bad frames) is 6`},
		{name: "six in a row, max 4", bad: span(20, 25), max: 4, frames: 20, errors: 4, warnings: 1,
			fail: `4 undecodable frames in a row (frames 20 to 23 of 60), the limit (max bad frames) is 4`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := matcheck.Open()
			path := writeAVI(t, n)
			zeroFrames(t, path, n, tc.bad...)
			log, logs := testLog()
			src, err := OpenWith(path, Options{MaxBadFrames: tc.max, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			idx, err := readAll(t, src)
			var want []int
			for i := 0; i < n && len(want) < tc.frames; i++ {
				if !slices.Contains(tc.bad, i) {
					want = append(want, i)
				}
			}
			if fmt.Sprint(idx) != fmt.Sprint(want) {
				t.Errorf("frames %v\nwant %v", idx, want)
			}
			if tc.fail == "" {
				if err != io.EOF {
					t.Errorf("ended with %v, want io.EOF", err)
				}
			} else if err == nil || err == io.EOF || !strings.Contains(err.Error(), tc.fail) {
				t.Errorf("ended with %v, want an error with %q", err, tc.fail)
			}
			if _, err2 := src.Read(context.Background()); err2 != err {
				t.Errorf("Read after the end: %v, want %v again", err2, err)
			}
			if st := src.Stats(); st.Errors != tc.errors || st.Reopens != 0 {
				t.Errorf("%+v, want Errors %d", st, tc.errors)
			}
			if w := logs.count("source frame undecodable; skipping"); w != tc.warnings {
				t.Errorf("%d warnings, want %d:\n%s", w, tc.warnings, logs)
			}
			src.Close()
			matcheck.Assert(t, before)
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.ReopenBackoffMax != 30*time.Second || o.ReopenGiveUp != 5*time.Minute || o.MaxBadFrames != 25 || o.Log != slog.Default() {
		t.Errorf("%+v", o)
	}
	if o := (Options{ReopenGiveUp: -1}).withDefaults(); o.ReopenGiveUp != -1 {
		t.Errorf("negative give-up became %v", o.ReopenGiveUp)
	}
}
