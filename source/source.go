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

	"gocv.io/x/gocv"
)

// Source yields frames. Read returns a new 8-bit BGR matrix that the caller
// owns, or io.EOF when the source has ended, or ctx.Err() as soon as ctx is
// done, even while OpenCV is blocked. Other errors say that the source
// failed (a live one did not come back in time, too many frames in a row
// could not be decoded, a frame has an unsupported type) or was closed.
// Close returns at once. Stats returns the source's counters; it
// may be called from any goroutine.
type Source interface {
	Read(ctx context.Context) (gocv.Mat, error)
	Close() error
	Stats() Stats
}

// Open opens a source URI:
//
//	synthetic:?size=640x480&fps=30&seed=1&frames=300
//	camera:N               V4L2 camera index N
//	rtsp://…, http://…, https://…   a stream OpenCV opens
//	file:PATH or PATH      a video file
//
// It is OpenWith(uri, Options{}).
func Open(uri string) (Source, error) { return OpenWith(uri, Options{}) }

// OpenWith opens a source URI (see Open) with the given recovery options.
// A source that cannot be opened is an error, a live one too: a wrong URL
// at start-up is a configuration error. Opening a live source blocks until
// OpenCV has connected or given up (FFmpeg gives up after ~30 s);
// OpenWithContext can be abandoned earlier.
func OpenWith(uri string, o Options) (Source, error) {
	return OpenWithContext(context.Background(), uri, o)
}

// OpenWithContext is OpenWith, except that it returns ctx.Err() as soon as
// ctx is done, even while OpenCV is still opening the source (the capture
// is then closed when OpenCV returns it).
//
// A camera, rtsp, http or https source is live: when it drops, Read
// reopens it (see Options) instead of ending. A file ends with io.EOF; its
// undecodable frames are skipped and counted in Stats().Errors.
func OpenWithContext(ctx context.Context, uri string, o Options) (Source, error) {
	o = o.withDefaults()
	var c *capture
	switch {
	case uri == "":
		return nil, errors.New("source is empty")
	case strings.HasPrefix(uri, "synthetic:"):
		so, err := ParseSynthetic(uri)
		if err != nil {
			return nil, err
		}
		return NewSynthetic(so), nil
	case strings.HasPrefix(uri, "camera:"):
		n, err := strconv.Atoi(strings.TrimPrefix(uri, "camera:"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("source %q: camera index must be a number ≥ 0", uri)
		}
		c = newCapture(uri, true, o, func() (*gocv.VideoCapture, error) {
			return gocv.OpenVideoCaptureWithAPI(n, gocv.VideoCaptureV4L2)
		})
	case strings.HasPrefix(uri, "rtsp://"), strings.HasPrefix(uri, "http://"), strings.HasPrefix(uri, "https://"):
		c = newCapture(uri, true, o, func() (*gocv.VideoCapture, error) {
			return gocv.OpenVideoCapture(uri)
		})
	default:
		path := strings.TrimPrefix(uri, "file:")
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open source %q: %w", path, errors.Unwrap(err))
		}
		c = newCapture(uri, false, o, func() (*gocv.VideoCapture, error) {
			return gocv.VideoCaptureFile(path)
		})
	}
	if err := c.openFirst(ctx); err != nil {
		return nil, err
	}
	return c, nil
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

// redact hides a password in a stream URL.
func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	return u.Redacted()
}
