package vibration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/splitpoint/splitpoint/internal/pace"
	"github.com/splitpoint/splitpoint/tasks"
)

// Source URIs of the pipeline:
//
//	synthetic:?seed=S&fps=F&windows=N&fault_every=K&off_every=K
//	    the generator (DefaultSynthetic at the pipeline's sample_rate and
//	    window): fps windows per second (default real time,
//	    sample_rate/window; 0 unpaced), N windows then the end (0:
//	    endless), a fault every K-th window (default 5; 0 never), an
//	    all-zero window every K-th (default 0: never)
//	csv:PATH, csv:-    windows of ax,ay,az rows from a file or stdin
func checkSource(uri string) error {
	switch {
	case strings.HasPrefix(uri, "synthetic:"):
		_, _, _, err := parseSynthetic(uri, DefaultOptions())
		return err
	case strings.HasPrefix(uri, "csv:") && len(uri) > len("csv:"):
		return nil
	}
	return fmt.Errorf("source %q: the vibration pipeline reads synthetic:?seed=S&fps=F&windows=N&fault_every=K&off_every=K, csv:PATH or csv:- (stdin)", uri)
}

func parseSynthetic(uri string, o *Options) (Synthetic, float64, int, error) {
	g := DefaultSynthetic(1)
	g.SampleRate, g.Window = o.SampleRate, o.Window
	fps := o.SampleRate / float64(o.Window)
	windows := 0
	vals, err := url.ParseQuery(strings.TrimPrefix(strings.TrimPrefix(uri, "synthetic:"), "?"))
	if err != nil {
		return g, 0, 0, fmt.Errorf("synthetic source %q: %v", uri, err)
	}
	for k, v := range vals {
		val := v[len(v)-1]
		var n uint64
		var f float64
		switch k {
		case "seed":
			n, err = strconv.ParseUint(val, 10, 64)
			g.Seed = n
		case "fps":
			f, err = strconv.ParseFloat(val, 64)
			if err == nil && !(f >= 0 && f <= 10000) || math.IsNaN(f) {
				err = errors.New("want 0 (unpaced) to 10000")
			}
			fps = f
		case "windows", "fault_every", "off_every":
			n, err = strconv.ParseUint(val, 10, 31)
			switch k {
			case "windows":
				windows = int(n)
			case "fault_every":
				g.FaultEvery = int(n)
			case "off_every":
				g.OffEvery = int(n)
			}
		default:
			err = errors.New("unknown option (allowed: seed, fps, windows, fault_every, off_every)")
		}
		if err != nil {
			return g, 0, 0, fmt.Errorf("synthetic source option %s=%q: %v", k, val, err)
		}
	}
	return g, fps, windows, g.Validate()
}

func openSource(ctx context.Context, uri string, o tasks.Options, _ tasks.SourceOptions) (tasks.Source, error) {
	opts, ok := o.(*Options)
	if !ok {
		return nil, fmt.Errorf("vibration: options of type %T", o)
	}
	if err := checkSource(uri); err != nil {
		return nil, err
	}
	if strings.HasPrefix(uri, "csv:") {
		path := strings.TrimPrefix(uri, "csv:")
		var r io.ReadCloser = os.Stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("open source %q: %w", path, err)
			}
			r = f
		}
		cr, err := NewCSVReader(r, opts.Window)
		if err != nil {
			r.Close()
			return nil, err
		}
		return newCSVSource(cr, r), nil
	}
	g, fps, windows, err := parseSynthetic(uri, opts)
	if err != nil {
		return nil, err
	}
	s := &synthSource{g: g, pacer: pace.Pacer{FPS: fps}, windows: windows}
	return s, nil
}

// synthSource paces the generator's windows.
type synthSource struct {
	g       Synthetic
	pacer   pace.Pacer
	windows int
	n       int
}

// Read returns window n (float32 [window 3]), paced at fps.
func (s *synthSource) Read(ctx context.Context) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.windows > 0 && s.n >= s.windows {
		return nil, io.EOF
	}
	if err := s.pacer.Wait(ctx); err != nil {
		return nil, err
	}
	a, err := s.g.WindowAt(s.n)
	if err != nil {
		return nil, err
	}
	s.n++
	return a, nil
}

// Close implements tasks.Source.
func (s *synthSource) Close() error { return nil }

// FPS implements tasks.SourceRate.
func (s *synthSource) FPS() float64 { return s.pacer.FPS }

// csvSource reads windows from CSV rows on its own goroutine, so that Read
// returns as soon as ctx ends even while a pipe or a terminal (csv:-) has
// nothing to say. CSV windows are not paced: a file is read as fast as the
// device takes it.
type csvSource struct {
	c       io.Closer
	windows chan csvWindow // the reader's next window (at most one ahead)
	stop    chan struct{}
	once    sync.Once
	err     error // sticky: the reader's last error (io.EOF at the end)
}

type csvWindow struct {
	a   tasks.Array
	err error
}

func newCSVSource(r *CSVReader, c io.Closer) *csvSource {
	s := &csvSource{c: c, windows: make(chan csvWindow), stop: make(chan struct{})}
	go func() {
		for {
			a, err := r.Next()
			select {
			case s.windows <- csvWindow{a, err}:
			case <-s.stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

// Read returns the next complete window, io.EOF at the end, or ctx's error
// as soon as ctx ends.
func (s *csvSource) Read(ctx context.Context) (any, error) {
	if s.err != nil {
		return nil, s.err
	}
	select {
	case w := <-s.windows:
		if w.err != nil {
			s.err = w.err
			return nil, w.err
		}
		return w.a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops the reader and closes the input; it returns at once (a read
// blocked on a terminal ends with the process).
func (s *csvSource) Close() error {
	s.once.Do(func() { close(s.stop) })
	return s.c.Close()
}
