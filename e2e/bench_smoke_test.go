package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs cmd/bench -quick (one round of 30 frames, small
// broker loads) and checks that it exits 0 and prints every section's
// header and a row per mode. It asserts nothing about speed. The bench and
// the binaries it runs are built as make bench builds them (no race
// detector: race-built binaries make the run twice as long, and the other
// tests run those).
func TestBenchSmoke(t *testing.T) {
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/", "github.com/splitpoint/splitpoint/cmd/bench",
		"github.com/splitpoint/splitpoint/cmd/gateway", "github.com/splitpoint/splitpoint/cmd/device", "github.com/splitpoint/splitpoint/cmd/cloudproc"}
	start := time.Now()
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("building the bench and the binaries took %v", time.Since(start).Round(time.Second))

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "bench"), "-quick", "-bin", dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start = time.Now()
	err := cmd.Run()
	t.Logf("bench -quick took %v", time.Since(start).Round(time.Second))
	out := stdout.String()
	if err != nil {
		t.Fatalf("bench -quick: %v\nstdout:\n%s\nstderr:\n%s", err, out, tail(stderr.String()))
	}
	defer func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out, tail(stderr.String()))
		}
	}()

	for _, h := range []string{
		"# splitpoint bench",
		"- machine: ",
		"## Pipeline — 960×540 MJPEG AVI, 30 frames",
		"## Pipeline — synthetic source synthetic:?size=640x480&fps=0&seed=1, 30 frames",
		"| mode | frames/s | p50 latency | p99 latency | CPU/frame, all processes | state bytes/frame |",
		"| mode | device CPU/frame | gateway CPU/frame | cloudproc CPU/frame | device cores | gateway cores | cloudproc cores | page faults/frame device / gateway / cloudproc | device workers |",
		"## Broker — paho QoS 1",
		"| message | messages | path | messages/s | MB/s | ×mosquitto | broker CPU/message | broker cores | clients cores |",
	} {
		if n := strings.Count(out, h); n == 0 {
			t.Errorf("no %q in the report", h)
		}
	}
	// Two inputs, two tables each: every mode has four rows.
	modes := []string{"baseline", "in-process", "split 1", "split 2", "split 3", "split 4", "split 5", "split 6 (all-local)"}
	if n := runtime.NumCPU(); n > 1 {
		modes = append(modes, fmt.Sprintf("baseline ×%d", n))
	}
	for _, m := range modes {
		if n := strings.Count(out, "\n| "+m+" | "); n != 4 {
			t.Errorf("%d rows for mode %q, want 4 (two inputs × two tables)", n, m)
		}
	}
	// Every row of the main tables has a figure and its ratio to the
	// baseline.
	for _, l := range strings.Split(out, "\n") {
		for _, m := range modes {
			if strings.HasPrefix(l, "| "+m+" | ") && !strings.Contains(l, "×") {
				t.Errorf("row without a ratio: %s", l)
			}
		}
	}
	// Every message size through every path, with a rate (mosquitto is one
	// of the tests' Debian packages: make test installs it).
	for _, size := range []string{"1024", "102400", "562655"} {
		for _, path := range []string{"gateway (mochi)", "mosquitto", "raw TCP"} {
			re := regexp.MustCompile(`(?m)^\| ` + size + ` B \| \d+ \| ` + regexp.QuoteMeta(path) + ` \| \d+ \| [0-9.]+ \| `)
			if !re.MatchString(out) {
				t.Errorf("no broker row with a rate for %s bytes through %s", size, path)
			}
		}
	}
}
