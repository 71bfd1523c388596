// Package e2e holds the end-to-end tests: they build the three real
// binaries, start them on loopback ports the gateway picks, and drive them
// with real MQTT clients (paho, and Debian's mosquitto_sub). The tests of
// this package run one after another.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/splitpoint/splitpoint/internal/testutil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/wire"
)

// binDir holds the binaries built for this test run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "splitpoint-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	args := []string{"build", "-o", dir + "/"}
	if raceBuild {
		args = append(args, "-race")
	}
	if matcheck.Enabled {
		args = append(args, "-tags", "matprofile")
	}
	args = append(args, "github.com/splitpoint/splitpoint/cmd/gateway", "github.com/splitpoint/splitpoint/cmd/device", "github.com/splitpoint/splitpoint/cmd/cloudproc")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a started binary.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *testutil.Buffer
	stderr *testutil.Buffer
	done   chan struct{}
	err    error
}

// start runs a binary; t's cleanup stops it (SIGINT, then SIGKILL) and logs
// its output if the test failed.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(filepath.Join(binDir, name), args...))
}

// startCmd runs cmd (a binary, or one wrapped by ip netns exec) like start.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	args := cmd.Args[1:]
	p := &proc{name: name, stdout: &testutil.Buffer{}, stderr: &testutil.Buffer{}, done: make(chan struct{})}
	p.cmd = cmd
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s %v stdout:\n%s\nstderr:\n%s", name, args, tail(p.stdout.String()), tail(p.stderr.String()))
		}
	})
	return p
}

func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

// stop interrupts the process and waits for it (kills it after 60 s).
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not stop after SIGINT; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.name, timeout)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// waitFor polls until cond holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startGateway starts a gateway on a free loopback port and returns its
// broker URL, read from the first line of its output.
func startGateway(t *testing.T, args ...string) (string, *proc) {
	t.Helper()
	g := start(t, "gateway", append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	var addr string
	waitFor(t, 30*time.Second, "the gateway's address", func() bool {
		line, _, ok := strings.Cut(g.stdout.String(), "\n")
		if ok {
			addr = strings.TrimPrefix(line, "gateway listening on ")
		}
		return ok
	})
	if !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(addr) || strings.HasSuffix(addr, ":0") {
		t.Fatalf("gateway's first line gives address %q", addr)
	}
	return "tcp://" + addr, g
}

// startCloud starts a cloudproc and waits until it announced itself.
func startCloud(t *testing.T, broker, id string, args ...string) *proc {
	t.Helper()
	c := start(t, "cloudproc", append([]string{"--broker", broker, "--id", id}, args...)...)
	waitFor(t, 30*time.Second, "cloudproc online", func() bool { return strings.Contains(c.stdout.String(), "online") })
	return c
}

var summaryRe = regexp.MustCompile(`summary device=(\S+) run=(\S+) captured=(\d+) filtered_local=(\d+) sent=(\d+) resent=(\d+) results=(\d+) dropped=(\d+) \[([^\]]*)\] duplicates=(\d+) bad_results=(\d+) fps=([0-9.]+)`)

// summary is a device's parsed summary line.
type summary struct {
	device, run                                      string
	captured, filtered, sent, resent, results, drops int
	reasons                                          string
	duplicates, badResults                           int
	fps                                              float64
}

func parseSummary(t *testing.T, out string) summary {
	t.Helper()
	m := summaryRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in device output:\n%s", tail(out))
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	fps, _ := strconv.ParseFloat(m[12], 64)
	return summary{device: m[1], run: m[2], captured: n(3), filtered: n(4), sent: n(5), resent: n(6), results: n(7), drops: n(8), reasons: m[9], duplicates: n(10), badResults: n(11), fps: fps}
}

// runDevice runs a device to completion and returns its summary.
func runDevice(t *testing.T, broker string, args ...string) summary {
	t.Helper()
	d := start(t, "device", append([]string{"--broker", broker}, args...)...)
	if code := d.wait(t, 10*time.Minute); code != 0 {
		t.Fatalf("device exited %d:\n%s", code, tail(d.stderr.String()))
	}
	return parseSummary(t, d.stdout.String())
}

// result is one parsed result message.
type result struct {
	Topic      string
	Device     string   `json:"device"`
	Run        string   `json:"run"`
	Seq        uint64   `json:"seq"`
	Detected   bool     `json:"detected"`
	X          *float64 `json:"x"`
	Y          *float64 `json:"y"`
	Radius     *float64 `json:"radius"`
	CenterX    *int     `json:"center_x"`
	CenterY    *int     `json:"center_y"`
	Width      int      `json:"width"`
	Height     int      `json:"height"`
	FilteredAt *string  `json:"filtered_at"`
	Split      int      `json:"split"`
	CaptureTS  string   `json:"capture_ts"`
	raw        string
}

// values is the part of a result that must not depend on the split.
func (r result) values() string {
	b, _ := json.Marshal(struct {
		Seq              uint64
		Detected         bool
		X, Y, Radius     *float64
		CenterX, CenterY *int
		Width, Height    int
		FilteredAt       *string
	}{r.Seq, r.Detected, r.X, r.Y, r.Radius, r.CenterX, r.CenterY, r.Width, r.Height, r.FilteredAt})
	return string(b)
}

// collector subscribes to every result and keeps them.
type collector struct {
	client paho.Client
	mu     sync.Mutex
	res    []result
	bad    []string
	// tolerateBad is how many malformed results the test itself sends.
	tolerateBad int
}

func newCollector(t *testing.T, broker string, filters ...string) *collector {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("e2e-collector-%d", time.Now().UnixNano())).
		SetOrderMatters(false).SetCleanSession(true)
	return newCollectorWith(t, opts, filters...)
}

