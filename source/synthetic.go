package source

import (
	"context"

	"fmt"
	"github.com/splitpoint/splitpoint/internal/pace"
	"image"
	"image/color"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"

	"gocv.io/x/gocv"
)

// SyntheticOptions configure the synthetic source.
type SyntheticOptions struct {
	Width, Height int
	FPS           float64 // 0: as fast as frames are read
	Seed          uint64
	Frames        int // 0: endless
}

// ParseSynthetic parses "synthetic:?size=WxH&fps=F&seed=S&frames=N". Every
// option is optional; the defaults are 640x480, 30 fps, seed 1, endless.
func ParseSynthetic(uri string) (SyntheticOptions, error) {
	o := SyntheticOptions{Width: 640, Height: 480, FPS: 30, Seed: 1}
	q := strings.TrimPrefix(strings.TrimPrefix(uri, "synthetic:"), "?")
	vals, err := url.ParseQuery(q)
	if err != nil {
		return o, fmt.Errorf("synthetic source options %q: %v", q, err)
	}
	for k, v := range vals {
		val := v[len(v)-1]
		switch k {
		case "size":
			w, h, ok := strings.Cut(val, "x")
			o.Width, err = strconv.Atoi(w)
			if err == nil && ok {
				o.Height, err = strconv.Atoi(h)
			}
			if err != nil || !ok || o.Width < 64 || o.Height < 48 || o.Width > 4096 || o.Height > 4096 {
				return o, fmt.Errorf("synthetic size %q: want WxH between 64x48 and 4096x4096", val)
			}
		case "fps":
			o.FPS, err = strconv.ParseFloat(val, 64)
			if err != nil || o.FPS < 0 || o.FPS > 1000 || math.IsNaN(o.FPS) {
				return o, fmt.Errorf("synthetic fps %q: want 0 (unpaced) to 1000", val)
			}
		case "seed":
			o.Seed, err = strconv.ParseUint(val, 10, 64)
			if err != nil {
				return o, fmt.Errorf("synthetic seed %q: want a whole number", val)
			}
		case "frames":
			o.Frames, err = strconv.Atoi(val)
			if err != nil || o.Frames < 0 {
				return o, fmt.Errorf("synthetic frames %q: want a whole number ≥ 0", val)
			}
		default:
			return o, fmt.Errorf("synthetic source: unknown option %q (allowed: size, fps, seed, frames)", k)
		}
	}
	return o, nil
}

// Truth is the synthetic ball in frame n, in source pixels.
type Truth struct {
	X, Y, Radius int
	// Visible: some of the ball is in the frame. Full: all of it is.
	Visible, Full bool
}

// Period is the length of the synthetic source's cycle in frames; the last
// HiddenFrames of each cycle show no ball.
const (
	Period       = 120
	HiddenFrames = 8
)

// BallColor is the synthetic ball's colour (BGR 30,200,30: HSV hue 60).
var BallColor = color.RGBA{R: 30, G: 200, B: 30}

// TruthAt returns the ground truth of frame n (0-based) for the options.
// The ball follows a Lissajous path that touches the frame's edges now and
// then, its radius breathes, and it is hidden for the last HiddenFrames
// frames of every Period.
func (o SyntheticOptions) TruthAt(n int) Truth {
	if n%Period >= Period-HiddenFrames {
		return Truth{}
	}
	phase := float64(n) + float64(o.Seed%97)
	w, h := float64(o.Width), float64(o.Height)
	base := math.Min(w, h) / 12
	r := int(math.Round(base * (1 + 0.4*math.Sin(phase*2*math.Pi/90))))
	x := int(math.Round(w/2 + (w/2)*0.95*math.Sin(phase*2*math.Pi/97)))
	y := int(math.Round(h/2 + (h/2)*0.9*math.Sin(phase*2*math.Pi/61+1)))
	t := Truth{X: x, Y: y, Radius: r}
	t.Full = x-r >= 0 && y-r >= 0 && x+r < o.Width && y+r < o.Height
	t.Visible = x+r >= 0 && y+r >= 0 && x-r < o.Width && y-r < o.Height
	return t
}

// Synthetic draws a moving green ball over a textured background.
type Synthetic struct {
	o     SyntheticOptions
	bg    gocv.Mat
	n     int
	pacer pace.Pacer
}

// NewSynthetic builds the background for the options.
func NewSynthetic(o SyntheticOptions) *Synthetic {
	bg := gocv.NewMatWithSize(o.Height, o.Width, gocv.MatTypeCV8UC3)
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	// Grey blocks (saturation 0: never in the green range) ...
	const block = 8
	for y := 0; y < o.Height; y += block {
		for x := 0; x < o.Width; x += block {
			v := uint8(40 + rng.IntN(160))
			gocv.Rectangle(&bg, image.Rect(x, y, x+block, y+block), color.RGBA{R: v, G: v, B: v}, -1)
		}
	}
	// ... and red and blue strokes (hues far from green).
	for i := 0; i < 12; i++ {
		c := color.RGBA{R: uint8(150 + rng.IntN(100)), G: 20, B: 30}
		if i%2 == 1 {
			c = color.RGBA{R: 20, G: 40, B: uint8(150 + rng.IntN(100))}
		}
		p1 := image.Pt(rng.IntN(o.Width), rng.IntN(o.Height))
		p2 := image.Pt(rng.IntN(o.Width), rng.IntN(o.Height))
		gocv.Line(&bg, p1, p2, c, 3)
	}
	return &Synthetic{o: o, bg: bg, pacer: pace.Pacer{FPS: o.FPS}}
}

// FPS is the rate the source is paced to (0: unpaced).
func (s *Synthetic) FPS() float64 { return s.o.FPS }

// Options returns the source's options (and so its ground truth).
func (s *Synthetic) Options() SyntheticOptions { return s.o }

// Read returns the next frame, paced to the configured fps.
func (s *Synthetic) Read(ctx context.Context) (gocv.Mat, error) {
	if s.o.Frames > 0 && s.n >= s.o.Frames {
		return gocv.Mat{}, io.EOF
	}
	if err := s.pacer.Wait(ctx); err != nil {
		return gocv.Mat{}, err
	}
	f := s.bg.Clone()
	if t := s.o.TruthAt(s.n); t.Visible {
		gocv.Circle(&f, image.Pt(t.X, t.Y), t.Radius, BallColor, -1)
	}
	s.n++
	return f, nil
}

// Stats returns zero counters: a synthetic source neither drops nor fails.
func (s *Synthetic) Stats() Stats { return Stats{} }

// Close releases the background.
func (s *Synthetic) Close() error { return s.bg.Close() }
