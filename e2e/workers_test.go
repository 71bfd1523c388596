package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/wire"
)

// A device with several workers runs several frames through its stages at
// once; results must not depend on it: at every split, with 2 and with 4
// workers, every frame gets exactly one result, the same as with one.
func TestWorkersGiveOneIdenticalResultPerFrameAtEverySplit(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	const frames = 120
	src := "synthetic:?fps=0&seed=9"
	run := func(workers, k int) []result {
		t.Helper()
		cfg := writeFile(t, fmt.Sprintf("w%d.toml", workers), fmt.Sprintf("workers = %d\nstatus_interval = \"0s\"\n", workers))
		sum := runDevice(t, broker, "-c", cfg, "--id", "piw", "--source", src, "--frames", fmt.Sprint(frames), "--split", fmt.Sprint(k))
		if sum.captured != frames || sum.results != frames || sum.drops != 0 || sum.duplicates != 0 {
			t.Fatalf("%d workers, split %d: %+v", workers, k, sum)
		}
		waitFor(t, 30*time.Second, "every result at the collector", func() bool { return col.count(sum.run) >= frames })
		res := exactlyOnce(t, col.run(t, sum.run), "piw", frames)
		for _, r := range res {
			if r.Split != k {
				t.Fatalf("%d workers, split %d: result of seq %d says split %d", workers, k, r.Seq, r.Split)
			}
		}
		return res
	}
	reference := run(1, 1)
	for _, workers := range []int{2, 4} {
		for k := 1; k <= 6; k++ {
			res := run(workers, k)
			for i := range res {
				if res[i].values() != reference[i].values() {
					t.Errorf("%d workers, split %d, seq %d: %s\n1 worker gave: %s", workers, k, i, res[i].values(), reference[i].values())
				}
			}
		}
	}
}

// splitChangeRe matches the device's log line for the frame from which a
// new split applies.
var splitChangeRe = regexp.MustCompile(`msg="split changed at a frame".* split=(\d+) previous=(\d+) seq=(\d+)`)

// With four workers several frames are in the stages when the split
// changes; still every frame gets exactly one result, and the split a
// frame ran at is the one in force when it was captured: frames from the
// one at which the device took the change on carry the new split, every
// earlier frame the old one.
func TestWorkersSplitChangeAppliesFromAFrameOn(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	w := watch(t, broker)
	const frames = 450 // 15 s at 30 fps
	cfg := writeFile(t, "w4.toml", "workers = 4\nstatus_interval = \"0s\"\n")
	dev := start(t, "device", "-c", cfg, "--broker", broker, "--id", "pis", "--source", "synthetic:?fps=30&seed=4", "--frames", fmt.Sprint(frames), "--split", "2")
	run := runOf(t, w, "pis")
	atSplit := func(k, n int) func() bool {
		return func() bool {
			c := 0
			for _, r := range col.run(t, run) {
				if r.Split == k {
					c++
				}
			}
			return c >= n
		}
	}
	set := wire.ControlSplitSetTopic("pis")
	waitFor(t, 60*time.Second, "results at split 2", atSplit(2, 30))
	mosq(t, broker, "mosquitto_pub", "-t", set, "-m", "5")
	waitFor(t, 60*time.Second, "results at split 5", atSplit(5, 30))
	mosq(t, broker, "mosquitto_pub", "-t", set, "-m", "3")
	if code := dev.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("device exited %d", code)
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.captured != frames || sum.results != frames || sum.drops != 0 || sum.duplicates != 0 {
		t.Fatalf("summary %+v", sum)
	}
	waitFor(t, 30*time.Second, "every result", func() bool { return col.count(run) >= frames })
	res := exactlyOnce(t, col.run(t, run), "pis", frames)

	type change struct{ split, previous, seq int }
	var changes []change
	for _, m := range splitChangeRe.FindAllStringSubmatch(dev.stderr.String(), -1) {
		k, _ := strconv.Atoi(m[1])
		p, _ := strconv.Atoi(m[2])
		s, _ := strconv.Atoi(m[3])
		changes = append(changes, change{k, p, s})
	}
	if len(changes) != 2 || changes[0].split != 5 || changes[0].previous != 2 || changes[1].split != 3 || changes[1].previous != 5 {
		t.Fatalf("split changes logged: %+v, want 2→5 and 5→3", changes)
	}
	t.Logf("split 5 from seq %d, split 3 from seq %d", changes[0].seq, changes[1].seq)
	want := func(seq int) int {
		switch {
		case seq >= changes[1].seq:
			return 3
		case seq >= changes[0].seq:
			return 5
		}
		return 2
	}
	for _, r := range res {
		if k := want(int(r.Seq)); r.Split != k {
			t.Errorf("seq %d ran at split %d, want %d (split 5 from seq %d, 3 from seq %d)", r.Seq, r.Split, k, changes[0].seq, changes[1].seq)
		}
	}
	if changes[1].seq >= frames {
		t.Errorf("the second change came after the last frame (seq %d)", changes[1].seq)
	}
	// The telemetry tells the gateway's controller how many frames the
	// device runs at once: its 4 workers, at most the CPUs it may use.
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, tl := range w.tele {
		if tl.Device != "pis" {
			continue
		}
		n++
		if want := min(4, runtime.GOMAXPROCS(0)); tl.Workers != want {
			t.Errorf("telemetry says %d workers, want %d", tl.Workers, want)
		}
	}
	if n == 0 {
		t.Error("no telemetry from the device")
	}
}

// The workers setting is checked like every other: one line naming the
// file, the line, the field and what is allowed, exit status 2.
func TestWorkersSettingIsChecked(t *testing.T) {
	for _, v := range []string{"-1", "65"} {
		cfg := writeFile(t, "w.toml", "id = \"pi1\"\nworkers = "+v+"\n")
		out, err := exec.Command(filepath.Join(binDir, "device"), "-c", cfg).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("workers = %s: exit %v, want 2; output %q", v, err, out)
			continue
		}
		if got := strings.TrimSuffix(string(out), "\n"); strings.Contains(got, "\n") || !regexpMatch(`w\.toml:2: workers: must be 0\.\.64 \(0: one per CPU\), got `+regexp.QuoteMeta(v)+`$`, got) {
			t.Errorf("workers = %s: %q", v, got)
		}
	}
}
