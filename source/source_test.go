package source

import (
	"context"
	"io"
	"strings"
	"testing"

	"gocv.io/x/gocv"
)

func TestParseSynthetic(t *testing.T) {
	o, err := ParseSynthetic("synthetic:?size=320x240&fps=0&seed=9&frames=5")
	if err != nil || o.Width != 320 || o.Height != 240 || o.FPS != 0 || o.Seed != 9 || o.Frames != 5 {
		t.Fatalf("%+v %v", o, err)
	}
	if o, err := ParseSynthetic("synthetic:"); err != nil || o.Width != 640 || o.FPS != 30 {
		t.Errorf("defaults: %+v %v", o, err)
	}
	for _, bad := range []string{"synthetic:?size=10x10", "synthetic:?fps=-1", "synthetic:?seed=x", "synthetic:?colour=red", "synthetic:?frames=-2", "synthetic:?size=640"} {
		if _, err := ParseSynthetic(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, bad := range []string{"", "camera:x", "camera:-1"} {
		if err := ValidateURI(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSyntheticIsDeterministicAndEnds(t *testing.T) {
	o := SyntheticOptions{Width: 160, Height: 120, Seed: 4, Frames: 3}
	a, b := NewSynthetic(o), NewSynthetic(o)
	defer a.Close()
	defer b.Close()
	for i := 0; i < 3; i++ {
		fa, err := a.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		fb, _ := b.Read(context.Background())
		diff := gocv.NewMat()
		gocv.AbsDiff(fa, fb, &diff)
		if n := gocv.CountNonZero(diff.Reshape(1, 0)); n != 0 {
			t.Errorf("frame %d differs between two sources with one seed (%d values)", i, n)
		}
		diff.Close()
		fa.Close()
		fb.Close()
	}
	if _, err := a.Read(context.Background()); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
}

func TestTruthHidesTheBallEachPeriod(t *testing.T) {
	o := SyntheticOptions{Width: 640, Height: 480, Seed: 1}
	hidden := 0
	for n := 0; n < Period; n++ {
		if !o.TruthAt(n).Visible {
			hidden++
		}
	}
	if hidden != HiddenFrames {
		t.Errorf("%d hidden frames per period, want %d", hidden, HiddenFrames)
	}
}

func TestOpenFailsClearly(t *testing.T) {
	_, err := Open("/nonexistent/video.avi")
	if err == nil || err.Error() != `open source "/nonexistent/video.avi": no such file or directory` {
		t.Errorf("got %v", err)
	}
	if got := redact("rtsp://user:secret@cam/stream"); strings.Contains(got, "secret") {
		t.Errorf("password shown: %s", got)
	}
}
