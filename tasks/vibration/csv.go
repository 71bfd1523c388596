package vibration

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/splitpoint/splitpoint/tasks"
)

// CSVReader reads windows of samples from CSV text, such as a recording or
// a sensor's output on stdin: one row per sample with three columns, the
// accelerations ax, ay, az in m/s² (any form strconv.ParseFloat reads,
// rounded to float32; each must be finite). The first row is a header,
// and skipped, when one of its columns is not a number (for example
// "ax,ay,az"). Blank lines and lines starting with # are skipped; spaces
// around a value are allowed.
type CSVReader struct {
	r       *csv.Reader
	window  int
	started bool
	buf     []float32
}

// NewCSVReader reads windows of window samples (16..16384) from r.
func NewCSVReader(r io.Reader, window int) (*CSVReader, error) {
	if window < MinWindow || window > MaxWindow {
		return nil, fmt.Errorf("window: must be %d..%d samples (got %d)", MinWindow, MaxWindow, window)
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = axes
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	return &CSVReader{r: cr, window: window, buf: make([]float32, 0, window*axes)}, nil
}

// Next returns the next window, float32 [window 3] in m/s². At the end of
// the input it returns io.EOF; rows that did not fill a last window are
// then dropped (Leftover counts them). A malformed row is an error that
// names its line.
func (c *CSVReader) Next() (tasks.Array, error) {
	for len(c.buf) < c.window*axes {
		rec, err := c.r.Read()
		if errors.Is(err, io.EOF) {
			return tasks.Array{}, io.EOF
		}
		if err != nil {
			return tasks.Array{}, fmt.Errorf("csv: %w", err)
		}
		var row [axes]float32
		bad := -1
		for i, f := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 32)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				bad = i
				break
			}
			row[i] = float32(v)
		}
		first := !c.started
		c.started = true
		if bad >= 0 {
			if first {
				continue // a header
			}
			line, _ := c.r.FieldPos(bad)
			return tasks.Array{}, fmt.Errorf("csv line %d, column %d: %q is not a finite number of m/s²", line, bad+1, rec[bad])
		}
		c.buf = append(c.buf, row[:]...)
	}
	a := float32Array(c.buf, c.window, axes)
	c.buf = c.buf[:0]
	return a, nil
}

// Leftover is the number of rows read since the last complete window: after
// Next returned io.EOF, the rows at the end of the input that were dropped.
func (c *CSVReader) Leftover() int { return len(c.buf) / axes }

// ReadCSV reads every complete window of window samples from r (see
// CSVReader for the format) and returns them, each float32 [window 3] in
// m/s²; rows at the end that do not fill a window are dropped. It holds the
// whole input in memory: read a stream (stdin) with a CSVReader instead.
func ReadCSV(r io.Reader, window int) ([]tasks.Array, error) {
	cr, err := NewCSVReader(r, window)
	if err != nil {
		return nil, err
	}
	var out []tasks.Array
	for {
		a, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
}
