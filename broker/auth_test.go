package broker

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/splitpoint/splitpoint/internal/testutil"
)

var testUsers = map[string]string{"pi1": "pw-pi1", "pi2": "pw-pi2", "c1": "pw-c1", "ops": "pw-ops"}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startAuth(t *testing.T, a Auth, tl *TLSListener) *Broker {
	t.Helper()
	a.Cloud, a.Admin = []string{"c1"}, []string{"ops"}
	a.Stages, a.HAPrefix = []string{"capture", "hsv"}, "homeassistant"
	b, err := Start(Config{Listen: "127.0.0.1:0", MaxMessageBytes: 1 << 20, Auth: &a, TLS: tl}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

type login struct {
	id, user, pass string
	tls            *tls.Config
	will           string // will topic (payload "x", retained)
}

func connectAs(url string, l login) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(l.id).SetUsername(l.user).SetPassword(l.pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	if l.tls != nil {
		o.SetTLSConfig(l.tls)
	}
	if l.will != "" {
		o.SetWill(l.will, "x", 1, true)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	return c, nil
}

func mustConnect(t *testing.T, url string, l login) paho.Client {
	t.Helper()
	c, err := connectAs(url, l)
	if err != nil {
		t.Fatalf("%s as %s: %v", l.id, l.user, err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func TestAuthLoginsAndClientIDs(t *testing.T) {
	b := startAuth(t, Auth{PasswordFile: testutil.WritePasswd(t, testUsers)}, nil)
	url := "tcp://" + b.Addr()
	refused := []struct {
		l      login
		reason string
	}{
		{login{id: "splitpoint-device-pi1"}, DenyNoCredentials},
		{login{id: "splitpoint-device-pi1", user: "pi1", pass: "wrong"}, DenyBadCredentials},
		{login{id: "splitpoint-device-pi1", user: "nobody", pass: "pw-pi1"}, DenyBadCredentials},
		{login{id: "splitpoint-device-pi1", user: "pi2", pass: "pw-pi2"}, DenyClientID}, // another device's id
		{login{id: "splitpoint-device-pi1", user: "ops", pass: "pw-ops"}, DenyClientID}, // admin taking a device's id
		{login{id: "splitpoint-cloud-c2", user: "c1", pass: "pw-c1"}, DenyClientID},     // another cloud's id
		{login{id: "mosq-1", user: "pi1", pass: "pw-pi1"}, DenyClientID},                // device with a free id
		{login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1", will: "offload/_cloud/x/status"}, DenyWill},
		{login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1", will: "offload/pi1/control/split"}, DenyWill},
		{login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1", will: "offload/pi1/telemetry"}, DenyWill}, // may publish, may not retain
		{login{id: "ha", user: "ops", pass: "pw-ops", will: "offload/pi1/control/split/set"}, DenyWill},            // admin may not retain
	}
	keeper := mustConnect(t, url, login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1", will: "offload/pi1/status"})
	for _, r := range refused {
		before := b.SecurityStats().Denied[r.reason]
		if c, err := connectAs(url, r.l); err == nil {
			c.Disconnect(0)
			t.Errorf("%+v: connected, want refused (%s)", r.l, r.reason)
			continue
		} else if !strings.Contains(err.Error(), "not Authorized") {
			t.Errorf("%+v: %v, want CONNACK 5, not authorised", r.l, err)
		}
		if got := b.SecurityStats().Denied[r.reason]; got != before+1 {
			t.Errorf("%+v: denied[%s] %d → %d, want +1", r.l, r.reason, before, got)
		}
	}
	if !keeper.IsConnectionOpen() {
		t.Error("pi1 was kicked off by a refused connection using its client id")
	}
	mustConnect(t, url, login{id: "splitpoint-cloud-c1", user: "c1", pass: "pw-c1", will: "offload/_cloud/c1/status"})
	mustConnect(t, url, login{id: "homeassistant", user: "ops", pass: "pw-ops"})
	if st := b.SecurityStats(); st.Logins != 3 || st.Users != 4 || !st.Auth {
		t.Errorf("stats %+v: want 3 logins, 4 users", st)
	}
}

// The ACL matrix: every identity × every topic of the topic table ×
// publish and subscribe, with real clients; a denied publish is not
// delivered to anyone.
func TestACLMatrix(t *testing.T) {
	b := startAuth(t, Auth{PasswordFile: testutil.WritePasswd(t, testUsers)}, nil)
	url := "tcp://" + b.Addr()
	ids := map[string]login{
		"A": {id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1"},
		"B": {id: "splitpoint-device-pi2", user: "pi2", pass: "pw-pi2"},
		"C": {id: "splitpoint-cloud-c1", user: "c1", pass: "pw-c1"},
		"M": {id: "homeassistant", user: "ops", pass: "pw-ops"},
	}
	// topic → who may publish, who may subscribe (A, B: devices pi1, pi2;
	// C: cloud c1; M: admin ops).
	table := []struct{ topic, pub, sub string }{
		{"offload/pi1/hsv", "A", "C"},
		{"offload/pi1/capture", "A", "C"},
		{"offload/pi1/nosuchstage", "", ""},
		{"offload/pi1/result", "C", "AM"},
		{"offload/pi1/annotated", "C", "M"},
		{"offload/pi1/status", "A", "M"},
		{"offload/pi1/telemetry", "A", "M"},
		{"offload/pi1/state", "A", "M"},
		{"offload/pi1/probe", "A", ""},
		{"offload/pi1/control/split", "", "AM"},
		{"offload/pi1/control/split/set", "AM", "M"},
		{"offload/pi1/control/target_fps/set", "AM", "M"},
		{"offload/pi1/control/slowdown/set", "M", "AM"},
		{"offload/pi1/control/error", "A", "M"},
		{"offload/_cloud/c1/status", "C", "ABM"},
		{"offload/_cloud/c1/telemetry", "C", "M"},
		{"offload/_cloud/c2/status", "", "ABM"},
		{"homeassistant/status", "M", "M"},
		{"homeassistant/device/splitpoint_pi1/config", "", "M"},
		{"$SYS/broker/splitpoint/sessions", "", "M"},
		// filters
		{"#", "-", ""},
		{"offload/#", "-", ""},
		{"offload/+/+", "-", ""},
		{"offload/pi1/#", "-", ""},
		{"offload/+/hsv", "-", "C"},
		{"$share/cloudproc/offload/+/hsv", "-", "C"},
		{"offload/+/status", "-", "M"},
		{"offload/+/result", "-", "M"},
		{"offload/_cloud/+/status", "-", "ABM"},
		{"homeassistant/#", "-", "M"},
		{"$SYS/#", "-", "M"},
	}
	var mu sync.Mutex
	got := map[string]bool{}
	seen := make(chan string, 1024)
	handler := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		if p := string(pk.Payload); strings.HasPrefix(p, "matrix ") {
			mu.Lock()
			got[p] = true
			mu.Unlock()
			seen <- p
		}
	}
	if err := b.Server().Subscribe("#", 1, handler); err != nil {
		t.Fatal(err)
	}
	if err := b.Server().Subscribe("$SYS/#", 2, handler); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, who := range []string{"A", "B", "C", "M"} {
		c := mustConnect(t, url, ids[who])
		filters := map[string]byte{}
		for _, r := range table {
			filters[r.topic] = 0
		}
		tok := c.SubscribeMultiple(filters, func(paho.Client, paho.Message) {})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s subscribe: %v", who, tok.Error())
		}
		res := tok.(*paho.SubscribeToken).Result()
		for _, r := range table {
			granted := res[r.topic] != 0x80
			if granted != strings.Contains(r.sub, who) {
				t.Errorf("%s subscribe %q: granted %v, want %v", who, r.topic, granted, !granted)
			}
		}
		for _, r := range table {
			if r.pub == "-" {
				continue
			}
			p := "matrix " + who + " " + r.topic
			if strings.Contains(r.pub, who) {
				want[p] = true
			}
			c.Publish(r.topic, 0, false, p).WaitTimeout(5 * time.Second)
		}
		// A marker each identity may publish: once it arrived, every
		// earlier publish of the same connection has been handled.
		marker := map[string]string{"A": "offload/pi1/telemetry", "B": "offload/pi2/telemetry", "C": "offload/_cloud/c1/telemetry", "M": "homeassistant/status"}[who]
		c.Publish(marker, 0, false, "matrix "+who+" marker").WaitTimeout(5 * time.Second)
		want["matrix "+who+" marker"] = true
		deadline := time.After(10 * time.Second)
		for done := false; !done; {
			select {
			case p := <-seen:
				done = p == "matrix "+who+" marker"
			case <-deadline:
				t.Fatalf("%s: marker not delivered", who)
			}
		}
		if !c.IsConnectionOpen() {
			t.Errorf("%s: disconnected by a denied QoS 0 publish", who)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var extra, missing []string
	for p := range got {
		if !want[p] {
			extra = append(extra, p)
		}
	}
	for p := range want {
		if !got[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(extra)
	sort.Strings(missing)
	if len(extra) > 0 || len(missing) > 0 {
		t.Errorf("delivered but denied: %q\nallowed but not delivered: %q", extra, missing)
	}
	if st := b.SecurityStats(); st.Denied[DenyPublish] == 0 || st.Denied[DenyRead] == 0 {
		t.Errorf("denials not counted: %+v", st.Denied)
	}
}

// Under MQTT 3.1.1 a denied QoS 1 publish closes the connection (mochi);
// nothing is delivered. A retain flag where the identity may not retain is
// dropped: delivered, not kept.
func TestDeniedQoS1PublishDisconnectsAndRetainIsStripped(t *testing.T) {
	b := startAuth(t, Auth{PasswordFile: testutil.WritePasswd(t, testUsers)}, nil)
	url := "tcp://" + b.Addr()
	c := mustConnect(t, url, login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1"})
	c.Publish("offload/pi1/telemetry", 1, true, "retained?").WaitTimeout(5 * time.Second)
	c.Publish("offload/pi1/state", 1, true, "kept").WaitTimeout(5 * time.Second)
	if n := len(b.Server().Topics.Messages("offload/pi1/telemetry")); n != 0 {
		t.Errorf("telemetry retained (%d messages): a device may not retain it", n)
	}
	if n := len(b.Server().Topics.Messages("offload/pi1/state")); n != 1 {
		t.Errorf("state not retained (%d messages)", n)
	}
	if b.SecurityStats().Denied[DenyRetain] != 1 {
		t.Errorf("retain denial not counted: %+v", b.SecurityStats().Denied)
	}
	c.Publish("offload/pi1/control/split", 1, true, `{"split":1}`).WaitTimeout(3 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for c.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.IsConnectionOpen() {
		t.Error("a denied QoS 1 publish left the connection open")
	}
	if n := len(b.Server().Topics.Messages("offload/pi1/control/split")); n != 0 {
		t.Error("a forged decision was retained")
	}
}

func TestMutualTLSIdentityIsTheCN(t *testing.T) {
	ca := testutil.NewCA(t, "splitpoint-test")
	other := testutil.NewCA(t, "mallory")
	srv := ca.Server(t)
	b := startAuth(t, Auth{}, &TLSListener{Listen: "127.0.0.1:0", CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.CertFile})
	url := "ssl://" + b.TLSAddr()
	withCert := func(p testutil.Pair) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{p.TLS}, MinVersion: tls.VersionTLS12}
	}
	pi1 := ca.Client(t, "pi1")
	c := mustConnect(t, url, login{id: "splitpoint-device-pi1", tls: withCert(pi1)})
	if tok := c.Publish("offload/pi1/status", 1, true, "online"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("pi1 (by certificate) cannot publish its status")
	}
	if _, err := connectAs(url, login{id: "splitpoint-device-pi1", user: "pi2", tls: withCert(pi1)}); err == nil {
		t.Error("user name differing from the certificate's CN accepted")
	}
	if _, err := connectAs(url, login{id: "splitpoint-device-pi2", tls: withCert(pi1)}); err == nil {
		t.Error("certificate pi1 connected with pi2's client id")
	}
	if _, err := connectAs(url, login{id: "splitpoint-device-pi1", tls: withCert(other.Client(t, "pi1"))}); err == nil {
		t.Error("a certificate from another CA was accepted")
	}
	if _, err := connectAs(url, login{id: "splitpoint-device-pi1", tls: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}); err == nil {
		t.Error("no certificate and no password accepted")
	}
	if _, err := connectAs(url, login{id: "x", tls: &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}}); err == nil {
		t.Error("TLS 1.1 accepted")
	}
	// The other CA's certificate is not even sent (Go's client offers only
	// certificates the server's CA list accepts): it arrives without
	// credentials. TLS 1.1 fails the handshake (counted on the server
	// side, maybe after the client gave up).
	deadline := time.Now().Add(5 * time.Second)
	st := b.SecurityStats()
	for st.Listeners["tls"].TLSFailed < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		st = b.SecurityStats()
	}
	if st.Denied[DenyCertMismatch] != 1 || st.Denied[DenyClientID] != 1 || st.Denied[DenyNoCredentials]+st.Listeners["tls"].TLSFailed != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestReloadPasswordFile(t *testing.T) {
	path := testutil.WritePasswd(t, map[string]string{"pi1": "one", "pi2": "two"})
	b := startAuth(t, Auth{PasswordFile: path}, nil)
	url := "tcp://" + b.Addr()
	c2 := mustConnect(t, url, login{id: "splitpoint-device-pi2", user: "pi2", pass: "two"})
	if _, err := connectAs(url, login{id: "splitpoint-device-pi3", user: "pi3", pass: "three"}); err == nil {
		t.Fatal("pi3 connected before it was added")
	}
	// A broken file keeps the old one.
	if err := os.WriteFile(path, []byte("pi1:$5$nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("broken file: %v, want an error naming line 1", err)
	}
	mustConnect(t, url, login{id: "splitpoint-device-pi1", user: "pi1", pass: "one"})
	newFile := testutil.WritePasswd(t, map[string]string{"pi1": "one", "pi3": "three"})
	data, _ := os.ReadFile(newFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, url, login{id: "splitpoint-device-pi3", user: "pi3", pass: "three"})
	deadline := time.Now().Add(5 * time.Second)
	for c2.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c2.IsConnectionOpen() {
		t.Error("pi2, removed from the password file, is still connected")
	}
	if st := b.SecurityStats(); st.Reloads != 2 || st.ReloadErrors != 1 || st.Users != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestFailedLoginsAreRateLimitedPerAddress(t *testing.T) {
	b := startAuth(t, Auth{PasswordFile: testutil.WritePasswd(t, testUsers), FailedLoginBurst: 3, FailedLoginEvery: time.Hour}, nil)
	url := "tcp://" + b.Addr()
	for range 3 {
		if _, err := connectAs(url, login{id: "splitpoint-device-pi1", user: "pi1", pass: "guess"}); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	if _, err := connectAs(url, login{id: "splitpoint-device-pi1", user: "pi1", pass: "pw-pi1"}); err == nil {
		t.Error("the right password was checked after the burst of failures")
	}
	st := b.SecurityStats()
	if st.Denied[DenyBadCredentials] != 3 || st.Denied[DenyRateLimited] != 1 {
		t.Errorf("denied %+v: want 3 bad_credentials, 1 rate_limited", st.Denied)
	}
}

func TestAuthConfigRefusals(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "0.0.0.0:0"}, "refusing anonymous access"},
		{Config{Listen: "0.0.0.0:0", AllowAnonymous: true}, "refusing anonymous access"},
		{Config{Listen: "0.0.0.0:0", Auth: &Auth{PasswordFile: "x"}}, "clear text"},
		{Config{Listen: "127.0.0.1:0", Auth: &Auth{}}, "no client could log in"},
		{Config{Listen: "127.0.0.1:0", AllowAnonymous: true, Auth: &Auth{PasswordFile: "x"}}, "cannot be combined"},
	} {
		c.cfg.MaxMessageBytes = 1024
		if _, err := Start(c.cfg, quietLog()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
