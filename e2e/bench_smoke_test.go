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

// TestBenchSmoke runs cmd/bench -quick (one round of 30 frames, paced runs
// of 30 frames, small broker loads, ~0.3 s of round trips) and checks that
// it exits 0 and prints every section's header and a row per mode. It
// asserts nothing about speed. The bench and the binaries it runs are built
// as make bench builds them (no race detector: race-built binaries make the
// run twice as long, and the other tests run those).
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
		"| mode | device peak RSS | device peak Anonymous | device ru_maxrss | Go mallocs/frame | Go bytes allocated/frame |",
		"## Paced 30 fps — device source synthetic:?size=960x540&fps=30&seed=1, 30 frames per run",
		"| mode | p50 latency | p99 latency | p99 ≤ 50ms | device cores | device peak RSS | device peak Anonymous | device Go mallocs/frame | device Go bytes allocated/frame |",
		"| process | RSS | Anonymous | peak RSS |",
		"## Broker — paho QoS 1",
		"| message | messages | path | messages/s | MB/s | ×mosquitto | broker CPU/message | broker cores | clients cores |",
		"## A frame's round trip alone — the two QoS 1 messages of every split, at ",
		"| broker | round trips/s | broker CPU | echo client CPU | paced client CPU | broker + 2 × echo |",
	} {
		if n := strings.Count(out, h); n == 0 {
			t.Errorf("no %q in the report", h)
		}
	}
	// Two inputs, three tables each: every mode has six rows; the splits
	// one more in the paced table.
	splits := []string{"split 1", "split 2", "split 3", "split 4", "split 5", "split 6 (all-local)"}
	modes := append([]string{"baseline", "in-process"}, splits...)
	if n := runtime.NumCPU(); n > 1 {
		modes = append(modes, fmt.Sprintf("baseline ×%d", n))
	}
	for _, m := range modes {
		want := 6
		if strings.HasPrefix(m, "split ") {
			want = 7
		}
		if n := strings.Count(out, "\n| "+m+" | "); n != want {
			t.Errorf("%d rows for mode %q, want %d (two inputs × three tables, and the paced table for a split)", n, m, want)
		}
	}
	// Every row of the two main tables has a figure and its ratio to the
	// baseline.
	for _, h := range []string{"| mode | frames/s |", "| mode | device CPU/frame |"} {
		for _, l := range tableRows(out, h) {
			if !strings.Contains(l, "×") {
				t.Errorf("row without a ratio: %s", l)
			}
		}
	}
	// Memory: every device run has its peak RSS and Anonymous, the loops
	// in the bench's process their Go allocations per frame.
	for _, l := range tableRows(out, "| mode | device peak RSS |") {
		if strings.HasPrefix(l, "| split ") {
			if !regexp.MustCompile(`^\| split [^|]+ \| [0-9.]+ MiB \| [0-9.]+ MiB \| `).MatchString(l) {
				t.Errorf("device row without its memory: %s", l)
			}
		} else if !regexp.MustCompile(`\| \d+¹ \| [0-9.]+ KiB¹ \|$`).MatchString(l) {
			t.Errorf("loop row without its Go allocations: %s", l)
		}
	}
	// Paced: every split with p50, p99, the goal, the device's memory and
	// its Go allocations per frame.
	paced := tableRows(out, "| mode | p50 latency | p99 latency |")
	if len(paced) != len(splits) {
		t.Errorf("%d rows in the paced table, want %d", len(paced), len(splits))
	}
	pacedRe := regexp.MustCompile(`^\| split [^|]+ \| [0-9.]+ ms \| [0-9.]+ ms \| [✓✗] \| [0-9.]+ \| [0-9.]+ MiB \| [0-9.]+ MiB \| -?\d+ \| -?[0-9.]+ KiB \|$`)
	for _, l := range paced {
		if !pacedRe.MatchString(l) {
			t.Errorf("paced row without every figure: %s", l)
		}
	}
	for _, p := range []string{"gateway", "cloudproc"} {
		if !regexp.MustCompile(`(?m)^\| ` + p + ` \| [0-9.]+ MiB \| [0-9.]+ MiB \| [0-9.]+ MiB \|$`).MatchString(out) {
			t.Errorf("no memory row for the %s", p)
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
	// The round trip through both brokers, every figure, and the
	// arithmetic naming each broker's round trip.
	rt := tableRows(out, "| broker | round trips/s |")
	rtRe := regexp.MustCompile(`^\| (gateway \(mochi\)|mosquitto) \| \d+ \| \d+ µs \| \d+ µs \| \d+ µs \| [0-9.]+ ms \|$`)
	if len(rt) != 2 {
		t.Errorf("%d rows in the round-trip table, want 2 (gateway, mosquitto)", len(rt))
	}
	for _, l := range rt {
		if !rtRe.MatchString(l) {
			t.Errorf("round-trip row without every figure: %s", l)
		}
	}
	// The goal's arithmetic needs the loops on every core (baseline ×N):
	// on one CPU the bench uses its default rate and prints none.
	if runtime.NumCPU() == 1 {
		if !strings.Contains(out, "(rate: no AVI baseline in this run: the default)") {
			t.Error("one CPU: the round trip's rate does not say it is the default")
		}
		return
	}
	for _, h := range []string{"(rate: 1.3 × the AVI baseline's ", "The goal for splits 3–6 (1.3× the baseline, ",
		"In the AVI pipeline above, at split 6, the gateway and the cloudproc spent "} {
		if !strings.Contains(out, h) {
			t.Errorf("no %q in the round-trip section", h)
		}
	}
	for _, b := range []string{"gateway (mochi)", "mosquitto"} {
		if !regexp.MustCompile(`Through ` + regexp.QuoteMeta(b) + ` the round trip alone costs [0-9.]+ ms: `).MatchString(out) {
			t.Errorf("the goal's arithmetic does not name the round trip through %s", b)
		}
	}
}

// tableRows returns the rows of every markdown table whose header line
// starts with header (the separator line left out).
func tableRows(out, header string) []string {
	var rows []string
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], header) {
			continue
		}
		for i += 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			rows = append(rows, lines[i])
		}
	}
	return rows
}
