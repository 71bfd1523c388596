package e2e

import (
	"encoding/json"
	"fmt"
	"net"
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

	"github.com/splitpoint/splitpoint/wire"
)

// upstream is a real Debian mosquitto started by the test on a free
// loopback port, with TLS, a password file and an ACL that keeps each site
// to its own prefix (the README's upstream configuration).
type upstream struct {
	dir, conf, url, caFile string
	port                   int
	cmd                    *exec.Cmd
	out                    *strings.Builder
	mu                     sync.Mutex
}

// upstreamACL is the README's upstream ACL: a site's bridge logs in with
// the site's name and reads and writes only under sites/<site>/; cloudprocs
// read every site's stage states and answer on every site's result topics.
const upstreamACL = `# every identity (a pattern applies to all users): the cloudprocs' status
# and telemetry
pattern read offload/_cloud/#

# a site's bridge (user name = site name): its own prefix only
pattern readwrite sites/%u/#

user cloud1
topic read sites/+/offload/#
topic write sites/+/offload/+/result
topic write sites/+/offload/+/annotated
topic readwrite offload/_cloud/cloud1/#

user cloud2
topic read sites/+/offload/#
topic write sites/+/offload/+/result
topic write sites/+/offload/+/annotated
topic readwrite offload/_cloud/cloud2/#

user cloud3
topic read sites/+/offload/#
topic write sites/+/offload/+/result
topic write sites/+/offload/+/annotated
topic readwrite offload/_cloud/cloud3/#
`

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startUpstream starts mosquitto with users home, plant (bridges), cloud1..3.
func startUpstream(t *testing.T) *upstream {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Fatal("mosquitto not installed (make test installs Debian's mosquitto)")
	}
	u := &upstream{dir: t.TempDir(), port: freePort(t)}
	passwd := filepath.Join(u.dir, "passwd")
	for i, user := range []string{"home", "plant", "cloud1", "cloud2", "cloud3"} {
		args := []string{"-b", passwd, user, "pw-" + user}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		run(t, "mosquitto_passwd", args...)
		writePrivate(t, filepath.Join(u.dir, user+".pass"), "pw-"+user+"\n")
	}
	tlsDir := filepath.Join(u.dir, "tls")
	run(t, "../scripts/gen-certs.sh", tlsDir, "IP:127.0.0.1")
	u.caFile = filepath.Join(tlsDir, "ca.crt")
	writePrivate(t, filepath.Join(u.dir, "acl"), upstreamACL)
	u.conf = filepath.Join(u.dir, "mosquitto.conf")
	writePrivate(t, u.conf, fmt.Sprintf(`user root
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
allow_anonymous false
password_file %s
acl_file %s
persistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 100000
log_dest stdout
`, u.port, u.caFile, filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "server.key"), passwd, filepath.Join(u.dir, "acl"), u.dir))
	u.url = fmt.Sprintf("ssl://127.0.0.1:%d", u.port)
	u.start(t)
	t.Cleanup(func() { u.kill() })
	return u
}

