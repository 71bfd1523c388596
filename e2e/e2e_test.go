package e2e

import (
	"fmt"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/splitpoint/splitpoint/source"
)

// checkTruth compares results with the synthetic source's ground truth:
// ≥ 98 % of the frames with the ball fully visible detected, the centre of
// every detection's enclosing circle (x, y) within 2 px of the truth in
// resized-frame pixels, and frames without a ball not detected. The integer
// centroid (center_x, center_y) is truncated as in the classic tracker, so
// it may be up to one more pixel off on each axis.
func checkTruth(t *testing.T, label string, o source.SyntheticOptions, res []result) {
	t.Helper()
	scale := 500.0 / float64(o.Width)
	full, found := 0, 0
	for _, r := range res {
		truth := o.TruthAt(int(r.Seq))
		if r.Width != 500 || r.Height != o.Height*500/o.Width {
			t.Errorf("%s seq %d: frame %dx%d, want 500x%d", label, r.Seq, r.Width, r.Height, o.Height*500/o.Width)
		}
		if !truth.Visible && r.Detected {
			t.Errorf("%s seq %d: detected a ball that is not there", label, r.Seq)
		}
		if !truth.Full {
			continue
		}
		full++
		if !r.Detected {
			continue
		}
		found++
		tx, ty := (float64(truth.X)+0.5)*scale-0.5, (float64(truth.Y)+0.5)*scale-0.5
		if d := math.Hypot(*r.X-tx, *r.Y-ty); d > 2 {
			t.Errorf("%s seq %d: centre (%.2f,%.2f) is %.2f px from the truth (%.1f,%.1f)", label, r.Seq, *r.X, *r.Y, d, tx, ty)
		}
		if dx, dy := math.Abs(float64(*r.CenterX)-tx), math.Abs(float64(*r.CenterY)-ty); dx > 3 || dy > 3 {
			t.Errorf("%s seq %d: centroid (%d,%d) is (%.2f,%.2f) px from the truth (%.1f,%.1f)", label, r.Seq, *r.CenterX, *r.CenterY, dx, dy, tx, ty)
		}
	}
	if full == 0 || float64(found) < 0.98*float64(full) {
		t.Errorf("%s: detected %d of %d fully visible balls, want ≥ 98 %%", label, found, full)
	}
	t.Logf("%s: detected %d of %d fully visible balls", label, found, full)
}

func TestEverySplitGivesOneIdenticalResultPerFrame(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	const frames = 240
	src := "synthetic:?fps=0&seed=5"
	o, _ := source.ParseSynthetic(src)
	checkTruth(t, "split 1", o, everySplitIdentical(t, broker, col, frames, src))
}

func TestTwoDevicesAtOnceAreNotMixedUp(t *testing.T) {
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	type dev struct {
		id, src string
		split   int
		p       *proc
	}
	devs := []*dev{
		{id: "pia", src: "synthetic:?fps=0&seed=11", split: 2},
		{id: "pib", src: "synthetic:?fps=0&seed=42&size=800x400", split: 4},
	}
	const frames = 200
	for _, d := range devs {
		d.p = start(t, "device", "--broker", broker, "--id", d.id, "--source", d.src, "--frames", fmt.Sprint(frames), "--split", fmt.Sprint(d.split))
	}
	for _, d := range devs {
		if code := d.p.wait(t, 10*time.Minute); code != 0 {
			t.Fatalf("%s exited %d", d.id, code)
		}
		sum := parseSummary(t, d.p.stdout.String())
		if sum.device != d.id || sum.results != frames || sum.drops != 0 {
			t.Fatalf("%s: %+v", d.id, sum)
		}
		waitFor(t, 30*time.Second, "results of "+d.id, func() bool { return col.count(sum.run) >= frames })
		res := exactlyOnce(t, col.run(t, sum.run), d.id, frames)
		o, _ := source.ParseSynthetic(d.src)
		checkTruth(t, d.id, o, res)
	}
}

