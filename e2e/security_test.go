package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
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

	"github.com/splitpoint/splitpoint/wire"
)

// secureSite is a gateway with [auth] and [tls] on, set up with the
// commands of the README's "Securing a gateway": users by Debian's
// mosquitto_passwd (one by htpasswd -B, bcrypt), certificates by
// scripts/gen-certs.sh (openssl).
type secureSite struct {
	dir          string
	plain, tls   string // tcp://127.0.0.1:P (loopback), ssl://127.0.0.1:Q
	gw           *proc
	caFile       string
	passwordFile string
}

// Users of a secure site: devices pi1 and pi2 (bcrypt), cloudproc cloud1,
// admin ops; pi3 and cloud2 log in by client certificate.
var siteUsers = [][2]string{{"pi1", "pw-pi1"}, {"cloud1", "pw-cloud1"}, {"ops", "pw-ops"}}

func startSecureSite(t *testing.T) *secureSite {
	t.Helper()
	for _, tool := range []string{"mosquitto_passwd", "htpasswd", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make test installs Debian's mosquitto, apache2-utils and openssl)", tool)
		}
	}
	s := &secureSite{dir: t.TempDir()}
	s.passwordFile = filepath.Join(s.dir, "passwd")
	for i, u := range siteUsers {
		args := []string{"-b", s.passwordFile, u[0], u[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		run(t, "mosquitto_passwd", args...)
	}
	line := run(t, "htpasswd", "-nbB", "pi2", "pw-pi2")
	appendFile(t, s.passwordFile, strings.TrimSpace(line)+"\n")
	for _, u := range append(siteUsers, [2]string{"pi2", "pw-pi2"}) {
		writePrivate(t, filepath.Join(s.dir, u[0]+".pass"), u[1]+"\n")
	}
	tlsDir := filepath.Join(s.dir, "tls")
	run(t, "../scripts/gen-certs.sh", tlsDir, "IP:127.0.0.1", "pi3", "cloud2")
	s.caFile = filepath.Join(tlsDir, "ca.crt")
	cfg := filepath.Join(s.dir, "gateway.toml")
	writePrivate(t, cfg, fmt.Sprintf(`listen = "127.0.0.1:0"
connect_timeout = "1s"
stats_interval = "1s"
[auth]
password_file = %q
cloud = ["cloud1", "cloud2"]
admin = ["ops"]
[tls]
listen = "127.0.0.1:0"
cert_file = %q
key_file = %q
client_ca_file = %q
`, s.passwordFile, filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "server.key"), s.caFile))
	var plain string
	plain, s.gw = startGateway(t, "-c", cfg)
	s.plain = plain
	re := regexp.MustCompile(`gateway listening for TLS on (127\.0\.0\.1:\d+)`)
	waitFor(t, 10*time.Second, "the TLS listener line", func() bool { return re.MatchString(s.gw.stdout.String()) })
	s.tls = "ssl://" + re.FindStringSubmatch(s.gw.stdout.String())[1]
	return s
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// writePrivate writes a file only its owner can read.
func writePrivate(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// clientConfig writes a device or cloudproc config that logs in as user
// (password file) or by certificate cn, over TLS.
func (s *secureSite) clientConfig(t *testing.T, name, user, cn string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "broker = %q\nca_file = %q\n", s.tls, s.caFile)
	if user != "" {
		fmt.Fprintf(&b, "username = %q\npassword_file = %q\n", user, filepath.Join(s.dir, user+".pass"))
	}
	if cn != "" {
		fmt.Fprintf(&b, "cert_file = %q\nkey_file = %q\n", filepath.Join(s.dir, "tls", cn+".crt"), filepath.Join(s.dir, "tls", cn+".key"))
	}
	path := filepath.Join(s.dir, name+".toml")
	writePrivate(t, path, b.String())
	return path
}

// pahoAs is paho options for a login over TLS (or the plain loopback
// listener when tlsOn is false).
func (s *secureSite) pahoAs(t *testing.T, clientID, user, pass string, tlsOn bool) *paho.ClientOptions {
	t.Helper()
	o := paho.NewClientOptions().SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetOrderMatters(false)
	if tlsOn {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		o.AddBroker(s.tls).SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	} else {
		o.AddBroker(s.plain)
	}
	return o
}

func connectOpts(o *paho.ClientOptions) (paho.Client, error) {
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	return c, nil
}

// The end-to-end flow with TLS and passwords on: devices and cloudprocs
// log in over TLS (password files; one device and one cloudproc by client
// certificate), every split gives one identical result per frame.
func TestSecuredEveryStageEverySplit(t *testing.T) {
	s := startSecureSite(t)
	startCloud(t, s.tls, "cloud1", "-c", s.clientConfig(t, "cloud1", "cloud1", ""))
	startCloud(t, s.tls, "cloud2", "-c", s.clientConfig(t, "cloud2", "", "cloud2"))
	col := newCollectorWith(t, s.pahoAs(t, "e2e-results", "ops", "pw-ops", true))
	const frames = 30
	src := "synthetic:?fps=0&seed=9"
	pi1 := s.clientConfig(t, "pi1", "pi1", "")
	everySplitIdentical(t, s.tls, col, frames, src, "-c", pi1)
	// A device by client certificate (mutual TLS, no password), and pi2
	// whose password line htpasswd -B wrote (bcrypt).
	if sum := runDevice(t, s.tls, "-c", s.clientConfig(t, "pi3", "", "pi3"), "--id", "pi3", "--source", src, "--frames", "20", "--split", "3"); sum.results != 20 {
		t.Errorf("pi3 by certificate: %+v", sum)
	}
	if sum := runDevice(t, s.tls, "-c", s.clientConfig(t, "pi2", "pi2", ""), "--id", "pi2", "--source", src, "--frames", "20", "--split", "2"); sum.results != 20 {
		t.Errorf("pi2 (bcrypt): %+v", sum)
	}
	// A device with someone else's identity is refused, and says so.
	d := start(t, "device", "-c", pi1, "--broker", s.tls, "--id", "pi5", "--source", src, "--frames", "5")
	if code := d.wait(t, 60*time.Second); code == 0 || !strings.Contains(d.stderr.String(), "refused") {
		t.Errorf("device pi5 logging in as pi1 exited %d:\n%s", code, tail(d.stderr.String()))
	}
}

// Real mosquitto_sub/mosquitto_pub over TLS with --cafile, with a password
// and with a client certificate; wrong credentials refused; a user added
// with mosquitto_passwd logs in after SIGHUP.
func TestMosquittoClientsOverTLS(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Fatal("mosquitto_sub not installed (make test installs Debian's mosquitto-clients)")
	}
	s := startSecureSite(t)
	startCloud(t, s.tls, "cloud1", "-c", s.clientConfig(t, "cloud1", "cloud1", ""))
	host, port, _ := strings.Cut(strings.TrimPrefix(s.tls, "ssl://"), ":")
	tlsArgs := []string{"-h", host, "-p", port, "--cafile", s.caFile}
	sub := func(extra ...string) (string, error) {
		args := append(append([]string{"-W", "10", "-C", "1", "-v"}, tlsArgs...), extra...)
		out, err := exec.Command("mosquitto_sub", args...).CombinedOutput()
		return string(out), err
	}
	out, err := sub("-u", "ops", "-P", "pw-ops", "-t", wire.CloudStatusFilter)
	if err != nil || strings.TrimSpace(out) != wire.CloudStatusTopic("cloud1")+" online" {
		t.Errorf("admin mosquitto_sub over TLS: %v %q", err, out)
	}
	if out, err := sub("-u", "ops", "-P", "wrong", "-t", wire.CloudStatusFilter); err == nil || !strings.Contains(out, "not authorised") {
		t.Errorf("wrong password: %v %q, want refused (not authorised)", err, out)
	}
	if out, err := sub("-t", wire.CloudStatusFilter); err == nil {
		t.Errorf("anonymous over TLS: %q, want refused", out)
	}
	if out, _ := sub("-u", "ops", "-P", "pw-ops", "-t", "#"); !strings.Contains(out, "All subscription requests were denied") {
		t.Errorf("admin subscribing to #: %q, want the subscription denied", out)
	}
	tlsDir := filepath.Join(s.dir, "tls")
	out, err = sub("-i", wire.DeviceClientID("pi3"), "--cert", filepath.Join(tlsDir, "pi3.crt"), "--key", filepath.Join(tlsDir, "pi3.key"), "-t", wire.CloudStatusFilter)
	if err != nil || !strings.Contains(out, "online") {
		t.Errorf("device pi3 by client certificate: %v %q", err, out)
	}
	pub := append(append([]string{}, tlsArgs...), "-u", "ops", "-P", "pw-ops", "-q", "1", "-t", wire.ControlTargetSetTopic("pi1"), "-m", "12")
	if out, err := exec.Command("mosquitto_pub", pub...).CombinedOutput(); err != nil {
		t.Errorf("admin mosquitto_pub of a command: %v %s", err, out)
	}
	// A user added with mosquitto_passwd logs in after SIGHUP.
	run(t, "mosquitto_passwd", "-b", s.passwordFile, "pi9", "pw-pi9")
	if out, err := sub("-i", wire.DeviceClientID("pi9"), "-u", "pi9", "-P", "pw-pi9", "-t", wire.CloudStatusFilter); err == nil {
		t.Fatalf("pi9 logged in before the reload: %q", out)
	}
	if err := s.gw.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(s.gw.stderr.String(), "reloaded the password file") })
	if out, err := sub("-i", wire.DeviceClientID("pi9"), "-u", "pi9", "-P", "pw-pi9", "-t", wire.CloudStatusFilter); err != nil || !strings.Contains(out, "online") {
		t.Errorf("pi9 after SIGHUP: %v %q", err, out)
	}
}