func (u *upstream) start(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.out = &strings.Builder{}
	u.cmd = exec.Command("mosquitto", "-c", u.conf)
	var buf lockedWriter
	buf.b = u.out
	u.cmd.Stdout, u.cmd.Stderr = &buf, &buf
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = u.cmd.Wait() }()
	waitFor(t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", u.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kill stops mosquitto with SIGKILL.
func (u *upstream) kill() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd != nil && u.cmd.Process != nil {
		_ = u.cmd.Process.Signal(syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// cloudConfig writes a cloudproc config for the upstream: every site.
func (u *upstream) cloudConfig(t *testing.T, id string) string {
	t.Helper()
	p := filepath.Join(u.dir, id+".toml")
	writePrivate(t, p, fmt.Sprintf("broker = %q\nca_file = %q\nusername = %q\npassword_file = %q\ntopic_prefix = %q\n",
		u.url, u.caFile, id, filepath.Join(u.dir, id+".pass"), wire.SiteFilterPrefix))
	return p
}

// gatewayConfig writes a gateway config whose bridge logs in as site.
func (u *upstream) gatewayConfig(t *testing.T, site, listen string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gateway-"+site+".toml")
	writePrivate(t, p, fmt.Sprintf(`listen = %q
[bridge]
url = %q
site = %q
username = %q
password_file = %q
ca_file = %q
spool_dir = %q
probe_interval = "2s"
`, listen, u.url, site, site, filepath.Join(u.dir, site+".pass"), u.caFile, filepath.Join(u.dir, "spool-"+site)))
	return p
}

// startBridgedGateway starts a gateway for site bridged to u and returns
// its local broker URL.
func startBridgedGateway(t *testing.T, u *upstream, site, listen string) (string, *proc) {
	t.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	g := start(t, "gateway", "-c", u.gatewayConfig(t, site, listen))
	var addr string
	waitFor(t, 30*time.Second, "the gateway's address", func() bool {
		line, _, ok := strings.Cut(g.stdout.String(), "\n")
		addr = strings.TrimPrefix(line, "gateway listening on ")
		return ok
	})
	return "tcp://" + addr, g
}

// waitCloudOnline waits until the local broker announces cloud id online
// (the bridge brought its retained status down).
func waitCloudOnline(t *testing.T, broker, id string) {
	t.Helper()
	got := make(chan struct{}, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("w-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	c.Subscribe(wire.CloudStatusTopic(id), 1, func(_ paho.Client, m paho.Message) {
		if string(m.Payload()) == wire.Online {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}).WaitTimeout(10 * time.Second)
	select {
	case <-got:
	case <-time.After(60 * time.Second):
		t.Fatalf("cloudproc %s never announced online on the gateway's broker", id)
	}
}

// bridgeStatus reads the retained offload/_bridge/status.
func bridgeStatus(t *testing.T, broker string) map[string]any {
	t.Helper()
	ch := make(chan []byte, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID(fmt.Sprintf("bs-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	c.Subscribe(wire.BridgeStatusTopic, 1, func(_ paho.Client, m paho.Message) {
		select {
		case ch <- m.Payload():
		default:
		}
	}).WaitTimeout(10 * time.Second)
	select {
	case b := <-ch:
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("bridge status %q: %v", b, err)
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no retained bridge status")
	}
	return nil
}

// Devices → gateway → bridge → mosquitto (TLS, passwords, ACL) → cloudproc
// (shared subscription over every site) → back: every split, exactly one
// result per frame, identical to each other.
func TestBridgeEverySplitThroughMosquitto(t *testing.T) {
	u := startUpstream(t)
	startCloud(t, u.url, "cloud1", "-c", u.cloudConfig(t, "cloud1"))
	broker, _ := startBridgedGateway(t, u, "home", "")
	waitCloudOnline(t, broker, "cloud1")
	col := newCollector(t, broker)
	const frames = 40
	src := "synthetic:?fps=0&seed=5"
	everySplitIdentical(t, broker, col, frames, src)
	st := bridgeStatus(t, broker)
	if st["connected"] != true || st["acknowledged"].(float64) < frames || st["spool"].(map[string]any)["messages"].(float64) != 0 {
		t.Errorf("bridge status %v: want connected, acknowledged publishes, an empty spool", st)
	}
	t.Logf("bridge status: %v", st)
}

// Three cloudprocs share the work on the upstream; one is killed with
// SIGKILL mid-stream. Two sites with a device of the same name run at
// once: every frame is answered and counted once, and results never cross
// sites.
func TestBridgeSitesAndSharedCloudprocs(t *testing.T) {
	u := startUpstream(t)
	clouds := []*proc{}
	for _, id := range []string{"cloud1", "cloud2", "cloud3"} {
		clouds = append(clouds, startCloud(t, u.url, id, "-c", u.cloudConfig(t, id)))
	}
	home, _ := startBridgedGateway(t, u, "home", "")
	plant, _ := startBridgedGateway(t, u, "plant", "")
	for _, b := range []string{home, plant} {
		for _, id := range []string{"cloud1", "cloud2", "cloud3"} {
			waitCloudOnline(t, b, id)
		}
	}
	colHome, colPlant := newCollector(t, home), newCollector(t, plant)
	const frames = 200
	var wg sync.WaitGroup
	sums := make([]summary, 2)
	for i, b := range []string{home, plant} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := start(t, "device", "--broker", b, "--id", "pi1", "--source", "synthetic:?fps=40&seed=7", "--frames", fmt.Sprint(frames), "--split", "2")
			if code := d.wait(t, 5*time.Minute); code != 0 {
				t.Errorf("device at %s exited %d", b, code)
				return
			}
			sums[i] = parseSummary(t, d.stdout.String())
		}()
	}
	time.Sleep(2 * time.Second)
	_ = clouds[1].cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	for i, col := range []*collector{colHome, colPlant} {
		s := sums[i]
		if s.captured != frames || s.results != frames || s.badResults != 0 {
			t.Errorf("site %d: %+v", i, s)
		}
		waitFor(t, 30*time.Second, "the results", func() bool { return col.count(s.run) >= s.results })
		other := sums[1-i].run
		if n := col.count(other); n != 0 {
			t.Errorf("site %d received %d results of the other site's run", i, n)
		}
		exactlyOnce(t, col.run(t, s.run), "pi1", frames)
	}
	t.Logf("home %+v\nplant %+v", sums[0], sums[1])
}

// Outages: the upstream mosquitto is killed with SIGKILL mid-stream and
// restarted; then, with the upstream down again, the gateway is killed with
// SIGKILL while its spool holds messages and restarted on the same port and
// spool. Devices see the cloud go offline and come back; every frame is
// counted once at the device, and the spool's counts are visible on
// offload/_bridge/status.
func TestBridgeOutages(t *testing.T) {
	u := startUpstream(t)
	startCloud(t, u.url, "cloud1", "-c", u.cloudConfig(t, "cloud1"))
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	broker, gw := startBridgedGateway(t, u, "home", listen)
	waitCloudOnline(t, broker, "cloud1")
	devCfg := filepath.Join(t.TempDir(), "pi.toml")
	writePrivate(t, devCfg, "resend_after = \"3s\"\nmax_resends = 0\ndrain_timeout = \"120s\"\n")
	const frames = 300
	dev := start(t, "device", "-c", devCfg, "--broker", broker, "--id", "pi1", "--source", "synthetic:?fps=30&seed=2", "--frames", fmt.Sprint(frames), "--split", "3")
	waitFor(t, 60*time.Second, "results before the outage", func() bool { return lastCount(dev.stdout.String(), "results") > 0 })

	// 1. The upstream dies and comes back.
	u.kill()
	waitFor(t, 20*time.Second, "the bridge to notice", func() bool { return bridgeStatus(t, broker)["connected"] == false })
	time.Sleep(2 * time.Second)
	u.start(t)
	waitFor(t, 60*time.Second, "the bridge to reconnect", func() bool { return bridgeStatus(t, broker)["connected"] == true })
	time.Sleep(2 * time.Second)

	// 2. The upstream dies again; frames in flight are spooled; the
	// gateway is killed and restarted with its spool.
	u.kill()
	waitFor(t, 20*time.Second, "messages in the spool", func() bool {
		st := bridgeStatus(t, broker)
		return st["connected"] == false && st["spool"].(map[string]any)["messages"].(float64) > 0
	})
	_ = gw.cmd.Process.Signal(syscall.SIGKILL)
	<-gw.done
	broker2, _ := startBridgedGateway(t, u, "home", listen)
	if broker2 != broker {
		t.Fatalf("gateway restarted on %s, want %s", broker2, broker)
	}
	st := bridgeStatus(t, broker)
	spooled := st["spool"].(map[string]any)["messages"].(float64)
	if spooled == 0 {
		t.Errorf("the spool was empty after the gateway's restart: %v", st)
	}
	t.Logf("after kill -9 and restart, the spool holds %v messages", spooled)
	u.start(t)

	if code := dev.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("device exited %d", code)
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.captured != frames || sum.results+sum.drops != frames || sum.badResults != 0 {
		t.Errorf("device summary %+v: want every frame counted once", sum)
	}
	waitFor(t, 30*time.Second, "the spool to drain", func() bool {
		st := bridgeStatus(t, broker)
		return st["connected"] == true && st["spool"].(map[string]any)["messages"].(float64) == 0
	})
	t.Logf("device %+v", sum)
}

// A sensor that must not miss data (offline = "spool") through an outage of
// the upstream: while no cloudproc is reachable it keeps capturing (with a
// window of 2, full of unanswerable frames when the link drops), runs
// every stage but the sink and its small states wait in the gateway's
// spool; when the link is back each frame gets its one result, late. Every
// frame is counted once (captured = results + dropped, nothing dropped),
// the spool's counts are visible on offload/_bridge/status, and the
// gateway's and the device's memory stay bounded.
func TestBridgeSpoolingDeviceThroughAnOutage(t *testing.T) {
	u := startUpstream(t)
	startCloud(t, u.url, "cloud1", "-c", u.cloudConfig(t, "cloud1"))
	broker, gw := startBridgedGateway(t, u, "home", "")
	waitCloudOnline(t, broker, "cloud1")
	col := newCollector(t, broker)
	devCfg := filepath.Join(t.TempDir(), "pi.toml")
	writePrivate(t, devCfg, "offline = \"spool\"\nwindow = 2\nresend_after = \"10s\"\nmax_resends = 0\ndrain_timeout = \"120s\"\n")
	const frames = 300
	dev := start(t, "device", "-c", devCfg, "--broker", broker, "--id", "sensor1", "--source", "synthetic:?fps=30&seed=4",
		"--frames", fmt.Sprint(frames), "--split", "2")
	waitFor(t, 60*time.Second, "results before the outage", func() bool { return lastCount(dev.stdout.String(), "results") > 0 })

	u.kill()
	waitFor(t, 30*time.Second, "the device to spool", func() bool { return strings.Contains(dev.stderr.String(), "spooling through the gateway's bridge") })
	var spooled float64
	waitFor(t, 30*time.Second, "states in the gateway's spool", func() bool {
		st := bridgeStatus(t, broker)
		spooled = st["spool"].(map[string]any)["messages"].(float64)
		return st["connected"] == false && spooled >= 30
	})
	devRSS := procStatusKB(t, dev, "VmRSS")
	t.Logf("the gateway's spool holds %v messages; device RSS %d KiB", spooled, devRSS)
	u.start(t)

	if code := dev.wait(t, 5*time.Minute); code != 0 {
		t.Fatalf("device exited %d:\n%s", code, tail(dev.stderr.String()))
	}
	sum := parseSummary(t, dev.stdout.String())
	m := regexp.MustCompile(`spooled=(\d+)`).FindStringSubmatch(dev.stdout.String())
	if m == nil {
		t.Fatal("no spooled= in the summary")
	}
	devSpooled, _ := strconv.Atoi(m[1])
	if sum.captured != frames || sum.results != frames || sum.drops != 0 || sum.badResults != 0 {
		t.Errorf("device summary %+v: want every frame captured and answered once, none dropped", sum)
	}
	if devSpooled < 30 {
		t.Errorf("the device spooled %d frames, want ≥ 30 (it kept capturing through the outage)", devSpooled)
	}
	waitFor(t, 30*time.Second, "every result on the LAN", func() bool { return col.count(sum.run) >= frames })
	seen := map[uint64]bool{}
	for _, r := range col.run(t, sum.run) {
		seen[r.Seq] = true
	}
	if len(seen) != frames {
		t.Errorf("results for %d distinct frames on the LAN, want %d", len(seen), frames)
	}
	st := bridgeStatus(t, broker)
	if st["spool"].(map[string]any)["messages"].(float64) != 0 || st["spool"].(map[string]any)["discarded"].(float64) != 0 {
		t.Errorf("bridge status after the drain %v: want an empty spool, nothing discarded", st)
	}
	// Memory: the spooled states are small (split 6) and on disk; neither
	// process grew with the outage.
	gwPeak := procStatusKB(t, gw, "VmHWM")
	t.Logf("device %+v spooled=%d; gateway peak RSS %d KiB", sum, devSpooled, gwPeak)
	if gwPeak > 256<<10 || devRSS > 256<<10 {
		t.Errorf("gateway peak RSS %d KiB, device RSS while spooling %d KiB; want ≤ 256 MiB each", gwPeak, devRSS)
	}
}

// lastCount returns the last key=N of a device's status lines.
func lastCount(out, key string) int {
	m := regexp.MustCompile(`\b`+key+`=(\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}
