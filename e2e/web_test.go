package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/wire"
)

// chromiumPath is Debian's chromium, which the browser test drives
// (Playwright's own browser downloads do not work offline).
const chromiumPath = "/usr/bin/chromium"

// browserDir holds the Node script and its package.json / package-lock.json.
const browserDir = "browser"

// requireBrowser fails the test unless chromium and node are installed,
// and installs playwright-core (npm ci, from the lock file) when
// browser/node_modules lacks it.
func requireBrowser(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found: apt-get install chromium (make test installs it)", chromiumPath)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: apt-get install nodejs npm (Node.js 20 or later)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatal("npm not found: apt-get install npm")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = browserDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in e2e/%s: %v\n%s", browserDir, err, out)
		}
	}
	return node
}

// TestLiveViewInABrowser opens the gateway's live view in headless
// chromium (Playwright), waits until it shows a balltrack device with a
// live fps and its annotated frame, clicks split 2, and checks with a real
// MQTT client that the device's retained state changed to split 2 in
// manual mode. It saves the screenshot the README shows
// (docs/live-view.png).
func TestLiveViewInABrowser(t *testing.T) {
	node := requireBrowser(t)
	gw := writeFile(t, "gateway.toml", "http_listen = \"127.0.0.1:0\"\n")
	broker, g := startGateway(t, "-c", gw)
	urlRe := regexp.MustCompile(`gateway live view on (http://127\.0\.0\.1:\d+/)`)
	waitFor(t, 10*time.Second, "the live view's address", func() bool { return urlRe.MatchString(g.stdout.String()) })
	url := urlRe.FindStringSubmatch(g.stdout.String())[1]
	startCloud(t, broker, "c1")
	w := watch(t, broker)
	pi := writeFile(t, "pi.toml", "telemetry_interval = \"500ms\"\n[balltrack]\nannotate = true\nannotated_rate = 4.0\n")
	dev := start(t, "device", "--broker", broker, "--id", "web1", "--source", "synthetic:?fps=20", "-c", pi)
	run := runOf(t, w, "web1")
	if s, _ := w.lastState(run); s.Split == 2 || s.Mode != wire.ModeAuto {
		t.Fatalf("the device starts at split %d, %s: the click would change nothing", s.Split, s.Mode)
	}

	docs, err := filepath.Abs(filepath.Join("..", "docs")) // the script runs in browser/
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(docs, "live-view.png")
	args, _ := json.Marshal(map[string]any{"url": url, "device": "web1", "split": 2, "chromium": chromiumPath,
		"screenshot": shot, "failureScreenshot": filepath.Join(t.TempDir(), "failure.png"), "timeoutMs": 90000})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "liveview.js", string(args))
	cmd.Dir = browserDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err = cmd.Run()
	t.Logf("browser (%v): %s\n%s", time.Since(began).Round(time.Millisecond), bytes.TrimSpace(stdout.Bytes()), stderr.String())
	if err != nil {
		t.Fatalf("the browser script failed: %v", err)
	}

	// The device's retained state, read by a real MQTT client.
	var mu sync.Mutex
	var st wire.DeviceState
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-web-state"))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cl.Disconnect(100)
	if tok := cl.Subscribe(wire.StateTopic("web1"), 1, func(_ paho.Client, m paho.Message) {
		if s, err := wire.ParseDeviceState(m.Payload()); err == nil {
			mu.Lock()
			st = s
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	waitFor(t, 30*time.Second, "the retained state of split 2, manual", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return st.Run == run && st.Split == 2 && st.Mode == wire.ModeManual
	})
	d := w.lastDecision()
	if d.Split != 2 || d.Mode != wire.ModeManual || !regexpMatch(`^web-[0-9a-f]{12}$`, d.CmdID) {
		t.Errorf("the decision %+v: want split 2, manual, answering the page's cmd_id", d)
	}
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	dev.stop(t)
}