// newCollectorWith is newCollector with the client options given (TLS,
// credentials).
func newCollectorWith(t *testing.T, opts *paho.ClientOptions, filters ...string) *collector {
	t.Helper()
	c := &collector{}
	c.client = paho.NewClient(opts)
	if len(filters) == 0 {
		filters = []string{wire.ResultFilter}
	}
	if tok := c.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connect: %v", tok.Error())
	}
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	tok := c.client.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		var r result
		err := json.Unmarshal(m.Payload(), &r)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.bad = append(c.bad, m.Topic()+" "+string(m.Payload()))
			return
		}
		r.Topic, r.raw = m.Topic(), string(m.Payload())
		c.res = append(c.res, r)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.client.Disconnect(100) })
	return c
}

// run returns the results of one device run, and fails on malformed ones.
func (c *collector) run(t *testing.T, run string) []result {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) != c.tolerateBad {
		t.Errorf("malformed results: %q (expected %d)", c.bad, c.tolerateBad)
	}
	var out []result
	for _, r := range c.res {
		if r.Run == run {
			out = append(out, r)
		}
	}
	return out
}

// count returns how many results of a run arrived.
func (c *collector) count(run string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.res {
		if r.Run == run {
			n++
		}
	}
	return n
}

// exactlyOnce checks that results hold seq 0..n-1 each exactly once, all
// from device on its own topic, and returns them ordered by seq.
func exactlyOnce(t *testing.T, res []result, device string, n int) []result {
	t.Helper()
	bySeq := make([]*result, n)
	for i := range res {
		r := &res[i]
		if r.Device != device || r.Topic != wire.ResultTopic(device) {
			t.Errorf("result of %q on %s in the results of %s", r.Device, r.Topic, device)
			continue
		}
		if r.Seq >= uint64(n) {
			t.Errorf("%s: result for seq %d, only %d frames captured", device, r.Seq, n)
			continue
		}
		if bySeq[r.Seq] != nil {
			t.Errorf("%s: two results for seq %d", device, r.Seq)
		}
		bySeq[r.Seq] = r
	}
	out := make([]result, 0, n)
	for i, r := range bySeq {
		if r == nil {
			t.Errorf("%s: no result for seq %d", device, i)
			continue
		}
		out = append(out, *r)
	}
	return out
}

// lines splits output into its lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// everySplitIdentical runs device pi1 on src for frames frames at every
// split 1..6 through broker (extra: more device arguments), and checks that
// each run gets exactly one result per frame at col, each saying its split,
// and that the results are identical across splits. It returns split 1's
// results, ordered by seq.
func everySplitIdentical(t *testing.T, broker string, col *collector, frames int, src string, extra ...string) []result {
	t.Helper()
	var reference []result
	for k := 1; k <= 6; k++ {
		args := append([]string{"--id", "pi1", "--source", src, "--frames", fmt.Sprint(frames), "--split", fmt.Sprint(k)}, extra...)
		sum := runDevice(t, broker, args...)
		if sum.captured != frames || sum.results != frames || sum.drops != 0 || sum.duplicates != 0 || sum.badResults != 0 {
			t.Fatalf("split %d: %+v", k, sum)
		}
		waitFor(t, 30*time.Second, "every result at the collector", func() bool { return col.count(sum.run) >= frames })
		res := exactlyOnce(t, col.run(t, sum.run), "pi1", frames)
		for _, r := range res {
			if r.Split != k {
				t.Fatalf("split %d: result of seq %d says split %d", k, r.Seq, r.Split)
			}
			if _, err := time.Parse(time.RFC3339Nano, r.CaptureTS); err != nil {
				t.Fatalf("capture_ts %q: %v", r.CaptureTS, err)
			}
		}
		if k == 1 {
			reference = res
			continue
		}
		for i := range res {
			if res[i].values() != reference[i].values() {
				t.Errorf("split %d seq %d: %s\nsplit 1 gave:  %s", k, i, res[i].values(), reference[i].values())
			}
		}
	}
	return reference
}
