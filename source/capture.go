package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"
)

// errClosed is what Read returns once the source is closed.
var errClosed = errors.New("source is closed")

// errDeadline: the reopen give-up time passed while an open was in flight.
var errDeadline = errors.New("give-up time reached")

// A capture reads an OpenCV VideoCapture (file, camera or stream).
//
// Every call into OpenCV that can block (open, read, and the close of a
// capture being replaced) runs on a goroutine of its own, one at a time.
// Read waits for it, or for ctx, and returns ctx.Err() at once when ctx is
// done: the operation is then abandoned but not lost. The next Read takes
// its result (a frame read late is returned then, not dropped), and Close
// leaves the capture to that goroutine, which closes it, and any frame it
// read, when OpenCV returns: a VideoCapture is never closed while a read
// or an open is blocked on it.
type capture struct {
	uri  string // redacted
	live bool
	o    Options
	open func() (*gocv.VideoCapture, error)
	fps  float64 // set by the first open

	reopens, errors atomic.Int64

	// readMu serialises Read and guards the fields up to mu.
	readMu sync.Mutex
	failed error // sticky: io.EOF, or why the source failed
	// Live sources: outage is set from a drop until the next frame, lostAt
	// is when it began, attempts counts the reopens tried since; stale is
	// set while the source must be reopened, next is when the next attempt
	// is due, backoff the delay before it; retried is set when the last read
	// failed (a second failure in a row is a drop).
	outage   bool
	lostAt   time.Time
	attempts int
	lastErr  error
	stale    bool
	next     time.Time
	backoff  time.Duration
	retried  bool
	// Files: skipped counts undecodable frames so far, run those in a row.
	skipped int64
	run     int

	// mu guards the capture and the operation in flight.
	mu      sync.Mutex
	vc      *gocv.VideoCapture
	pending chan result // the operation in flight or its untaken result
	running bool        // an operation is in OpenCV
	closed  bool
	done    chan struct{} // closed by Close
}

func newCapture(uri string, live bool, o Options, open func() (*gocv.VideoCapture, error)) *capture {
	return &capture{uri: redact(uri), live: live, o: o, open: open, done: make(chan struct{})}
}

type opKind int

const (
	opRead opKind = iota
	opOpen
)

// result is the outcome of an operation.
type result struct {
	kind opKind
	ok   bool     // read: m is a frame; open: vc is open
	m    gocv.Mat // read
	err  error    // read: the frame cannot be converted; open: why it failed
	// read on a file that failed: OpenCV's position (frames decoded so far)
	// and frame count.
	pos, count float64
	vc         *gocv.VideoCapture // open, until the capture takes it
	fps        float64            // open: a live source's frame rate
}

// release frees what an untaken result holds.
func (r *result) release() {
	if r.kind == opRead && r.ok {
		r.m.Close()
	}
	if r.vc != nil {
		r.vc.Close()
		r.vc = nil
	}
}

// do starts an operation (unless one is in flight already: then it is that
// one's result that is awaited) and waits for its result, ctx, Close or the
// deadline (zero: none). Read's state, which chooses the kind, changes only
// when a result is taken, so an operation still in flight is always of the
// kind asked for again.
func (c *capture) do(ctx context.Context, kind opKind, deadline time.Time) (result, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return result{}, errClosed
	}
	if c.pending == nil {
		ch := make(chan result, 1)
		c.pending, c.running = ch, true
		vc := c.vc
		if kind == opOpen {
			c.vc = nil // the operation closes it before opening anew
		}
		go c.operate(ch, kind, vc)
	}
	ch := c.pending
	c.mu.Unlock()

	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		c.mu.Lock()
		defer c.mu.Unlock()
		c.pending = nil
		if c.closed {
			r.release()
			return result{}, errClosed
		}
		if r.kind == opOpen && r.ok {
			c.vc, r.vc = r.vc, nil
		}
		return r, nil
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-c.done:
		return result{}, errClosed
	case <-timeout:
		return result{}, errDeadline
	}
}

