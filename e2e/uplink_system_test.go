//go:build system

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netnsPair is two network namespaces joined by a veth pair: "edge"
// (devices and the gateway) and "cloud" (the upstream broker and
// cloudproc), with the edge→cloud direction shaped by tc tbf.
type netnsPair struct {
	edge, cloud string
	edgeIP      string // 10.199.N.1
	cloudIP     string // 10.199.N.2
}

// newNetnsPair creates the namespaces (deleted at cleanup, also when the
// test fails). It fails the test when they cannot be created, unless
// SPLITPOINT_SKIP_NETNS=1 opts out.
func newNetnsPair(t *testing.T, rate string) *netnsPair {
	t.Helper()
	if os.Getenv("SPLITPOINT_SKIP_NETNS") == "1" {
		t.Skip("SKIPPED: SPLITPOINT_SKIP_NETNS=1 — the thin-uplink system test did NOT run")
	}
	id := os.Getpid() % 10000
	n := &netnsPair{edge: fmt.Sprintf("sp-edge-%d", id), cloud: fmt.Sprintf("sp-cloud-%d", id),
		edgeIP: fmt.Sprintf("10.199.%d.1", id%250), cloudIP: fmt.Sprintf("10.199.%d.2", id%250)}
	ve, vc := fmt.Sprintf("spe%d", id), fmt.Sprintf("spc%d", id)
	ipcmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s\n(network namespaces need root and iproute2; SPLITPOINT_SKIP_NETNS=1 opts out)", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", n.edge).Run()
		_ = exec.Command("ip", "netns", "del", n.cloud).Run()
	})
	ipcmd("netns", "add", n.edge)
	ipcmd("netns", "add", n.cloud)
	ipcmd("link", "add", ve, "type", "veth", "peer", "name", vc)
	ipcmd("link", "set", ve, "netns", n.edge)
	ipcmd("link", "set", vc, "netns", n.cloud)
	ipcmd("-n", n.edge, "addr", "add", n.edgeIP+"/24", "dev", ve)
	ipcmd("-n", n.cloud, "addr", "add", n.cloudIP+"/24", "dev", vc)
	for _, ns := range []string{n.edge, n.cloud} {
		ipcmd("-n", ns, "link", "set", "lo", "up")
	}
	ipcmd("-n", n.edge, "link", "set", ve, "up")
	ipcmd("-n", n.cloud, "link", "set", vc, "up")
	if out, err := exec.Command("ip", "netns", "exec", n.edge, "tc", "qdisc", "add", "dev", ve, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "300ms").CombinedOutput(); err != nil {
		t.Fatalf("tc tbf: %v\n%s", err, out)
	}
	return n
}

// startIn runs one of the built binaries (or another program) in ns.
func startIn(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	path := name
	if _, err := os.Stat(filepath.Join(binDir, name)); err == nil {
		path = filepath.Join(binDir, name)
	}
	return startCmd(t, name, exec.Command("ip", append([]string{"netns", "exec", ns, path}, args...)...))
}

var statusRe = regexp.MustCompile(`results/s=[0-9.]+ split=(\d+) .* results=(\d+) `)

// status is one of a device's status lines (printed every
// status_interval, 1 s here): the split and the results counted since the
// start.
type status struct {
	split   int
	results int
}

// statusSamples parses a device's status lines.
func statusSamples(out string) []status {
	var ss []status
	for _, m := range statusRe.FindAllStringSubmatch(out, -1) {
		k, _ := strconv.Atoi(m[1])
		n, _ := strconv.Atoi(m[2])
		ss = append(ss, status{split: k, results: n})
	}
	return ss
}

// rate is the results per second over the status lines ss (one a
// second): the count between the first and the last line over the lines
// between them. Unlike the per-line figures, which count whole frames in
// one second (±1 at ~20/s is ±5 %), it keeps the fractions.
func rate(ss []status) float64 {
	if len(ss) < 2 {
		return 0
	}
	return float64(ss[len(ss)-1].results-ss[0].results) / float64(len(ss)-1)
}