func TestMosquittoSubReceivesResults(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Fatal("mosquitto_sub not installed (make test installs Debian's mosquitto-clients)")
	}
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	host, port, _ := strings.Cut(strings.TrimPrefix(broker, "tcp://"), ":")
	const frames = 20
	sub := &testutil.Buffer{}
	// stdbuf: mosquitto_sub's stdout is a pipe here; line-buffer it so the
	// SUBACK line shows before the process ends.
	cmd := exec.Command("stdbuf", "-oL", "mosquitto_sub", "-d", "-h", host, "-p", port, "-t", "offload/+/result", "-v", "-C", fmt.Sprint(frames), "-q", "1")
	cmd.Stdout, cmd.Stderr = sub, sub
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	waitFor(t, 30*time.Second, "mosquitto_sub's SUBACK", func() bool { return strings.Contains(sub.String(), "received SUBACK") })
	sum := runDevice(t, broker, "--id", "pi7", "--source", "synthetic:?fps=0", "--frames", fmt.Sprint(frames), "--split", "2")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mosquitto_sub: %v\n%s", err, sub.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("mosquitto_sub did not get %d messages:\n%s", frames, sub.String())
	}
	var res []result
	for _, l := range lines(sub.String()) {
		topic, payload, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(topic, "offload/") {
			continue // mosquitto_sub's debug lines
		}
		var r result
		if err := jsonUnmarshal(payload, &r); err != nil {
			t.Fatalf("mosquitto_sub printed a result that is not JSON: %q: %v", l, err)
		}
		r.Topic = topic
		res = append(res, r)
	}
	if len(res) != frames {
		t.Fatalf("mosquitto_sub printed %d results, want %d:\n%s", len(res), frames, sub.String())
	}
	for _, r := range res {
		if r.Run != sum.run {
			t.Errorf("result of run %s, device ran %s", r.Run, sum.run)
		}
	}
	exactlyOnce(t, res, "pi7", frames)
}

func TestVideoFileSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ball.avi")
	const frames = 30
	if err := writeVideo(path, frames); err != nil {
		t.Fatal(err)
	}
	broker, _ := startGateway(t)
	startCloud(t, broker, "c1")
	col := newCollector(t, broker)
	sum := runDevice(t, broker, "--id", "cam", "--source", "file:"+path, "--split", "3")
	if sum.captured != frames || sum.results != frames || sum.drops != 0 {
		t.Fatalf("%+v", sum)
	}
	waitFor(t, 30*time.Second, "results", func() bool { return col.count(sum.run) >= frames })
	res := exactlyOnce(t, col.run(t, sum.run), "cam", frames)
	detected := 0
	for _, r := range res {
		if r.Detected {
			detected++
		}
	}
	if detected < frames*9/10 {
		t.Errorf("detected the ball in %d of %d video frames", detected, frames)
	}
}

