// Package source opens the frame sources a device captures from: a video
// file, a V4L2 camera, an RTSP or HTTP stream (all through OpenCV), or the
// deterministic synthetic source whose ground truth tests can check.
package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"gocv.io/x/gocv"
)

// Source yields frames. Read returns a new 8-bit BGR matrix that the caller
// owns, or io.EOF when the source has ended.
type Source interface {
	Read(ctx context.Context) (gocv.Mat, error)
	Close() error
}

// Open opens a source URI:
//
//	synthetic:?size=640x480&fps=30&seed=1&frames=300
//	camera:N               V4L2 camera index N
//	rtsp://…, http://…, https://…   a stream OpenCV opens
//	file:PATH or PATH      a video file
func Open(uri string) (Source, error) {
	switch {
	case uri == "":
		return nil, errors.New("source is empty")
	case strings.HasPrefix(uri, "synthetic:"):
		o, err := ParseSynthetic(uri)
		if err != nil {
			return nil, err
		}
		return NewSynthetic(o), nil
	case strings.HasPrefix(uri, "camera:"):
		n, err := strconv.Atoi(strings.TrimPrefix(uri, "camera:"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("source %q: camera index must be a number ≥ 0", uri)
		}
		vc, err := gocv.OpenVideoCaptureWithAPI(n, gocv.VideoCaptureV4L2)
		return openCapture(uri, vc, err, true)
	case strings.HasPrefix(uri, "rtsp://"), strings.HasPrefix(uri, "http://"), strings.HasPrefix(uri, "https://"):
		vc, err := gocv.OpenVideoCapture(uri)
		return openCapture(uri, vc, err, true)
	default:
		path := strings.TrimPrefix(uri, "file:")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open source %q: %w", path, errors.Unwrap(err))
		}
		vc, err := gocv.VideoCaptureFile(path)
		return openCapture(uri, vc, err, false)
	}
}

// ValidateURI checks a source URI's form without opening it.
func ValidateURI(uri string) error {
	switch {
	case uri == "":
		return errors.New("must not be empty")
	case strings.HasPrefix(uri, "synthetic:"):
		_, err := ParseSynthetic(uri)
		return err
	case strings.HasPrefix(uri, "camera:"):
		if n, err := strconv.Atoi(strings.TrimPrefix(uri, "camera:")); err != nil || n < 0 {
			return errors.New("camera:N needs an index N ≥ 0")
		}
	}
	return nil
}

func openCapture(uri string, vc *gocv.VideoCapture, err error, live bool) (Source, error) {
	if err != nil {
		return nil, fmt.Errorf("open source %q: %w", redact(uri), err)
	}
	if !vc.IsOpened() {
		vc.Close()
		return nil, fmt.Errorf("open source %q: OpenCV cannot open it", redact(uri))
	}
	c := &capture{vc: vc}
	if live { // a file is read as fast as the device can: its nominal rate does not bound it
		if fps := vc.Get(gocv.VideoCaptureFPS); fps > 0 && fps < 1000 {
			c.fps = fps
		}
	}
	return c, nil
}

// redact hides a password in a stream URL.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	return u.Redacted()
}

type capture struct {
	mu  sync.Mutex
	vc  *gocv.VideoCapture
	fps float64
}

// FPS is a live source's frame rate as OpenCV reports it (0: unknown or a
// file).
func (c *capture) FPS() float64 { return c.fps }

func (c *capture) Read(ctx context.Context) (gocv.Mat, error) {
	if err := ctx.Err(); err != nil {
		return gocv.Mat{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := gocv.NewMat()
	if ok := c.vc.Read(&m); !ok || m.Empty() {
		m.Close()
		return gocv.Mat{}, errEOF
	}
	if m.Type() != gocv.MatTypeCV8UC3 {
		conv := gocv.NewMat()
		switch m.Channels() {
		case 1:
			gocv.CvtColor(m, &conv, gocv.ColorGrayToBGR)
		case 4:
			gocv.CvtColor(m, &conv, gocv.ColorBGRAToBGR)
		default:
			m.Close()
			conv.Close()
			return gocv.Mat{}, fmt.Errorf("source frame has unsupported type %v", m.Type())
		}
		m.Close()
		m = conv
	}
	return m, nil
}

func (c *capture) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vc.Close()
}