// The thin uplink, for real: the gateway→upstream link is shaped to 12
// Mbit/s, where raw frames (split 1: 562 KB) cannot keep up (~2 frames/s);
// the device is slowed so that only splits 1–2 would meet the target on
// CPU (splits 3–6: ~20 frames/s alone, with the race detector); the target
// (30/s) is above what any split reaches on that link. The camera gives 10
// frames/s: the splits that do not ship raw frames all reach it with CPU
// to spare, so that what the test compares is the split, not how this
// shared machine's speed moves (with an unpaced source each device ran
// flat out: the same static split read 22.6 and 17.4 results/s a minute
// apart, and two devices beside each other 0.67–1.46× of each other over
// 5-second windows). Every static split is measured on the same link,
// then the automatic controller, started at split 1, must settle on a
// split that does not ship raw frames and deliver ≥ 0.9× the best static
// split.
func TestSystemThinUplinkController(t *testing.T) {
	// The outcome, logged last when the test fails (registered first, this
	// runs after the processes' cleanups have logged their output).
	var summary []string
	logf := func(format string, args ...any) {
		t.Helper()
		summary = append(summary, fmt.Sprintf(format, args...))
		t.Log(summary[len(summary)-1])
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("summary:\n%s", strings.Join(summary, "\n"))
		}
	})
	n := newNetnsPair(t, "12mbit")
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	writePrivate(t, conf, fmt.Sprintf("user root\nlistener 1883 %s\nallow_anonymous true\nmax_queued_messages 100000\n", n.cloudIP))
	startIn(t, n.cloud, "mosquitto", "-c", conf)
	time.Sleep(500 * time.Millisecond)
	upstream := fmt.Sprintf("tcp://%s:1883", n.cloudIP)
	cloudCfg := filepath.Join(dir, "cloud.toml")
	writePrivate(t, cloudCfg, "topic_prefix = \"sites/+/\"\n")
	c := startIn(t, n.cloud, "cloudproc", "-c", cloudCfg, "--broker", upstream, "--id", "c1")
	waitFor(t, 30*time.Second, "cloudproc online", func() bool { return strings.Contains(c.stdout.String(), "online") })
	gwCfg := filepath.Join(dir, "gateway.toml")
	writePrivate(t, gwCfg, fmt.Sprintf("listen = \"127.0.0.1:1883\"\n[bridge]\nurl = %q\nsite = \"home\"\nspool_dir = %q\nprobe_interval = \"2s\"\n", upstream, filepath.Join(dir, "spool")))
	g := startIn(t, n.edge, "gateway", "-c", gwCfg)
	waitFor(t, 30*time.Second, "the bridge", func() bool { return strings.Contains(g.stderr.String(), "upstream connected") })
	const (
		slowdown = "15"
		target   = "30"
		camera   = "10" // frames/s
	)
	startDevice := func(name string, args ...string) *proc {
		cfg := filepath.Join(dir, name+".toml")
		writePrivate(t, cfg, "drain_timeout = \"1s\"\nstatus_interval = \"1s\"\nworkers = 1\n"+strings.Join(args, "\n")+"\n")
		// A device id per run: the gateway keeps each device's last
		// decision (a manual split would hold an automatic run).
		return startIn(t, n.edge, "device", "-c", cfg, "--broker", "tcp://127.0.0.1:1883", "--id", name,
			"--source", "synthetic:?fps="+camera+"&seed=4", "--slowdown", slowdown, "--target-fps", target)
	}
	// samples reads d's status lines so far (before d is stopped: while it
	// drains, its lines count results but no frames), skipping the first.
	samples := func(d *proc, skip time.Duration) []status {
		t.Helper()
		ss := statusSamples(d.stdout.String())
		drop := int(skip / time.Second)
		if len(ss) <= drop+1 {
			t.Fatalf("%s: only %d status lines:\n%s", d.name, len(ss), tail(d.stdout.String()))
		}
		return ss[drop:]
	}
	manual := func(k int) string { return fmt.Sprintf("split = %d\nmode = \"manual\"", k) }
	static := map[int]float64{}
	best, bestSplit := 0.0, 0
	for k := 6; k >= 1; k-- {
		d := startDevice(fmt.Sprintf("static-%d", k), manual(k))
		time.Sleep(14 * time.Second)
		static[k] = rate(samples(d, 5*time.Second))
		d.stop(t)
		time.Sleep(2 * time.Second) // let the link drain
		if static[k] > best {
			best, bestSplit = static[k], k
		}
	}
	logf("static splits on a 12 Mbit/s uplink, slowdown %s (results/s): %v; best split %d at %.1f", slowdown, static, bestSplit, best)
	if bestSplit <= 2 {
		t.Fatalf("the set-up is wrong: the best static split ships raw frames (%v)", static)
	}
	// The automatic device starts at split 1 and is measured once it has
	// settled; then the best static split runs again. The reference is the
	// mean of that split's two runs, before and after.
	auto := startDevice("auto", "split = 1\nmode = \"auto\"")
	time.Sleep(40 * time.Second)
	aSt := samples(auto, 25*time.Second)
	auto.stop(t)
	time.Sleep(2 * time.Second)
	again := startDevice(fmt.Sprintf("static-%d-again", bestSplit), manual(bestSplit))
	time.Sleep(14 * time.Second)
	after := rate(samples(again, 5*time.Second))
	again.stop(t)
	splits := make([]int, len(aSt))
	for i, s := range aSt {
		splits[i] = s.split
	}
	fps, ref := rate(aSt), (static[bestSplit]+after)/2
	final := splits[len(splits)-1]
	logf("split %d again after the automatic device: %.2f results/s (before it: %.2f; mean %.2f)", bestSplit, after, static[bestSplit], ref)
	logf("automatic, started at split 1: split %d at the end (splits %v over the last %d s), %.2f results/s = %.2f× the best static split",
		final, splits, len(aSt)-1, fps, fps/ref)
	if final <= 2 {
		t.Errorf("the controller kept shipping raw frames: split %d", final)
	}
	if fps < 0.9*ref {
		t.Errorf("automatic %.2f results/s < 0.9 × best static %.2f (split %d, mean of the runs before and after)", fps, ref, bestSplit)
	}
	if !strings.Contains(g.stderr.String(), "split=3") && !strings.Contains(g.stderr.String(), "split=4") &&
		!strings.Contains(g.stderr.String(), "split=5") && !strings.Contains(g.stderr.String(), "split=6") {
		t.Errorf("no decision moved off the raw-frame splits:\n%s", tail(g.stderr.String()))
	}
}