// The attacks of issue 8, re-run with auth on, while a device streams:
// each is refused, the device gets exactly its real results, and the
// gateway's memory stays bounded under half-open and oversized CONNECTs.
func TestSecuredGatewayRefusesAttacks(t *testing.T) {
	s := startSecureSite(t)
	startCloud(t, s.tls, "cloud1", "-c", s.clientConfig(t, "cloud1", "cloud1", ""))
	const frames = 150
	dev := start(t, "device", "-c", s.clientConfig(t, "pi1", "pi1", ""), "--id", "pi1", "--source", "synthetic:?fps=25&seed=3", "--frames", fmt.Sprint(frames), "--split", "3")
	waitFor(t, 30*time.Second, "the device running", func() bool {
		return strings.Contains(dev.stdout.String(), "run") || strings.Contains(dev.stderr.String(), "connected")
	})

	// The admin watches the security counters, the cloud status and the
	// device's decision.
	var mu sync.Mutex
	retained := map[string]string{}
	var sec struct {
		Denied    map[string]int64 `json:"denied"`
		Listeners map[string]struct {
			Oversized, TimedOut, PreAuthMaxBytes int64
		} `json:"listeners"`
	}
	admin, err := connectOpts(s.pahoAs(t, "ops-watch", "ops", "pw-ops", true))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Disconnect(0)
	tok := admin.SubscribeMultiple(map[string]byte{wire.SysSecurityTopic: 1, wire.CloudStatusFilter: 1, wire.ControlSplitTopic("pi1"): 1}, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		retained[m.Topic()] = string(m.Payload())
		if m.Topic() == wire.SysSecurityTopic {
			_ = json.Unmarshal(m.Payload(), &sec)
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal("admin subscribe", tok.Error())
	}

	attacker := func(user, pass, clientID string) paho.Client {
		c, err := connectOpts(s.pahoAs(t, clientID, user, pass, false))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		return c
	}
	// Fake results, fake cloud presence, forged decisions: an authenticated
	// device (pi2) and the admin try; each denied QoS 1 publish closes the
	// connection (MQTT 3.1.1 has no negative PUBACK).
	for _, a := range []struct{ user, pass, id, topic, payload string }{
		{"pi2", "pw-pi2", wire.DeviceClientID("pi2"), wire.ResultTopic("pi1"), `{"device":"pi1","seq":0,"detected":true}`},
		{"ops", "pw-ops", "ops-1", wire.ResultTopic("pi1"), `{"device":"pi1","seq":1,"detected":true}`},
		{"pi2", "pw-pi2", wire.DeviceClientID("pi2"), wire.CloudStatusTopic("fake"), wire.Online},
		{"ops", "pw-ops", "ops-2", wire.CloudStatusTopic("fake"), wire.Online},
		{"pi2", "pw-pi2", wire.DeviceClientID("pi2"), wire.ControlSplitTopic("pi1"), `{"split":1}`},
		{"ops", "pw-ops", "ops-3", wire.ControlSplitTopic("pi1"), `{"split":1}`},
	} {
		c := attacker(a.user, a.pass, a.id)
		c.Publish(a.topic, 1, true, a.payload).WaitTimeout(3 * time.Second)
		waitFor(t, 10*time.Second, a.user+"'s connection closed after publishing to "+a.topic, func() bool { return !c.IsConnectionOpen() })
	}
	// Reading frames: # and the stage topics are refused.
	c := attacker("ops", "pw-ops", "ops-4")
	st := c.SubscribeMultiple(map[string]byte{"#": 0, "offload/#": 0, wire.StageTopic("pi1", "mask"): 0, "offload/+/+": 0}, nil)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatal(st.Error())
	}
	for f, code := range st.(*paho.SubscribeToken).Result() {
		if code != 0x80 {
			t.Errorf("admin granted %q (code %d)", f, code)
		}
	}
	c.Disconnect(0)
	// Taking the device's client id, and a will on the cloud status.
	if c, err := connectOpts(s.pahoAs(t, wire.DeviceClientID("pi1"), "pi2", "pw-pi2", false)); err == nil {
		c.Disconnect(0)
		t.Error("pi2 connected with pi1's client id")
	}
	if c, err := connectOpts(s.pahoAs(t, wire.DeviceClientID("pi2"), "pi2", "pw-pi2", false).SetWill(wire.CloudStatusTopic("x"), wire.Online, 1, true)); err == nil {
		c.Disconnect(0)
		t.Error("pi2 connected with a will on a cloud status topic")
	}
	for _, o := range []*paho.ClientOptions{s.pahoAs(t, "anon", "", "", false), s.pahoAs(t, wire.DeviceClientID("pi1"), "pi1", "guess", true)} {
		if c, err := connectOpts(o); err == nil {
			c.Disconnect(0)
			t.Error("anonymous or wrong-password client connected")
		}
	}

	// Half-open and oversized CONNECTs: 100 sockets that declare an 8 MB
	// CONNECT, 100 that never send anything.
	rssBefore := procStatusKB(t, s.gw, "VmRSS")
	addr := strings.TrimPrefix(s.plain, "tcp://")
	var socks []net.Conn
	for i := range 200 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, conn)
		if i%2 == 0 {
			_, _ = conn.Write([]byte{0x10, 0x80, 0x80, 0x80, 0x04}) // CONNECT, remaining length 8 MiB
			_, _ = conn.Write(make([]byte, 4096))
		}
	}
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	waitFor(t, 20*time.Second, "the guard to close every socket", func() bool {
		mu.Lock()
		defer mu.Unlock()
		g := sec.Listeners["tcp"]
		return g.Oversized >= 100 && g.TimedOut >= 100
	})
	peak := procStatusKB(t, s.gw, "VmHWM")
	t.Logf("gateway RSS before the flood %d KiB, peak after 200 hostile sockets %d KiB", rssBefore, peak)
	// Bound: what the gateway used before, plus each socket's CONNECT cap
	// (4 KiB), plus slack for the Go runtime (race-enabled build).
	if limit := rssBefore + 200*4 + 64<<10; peak > limit {
		t.Errorf("gateway peak RSS %d KiB, want ≤ %d KiB (before the flood %d KiB)", peak, limit, rssBefore)
	}
	mu.Lock()
	if g := sec.Listeners["tcp"]; g.PreAuthMaxBytes > 4096 {
		t.Errorf("a connection delivered %d bytes before logging in, cap 4096", g.PreAuthMaxBytes)
	}
	mu.Unlock()

	// The device got exactly its real results, nothing forged.
	if code := dev.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("device exited %d", code)
	}
	sum := parseSummary(t, dev.stdout.String())
	if sum.captured != frames || sum.results != frames || sum.badResults != 0 || sum.duplicates != 0 {
		t.Errorf("device summary %+v: want %d real results, no bad or duplicate ones", sum, frames)
	}
	waitFor(t, 10*time.Second, "the denial counters", func() bool {
		mu.Lock()
		defer mu.Unlock()
		d := sec.Denied
		return d["publish"] >= 6 && d["read"] >= 4 && d["client_id"] >= 1 && d["will"] >= 1 && d["bad_credentials"] >= 1 && d["no_credentials"] >= 1
	})
	mu.Lock()
	defer mu.Unlock()
	if v, ok := retained[wire.CloudStatusTopic("fake")]; ok {
		t.Errorf("fake cloud status delivered: %q", v)
	}
	if strings.Contains(retained[wire.ControlSplitTopic("pi1")], `{"split":1}`) {
		t.Errorf("forged decision retained: %q", retained[wire.ControlSplitTopic("pi1")])
	}
}

// procStatusKB reads a field of /proc/PID/status in KiB.
func procStatusKB(t *testing.T, p *proc, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(field + `:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /proc/PID/status", field)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