func TestInvalidFlagsAndConfigs(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"device", []string{"--split", "7"}, `^flag --split: split: must be 1\.\.6 for pipeline balltrack \(got 7\)$`},
		{"device", []string{"--split", "0"}, `^flag --split: split: must be 1\.\.6`},
		{"device", []string{"--split", "x"}, `^device: invalid value "x" for flag -split`},
		{"device", []string{"--bogus"}, `^device: flag provided but not defined: -bogus`},
		{"device", []string{"--id", "result"}, `^flag --id: id: name "result" is a reserved topic word`},
		{"device", []string{"--id", "Pi"}, `^flag --id: id: name "Pi" is not allowed`},
		{"device", []string{"--slowdown", "0.5"}, `^flag --slowdown: emulate\.slowdown: must be 1\.\.1000`},
		{"device", []string{"--source", "synthetic:?size=9"}, `^flag --source: source: synthetic size "9"`},
		{"device", []string{"--broker", "localhost"}, `^flag --broker: broker: "localhost" is not a broker URL`},
		{"device", []string{"--target-fps", "-1"}, `^flag --target-fps: target_fps: must be > 0 and ≤ 1000`},
		{"device", []string{"-c", file("m.toml", "mode = \"semi\"\n")}, `m\.toml:1: mode: must be "auto" or "manual"`},
		{"gateway", []string{"-c", file("gc.toml", "[control]\nmargin = 2.0\n")}, `gc\.toml:2: control\.margin: must be between 0 and 1`},
		{"gateway", []string{"-c", file("gh.toml", "[homeassistant]\nprefix = \"a/b\"\n")}, `gh\.toml:2: homeassistant\.prefix: must be a topic level`},
		{"device", []string{"-c", file("a.toml", "id = \"pi1\"\nsplit = 9\n")}, `a\.toml:2: split: must be 1\.\.6`},
		{"device", []string{"-c", file("b.toml", "id = \"pi1\"\nsplitt = 2\n")}, `b\.toml:2: splitt: unknown field \(allowed: .*split.*\)$`},
		{"device", []string{"-c", file("c.toml", "window = \"8\"\n")}, `c\.toml:1: window: must be an integer \(got a string\)$`},
		{"device", []string{"-c", file("d.toml", "id = \"pi1\n")}, `d\.toml:1: id: `},
		{"device", []string{"-c", file("e.toml", "\n[emulate]\nslowdown = -1\n")}, `e\.toml:3: emulate\.slowdown: must be 1\.\.1000`},
		{"device", []string{"-c", file("f.toml", "[balltrack]\nannotate = \"yes\"\n")}, `f\.toml:2: balltrack\.annotate: must be a boolean`},
		{"device", []string{"-c", file("g.toml", "policy = \"drop-newest\"\n")}, `g\.toml:1: policy: must be "block" or "drop-oldest"`},
		{"device", []string{"-c", file("h.toml", "pipeline = \"nope\"\n")}, `h\.toml:1: pipeline: unknown pipeline "nope"`},
		{"device", []string{"-c", filepath.Join(dir, "missing.toml")}, `missing\.toml: cannot read: no such file`},
		{"gateway", []string{"--listen", "0.0.0.0:0"}, `^flag --listen: listen: 0\.0\.0\.0:0 is not a loopback address`},
		{"gateway", []string{"--listen", "nope"}, `^flag --listen: listen: "nope" is not host:port`},
		{"gateway", []string{"-c", file("gw.toml", "max_message_bytes = 10\n")}, `gw\.toml:1: max_message_bytes: must be 1024\.\.`},
		{"cloudproc", []string{"--id", "_x"}, `^flag --id: id: name "_x" is not allowed`},
		{"cloudproc", []string{"-c", file("cl.toml", "[emulate]\nslowdown = \"fast\"\n")}, `cl\.toml:2: emulate\.slowdown: must be a float \(got a string\)$`},
		{"cloudproc", []string{"-c", file("cl2.toml", "workers = -1\n")}, `cl2\.toml:1: workers: must be 0`},
	} {
		out, err := exec.Command(filepath.Join(binDir, tc.bin), tc.args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%s %v: exit %v, want 2; output %q", tc.bin, tc.args, err, out)
			continue
		}
		got := strings.TrimSuffix(string(out), "\n")
		if strings.Contains(got, "\n") || !regexpMatch(tc.want, got) {
			t.Errorf("%s %v:\n got %q\nwant one line matching %q", tc.bin, tc.args, got, tc.want)
		}
	}
	for _, bin := range []string{"gateway", "device", "cloudproc"} {
		out, err := exec.Command(filepath.Join(binDir, bin), "--version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), bin+" ") {
			t.Errorf("%s --version: %q %v", bin, out, err)
		}
		out, err = exec.Command(filepath.Join(binDir, bin), "-h").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "usage: "+bin) {
			t.Errorf("%s -h: %q %v", bin, out, err)
		}
	}
}