// operate runs one operation on vc, on its own goroutine.
func (c *capture) operate(ch chan result, kind opKind, vc *gocv.VideoCapture) {
	var r result
	switch kind {
	case opOpen:
		if vc != nil {
			vc.Close()
		}
		r = c.openCapture()
	case opRead:
		r = readCapture(vc, !c.live)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	if c.closed { // Close left the capture to us
		r.release()
		if c.vc != nil {
			c.vc.Close()
			c.vc = nil
		}
		c.pending = nil
		return
	}
	ch <- r
}

func (c *capture) openCapture() result {
	r := result{kind: opOpen}
	vc, err := c.open()
	if err != nil || !vc.IsOpened() {
		if vc != nil {
			vc.Close()
		}
		// gocv's error repeats the URI, password included: not shown.
		r.err = fmt.Errorf("open source %q: OpenCV cannot open it", c.uri)
		return r
	}
	r.ok, r.vc = true, vc
	if c.live { // a file is read as fast as the device can: its nominal rate does not bound it
		if fps := vc.Get(gocv.VideoCaptureFPS); fps > 0 && fps < 1000 {
			r.fps = fps
		}
	}
	return r
}

func readCapture(vc *gocv.VideoCapture, file bool) result {
	r := result{kind: opRead}
	m := gocv.NewMat()
	if ok := vc.Read(&m); !ok || m.Empty() {
		m.Close()
		if file {
			r.pos = vc.Get(gocv.VideoCapturePosFrames)
			r.count = vc.Get(gocv.VideoCaptureFrameCount)
		}
		return r
	}
	if m.Type() != gocv.MatTypeCV8UC3 {
		conv := gocv.NewMat()
		switch m.Channels() {
		case 1:
			gocv.CvtColor(m, &conv, gocv.ColorGrayToBGR)
		case 4:
			gocv.CvtColor(m, &conv, gocv.ColorBGRAToBGR)
		default:
			r.err = fmt.Errorf("source frame has unsupported type %v", m.Type())
			m.Close()
			conv.Close()
			return r
		}
		m.Close()
		m = conv
	}
	r.ok, r.m = true, m
	return r
}

// openFirst opens the source for the first time.
func (c *capture) openFirst(ctx context.Context) error {
	r, err := c.do(ctx, opOpen, time.Time{})
	if err == nil && !r.ok {
		err = r.err
	}
	if err != nil {
		c.Close()
		return err
	}
	c.fps = r.fps
	return nil
}

// FPS is a live source's frame rate as OpenCV reports it (0: unknown or a
// file).
func (c *capture) FPS() float64 { return c.fps }

// Stats returns the capture's counters.
func (c *capture) Stats() Stats {
	return Stats{Reopens: c.reopens.Load(), Errors: c.errors.Load()}
}

// Read returns the next frame. A live source that dropped is reopened
// here, with backoff, until it yields frames again, ctx is done or the
// give-up time has passed (a reopen that yields no frame does not end the
// outage); a file's undecodable frames are skipped.
func (c *capture) Read(ctx context.Context) (gocv.Mat, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for {
		if c.failed != nil {
			return gocv.Mat{}, c.failed
		}
		if err := ctx.Err(); err != nil {
			return gocv.Mat{}, err
		}
		var deadline time.Time // of a live source's outage
		if c.outage && c.o.ReopenGiveUp > 0 {
			deadline = c.lostAt.Add(c.o.ReopenGiveUp)
			if !time.Now().Before(deadline) {
				c.giveUp()
				continue
			}
		}
		if !c.stale {
			r, err := c.do(ctx, opRead, deadline)
			switch {
			case errors.Is(err, errDeadline):
				c.giveUp()
				continue
			case err != nil:
				return gocv.Mat{}, err
			}
			if m, err, done := c.handleRead(r); done {
				return m, err
			}
			continue
		}
		if wait := time.Until(c.next); wait > 0 {
			if !deadline.IsZero() {
				wait = min(wait, time.Until(deadline))
			}
			if err := c.sleep(ctx, wait); err != nil {
				return gocv.Mat{}, err
			}
			continue
		}
		r, err := c.do(ctx, opOpen, deadline)
		switch {
		case errors.Is(err, errDeadline):
			c.giveUp()
			continue
		case err != nil:
			return gocv.Mat{}, err
		}
		c.handleOpen(r)
	}
}

// handleRead deals with a read's result; done reports whether Read returns
// m and err.
func (c *capture) handleRead(r result) (m gocv.Mat, err error, done bool) {
	switch {
	case r.ok:
		if c.retried { // one failed read followed by a good one: a bad frame
			c.retried = false
			c.errors.Add(1)
			c.o.Log.Warn("source frame unreadable; skipped", "source", c.uri)
		}
		if c.outage { // the outage ends with the first frame
			c.outage, c.lastErr = false, nil
			c.reopens.Add(1)
			c.o.Log.Info("source back", "source", c.uri, "attempts", c.attempts,
				"after", time.Since(c.lostAt).Round(time.Millisecond))
		}
		c.run = 0
		return r.m, nil, true
	case r.err != nil:
		return gocv.Mat{}, r.err, true
	case c.live && !c.retried:
		// OpenCV says false both for a bad frame and a stream that ended:
		// a bad frame is followed by a good one, a closed stream by
		// another failure (at once: observed on HTTP streams).
		c.retried = true
		return gocv.Mat{}, nil, false
	case c.live:
		c.retried = false
		c.stale = true
		now := time.Now()
		if !c.outage {
			c.outage, c.lostAt, c.attempts, c.lastErr = true, now, 0, nil
			c.backoff = min(ReopenBackoffInitial, c.o.ReopenBackoffMax)
			c.o.Log.Warn("source lost; reopening", "source", c.uri)
		} else { // reopened, but no frame came: the same outage goes on
			c.lastErr = errors.New("reopened, but no frame came")
			c.backoff = min(2*c.backoff, c.o.ReopenBackoffMax)
			c.o.Log.Debug("source reopened but yields no frame", "source", c.uri, "attempts", c.attempts, "retry_in", c.backoff)
		}
		c.next = now.Add(c.backoff)
		return gocv.Mat{}, nil, false
	case r.count > 0 && r.pos+float64(c.skipped) < r.count:
		// A file: OpenCV's position counts decoded frames and stays put on
		// a frame it cannot decode, which it skips all the same (observed
		// with OpenCV 4.6 and FFmpeg on an MJPG AVI): the frame just
		// tried is number pos+skipped, and the end is where pos+skipped
		// reaches the frame count.
		frame := int64(r.pos) + c.skipped
		c.skipped++
		c.errors.Add(1)
		c.run++
		if c.run == 1 {
			c.o.Log.Warn("source frame undecodable; skipping", "source", c.uri, "frame", frame)
		}
		if c.run >= c.o.MaxBadFrames {
			c.failed = fmt.Errorf("source %q: %d undecodable frames in a row (frames %d to %d of %d), the limit (max bad frames) is %d",
				c.uri, c.run, frame-int64(c.run)+1, frame, int64(r.count), c.o.MaxBadFrames)
		}
		return gocv.Mat{}, nil, false
	default: // the end of a file (or a failure past its announced count)
		c.failed = io.EOF
		return gocv.Mat{}, nil, false
	}
}

// handleOpen deals with the result of an attempt to reopen a live source.
func (c *capture) handleOpen(r result) {
	c.attempts++
	if r.ok {
		c.stale = false
		c.o.Log.Debug("source reopened", "source", c.uri, "attempts", c.attempts)
		return
	}
	c.lastErr = r.err
	c.backoff = min(2*c.backoff, c.o.ReopenBackoffMax)
	c.next = time.Now().Add(c.backoff)
	c.o.Log.Debug("source reopen failed", "source", c.uri, "attempts", c.attempts, "retry_in", c.backoff, "err", r.err)
}

// giveUp makes the source fail: it is not back within the give-up time.
func (c *capture) giveUp() {
	last := "none finished"
	if c.lastErr != nil {
		last = "last: " + c.lastErr.Error()
	}
	c.failed = fmt.Errorf("source %q lost %v ago, no frame since: giving up after %d reopen attempts (%s; give-up time %v)",
		c.uri, time.Since(c.lostAt).Round(time.Millisecond), c.attempts, last, c.o.ReopenGiveUp)
	c.o.Log.Error("source lost for good", "source", c.uri, "attempts", c.attempts, "give_up", c.o.ReopenGiveUp)
}

// sleep waits d, or until ctx is done or the source closed.
func (c *capture) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return errClosed
	}
}

// Close releases the capture. It returns at once: when OpenCV is still in
// a read or an open, the capture (and what the operation yields) is closed
// when OpenCV returns, by the goroutine waiting for it.
func (c *capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	if c.running {
		return nil
	}
	if c.pending != nil {
		select {
		case r := <-c.pending:
			r.release()
		default:
		}
		c.pending = nil
	}
	if c.vc != nil {
		err := c.vc.Close()
		c.vc = nil
		return err
	}
	return nil
}
