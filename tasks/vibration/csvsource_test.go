package vibration

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/tasks"
)

// A csv source gives complete windows then io.EOF (sticky), and Read
// returns at once when ctx ends while the input is silent (a pipe that
// says nothing, as csv:- may).
func TestCSVSourceWindowsAndStop(t *testing.T) {
	o := DefaultOptions()
	o.Window = 16
	path := t.TempDir() + "/w.csv"
	var b strings.Builder
	b.WriteString("ax,ay,az\n")
	for i := 0; i < 40; i++ { // two windows and 8 rows left over
		b.WriteString("0.5,0.25,9.81\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := openSource(context.Background(), "csv:"+path, o, tasks.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		v, err := src.Read(context.Background())
		a, ok := v.(tasks.Array)
		if err != nil || !ok || a.Shape[0] != 16 || a.Shape[1] != 3 {
			t.Fatalf("window %d: %v %v", i, a.Shape, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := src.Read(context.Background()); err != io.EOF {
			t.Fatalf("after the last window: %v, want io.EOF", err)
		}
	}
	src.Close()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cr, err := NewCSVReader(r, 16)
	if err != nil {
		t.Fatal(err)
	}
	silent := newCSVSource(cr, r)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := silent.Read(ctx); err != context.DeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Fatalf("Read on a silent pipe: %v after %v", err, time.Since(start))
	}
	silent.Close()
}
