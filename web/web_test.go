package web

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// site is a broker with a live view on a free loopback port.
type site struct {
	b    *broker.Broker
	srv  *mqtt.Server
	web  *Server
	base string // http://127.0.0.1:PORT
	host string // 127.0.0.1:PORT
	cl   *http.Client
}

func startSite(t *testing.T, cfg Config) *site {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", MaxMessageBytes: 1 << 20}, log)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Flush == 0 {
		cfg.Flush = 20 * time.Millisecond
	}
	w, err := Start(cfg, b.Server(), log)
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	tr := &http.Transport{}
	s := &site{b: b, srv: b.Server(), web: w, host: w.Addr(), base: "http://" + w.Addr(), cl: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		w.Close()
		b.Close()
	})
	return s
}

func (s *site) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	if err := s.srv.Publish(topic, []byte(payload), retain, 1); err != nil {
		t.Fatal(err)
	}
}

// device announces a balltrack device (7 stages) online with its state.
func (s *site) device(t *testing.T, id string) {
	t.Helper()
	s.publish(t, wire.StatusTopic(id), wire.Online, true)
	st, _ := json.Marshal(wire.DeviceState{Device: id, Split: 3, Mode: wire.ModeAuto, TargetFPS: 15, Pipeline: "balltrack", Stages: 7, Run: "r1"})
	s.publish(t, wire.StateTopic(id), string(st), true)
	waitFor(t, "the device in the view", func() bool { n, ok := s.web.model.stages(id); return ok && n == 7 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *site) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := s.cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func (s *site) get(t *testing.T, path string, mod func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.base+path, nil)
	if mod != nil {
		mod(req)
	}
	return s.do(t, req)
}

// session loads the page and returns its CSRF cookie.
func (s *site) session(t *testing.T, mod func(*http.Request)) *http.Cookie {
	t.Helper()
	res, body := s.get(t, "/", mod)
	if res.StatusCode != 200 || !strings.Contains(body, `name="csrf-token"`) {
		t.Fatalf("GET /: %d %s", res.StatusCode, body)
	}
	for _, c := range res.Cookies() {
		if strings.HasPrefix(c.Name, "splitpoint_csrf_") {
			if c.SameSite != http.SameSiteStrictMode || !c.HttpOnly || !strings.Contains(body, c.Value) {
				t.Fatalf("cookie %+v: want SameSite=Strict, HttpOnly, its token in the page", c)
			}
			return c
		}
	}
	t.Fatal("no CSRF cookie")
	return nil
}

// control posts a command as the page does (same origin, JSON, token).
func (s *site) control(t *testing.T, c *http.Cookie, body string, mod func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.base+"/api/control", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", s.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if c != nil {
		req.AddCookie(c)
		req.Header.Set("X-CSRF-Token", c.Value)
	}
	if mod != nil {
		mod(req)
	}
	return s.do(t, req)
}

// commands records the …/set commands published.
type commands struct {
	mu  sync.Mutex
	got []string // topic + " " + payload
}

func (s *site) commands(t *testing.T) *commands {
	t.Helper()
	c := &commands{}
	for i, f := range []string{wire.SplitSetFilter, wire.TargetSetFilter} {
		if err := s.srv.Subscribe(f, 900+i, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			c.mu.Lock()
			c.got = append(c.got, pk.TopicName+" "+string(pk.Payload))
			c.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *commands) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

func TestControlPublishesTheSetCommand(t *testing.T) {
	s := startSite(t, Config{})
	s.device(t, "pi1")
	cmds := s.commands(t)
	c := s.session(t, nil)
	for _, tc := range []struct {
		body, topic string
		check       func(payload []byte) error
	}{
		{`{"device":"pi1","split":2}`, wire.ControlSplitSetTopic("pi1"), func(p []byte) error {
			cmd, err := wire.ParseSplitCommand(p, 6)
			if err == nil && (cmd.Split != 2 || cmd.Mode != wire.ModeManual) {
				err = fmt.Errorf("parsed %+v", cmd)
			}
			return err
		}},
		{`{"device":"pi1","mode":"auto"}`, wire.ControlSplitSetTopic("pi1"), func(p []byte) error {
			cmd, err := wire.ParseSplitCommand(p, 6)
			if err == nil && (cmd.Split != 0 || cmd.Mode != wire.ModeAuto) {
				err = fmt.Errorf("parsed %+v", cmd)
			}
			return err
		}},
		{`{"device":"pi1","mode":"manual"}`, wire.ControlSplitSetTopic("pi1"), func(p []byte) error {
			cmd, err := wire.ParseSplitCommand(p, 6)
			if err == nil && (cmd.Split != 0 || cmd.Mode != wire.ModeManual) {
				err = fmt.Errorf("parsed %+v", cmd)
			}
			return err
		}},
		{`{"device":"pi1","target_fps":12.5}`, wire.ControlTargetSetTopic("pi1"), func(p []byte) error {
			cmd, err := wire.ParseTargetCommand(p)
			if err == nil && cmd.FPS != 12.5 {
				err = fmt.Errorf("parsed %+v", cmd)
			}
			return err
		}},
	} {
		before := len(cmds.list())
		res, body := s.control(t, c, tc.body, nil)
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %d %s", tc.body, res.StatusCode, body)
		}
		var out ControlResponse
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		got := cmds.list()
		if len(got) != before+1 || got[before] != tc.topic+" "+out.Payload || out.Topic != tc.topic {
			t.Fatalf("%s: published %q, answered %+v; want one command on %s", tc.body, got[before:], out, tc.topic)
		}
		if !strings.Contains(out.Payload, `"cmd_id":"`+out.CmdID+`"`) || !strings.HasPrefix(out.CmdID, "web-") {
			t.Errorf("%s: payload %s lacks cmd_id %s", tc.body, out.Payload, out.CmdID)
		}
		if err := tc.check([]byte(out.Payload)); err != nil {
			t.Errorf("%s: payload %s: %v", tc.body, out.Payload, err)
		}
	}
	// Invalid commands are answered 400/404 and publish nothing.
	n := len(cmds.list())
	for body, want := range map[string]int{
		`{"device":"pi1","split":7}`:                 400, // balltrack: 1..6
		`{"device":"pi1","split":0}`:                 400,
		`{"device":"pi1","split":2.5}`:               400,
		`{"device":"pi1","mode":"fast"}`:             400,
		`{"device":"pi1","target_fps":0}`:            400,
		`{"device":"pi1","target_fps":5000}`:         400,
		`{"device":"pi1","split":2,"target_fps":20}`: 400,
		`{"device":"pi1"}`:                           400,
		`{"device":"pi1","split":2,"x":1}`:           400,
		`{"device":"+","split":2}`:                   400,
		`{"device":"pi9","split":2}`:                 404,
		`not json`:                                   400,
	} {
		if res, b := s.control(t, c, body, nil); res.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", body, res.StatusCode, b, want)
		}
	}
	if got := cmds.list(); len(got) != n {
		t.Errorf("refused requests published %q", got[n:])
	}
}

// Requests naming a foreign Host (DNS rebinding) and cross-site control
// requests are refused with 403; controls need POST, JSON and the token.
func TestHostAndOriginChecks(t *testing.T) {
	s := startSite(t, Config{AllowedHosts: []string{"gateway.local"}})
	s.device(t, "pi1")
	cmds := s.commands(t)
	c := s.session(t, nil)
	host := func(h string) func(*http.Request) { return func(r *http.Request) { r.Host = h } }
	for _, h := range []string{"evil.example", "evil.example:" + strings.Split(s.host, ":")[1], "127.0.0.1.evil.example", "gateway.local.evil", "127.0.0.2"} {
		for _, path := range []string{"/", "/events", "/api/state", "/frame/pi1"} {
			if res, _ := s.get(t, path, host(h)); res.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s with Host %q: %d, want 403", path, h, res.StatusCode)
			}
		}
		if res, _ := s.control(t, c, `{"device":"pi1","split":2}`, host(h)); res.StatusCode != http.StatusForbidden {
			t.Errorf("POST with Host %q: %d, want 403", h, res.StatusCode)
		}
	}
	for _, h := range []string{"localhost:1", "LOCALHOST", "[::1]:80", "gateway.local", "Gateway.Local.:8080", s.host} {
		if res, _ := s.get(t, "/api/state", host(h)); res.StatusCode != http.StatusOK {
			t.Errorf("GET with Host %q: %d, want 200", h, res.StatusCode)
		}
	}
	split2 := `{"device":"pi1","split":2}`
	for name, tc := range map[string]struct {
		mod  func(*http.Request)
		want int
	}{
		"foreign Origin":           {func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }, 403},
		"Origin of another port":   {func(r *http.Request) { r.Header.Set("Origin", "http://127.0.0.1:1") }, 403},
		"https Origin":             {func(r *http.Request) { r.Header.Set("Origin", "https://"+s.host) }, 403},
		"null Origin":              {func(r *http.Request) { r.Header.Set("Origin", "null") }, 403},
		"no Origin":                {func(r *http.Request) { r.Header.Del("Origin") }, 403},
		"cross-site fetch":         {func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }, 403},
		"no token":                 {func(r *http.Request) { r.Header.Del("X-CSRF-Token") }, 403},
		"wrong token":              {func(r *http.Request) { r.Header.Set("X-CSRF-Token", s.web.newToken()) }, 403},
		"no cookie":                {func(r *http.Request) { r.Header.Del("Cookie") }, 403},
		"form post":                {func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, 415},
		"text/plain (simple CORS)": {func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, 415},
	} {
		if res, body := s.control(t, c, split2, tc.mod); res.StatusCode != tc.want {
			t.Errorf("%s: %d %s, want %d", name, res.StatusCode, body, tc.want)
		}
	}
	// A token this server did not sign, in both cookie and header.
	forged := &http.Cookie{Name: c.Name, Value: "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"}
	if res, _ := s.control(t, forged, split2, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("forged token: %d, want 403", res.StatusCode)
	}
	if res, _ := s.get(t, "/api/control", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/control: %d, want 405", res.StatusCode)
	}
	if got := cmds.list(); len(got) != 0 {
		t.Errorf("refused requests published %q", got)
	}
	if res, body := s.control(t, c, split2, nil); res.StatusCode != http.StatusAccepted {
		t.Errorf("the page's own request: %d %s", res.StatusCode, body)
	}
	res, _ := s.get(t, "/", nil)
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("security headers: %v", res.Header)
	}
}

func writePasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// With auth on only admin identities may use the page: HTTP Basic against
// the password file, failed logins limited per address.
func TestBasicAuthAdminsOnly(t *testing.T) {
	pw := writePasswd(t, map[string]string{"ops": "ops-secret", "pi1": "pi1-secret"})
	s := startSite(t, Config{Auth: &Auth{PasswordFile: pw, Admin: []string{"ops"}}})
	as := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	for _, path := range []string{"/", "/events", "/api/state", "/app.js"} {
		res, _ := s.get(t, path, nil)
		if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET %s without credentials: %d %v, want 401 with a Basic challenge", path, res.StatusCode, res.Header)
		}
	}
	if res, body := s.get(t, "/api/state", as("ops", "ops-secret")); res.StatusCode != http.StatusOK {
		t.Errorf("admin: %d %s", res.StatusCode, body)
	}
	if res, body := s.get(t, "/", as("ops", "ops-secret")); res.StatusCode != http.StatusOK || !strings.Contains(body, ">ops<") {
		t.Errorf("admin's page: %d, want 200 naming the user", res.StatusCode)
	}
	if res, body := s.get(t, "/api/state", as("pi1", "pi1-secret")); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "not an admin") {
		t.Errorf("device user: %d %s, want 403", res.StatusCode, body)
	}
	if res, _ := s.get(t, "/api/state", as("ops", "wrong")); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", res.StatusCode)
	}
	if res, _ := s.get(t, "/api/state", as("nobody", "x")); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", res.StatusCode)
	}
	// The Host check comes first: a rebinding page cannot even try passwords.
	if res, _ := s.get(t, "/api/state", func(r *http.Request) { r.Host = "evil.example"; r.SetBasicAuth("ops", "ops-secret") }); res.StatusCode != http.StatusForbidden {
		t.Errorf("foreign host with credentials: %d, want 403", res.StatusCode)
	}
	// Two failed logins counted above; the limiter allows 10, then one per 2 s.
	limited := false
	for i := 0; i < 12 && !limited; i++ {
		res, _ := s.get(t, "/api/state", as("ops", fmt.Sprint("guess", i)))
		limited = res.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Error("no 429 after a dozen wrong passwords")
	}
	// A cached good login still works; a new one waits like a wrong one.
	if res, _ := s.get(t, "/api/state", as("ops", "ops-secret")); res.StatusCode != http.StatusOK {
		t.Errorf("admin after the lockout (cached): %d", res.StatusCode)
	}

	// The password file is re-read when it changes: a removed admin is out.
	s.web.auth.mu.Lock()
	s.web.auth.checked = time.Time{}
	s.web.auth.mu.Unlock()
	if err := os.WriteFile(pw, []byte{}, 0o600); err != nil {
		t.Fatal(err)
	}
	s.web.auth.mu.Lock()
	s.web.auth.stamp = fileStamp{} // as if the change were seen
	s.web.auth.mu.Unlock()
	if res, _ := s.get(t, "/api/state", as("ops", "ops-secret")); res.StatusCode == http.StatusOK {
		t.Error("admin removed from the password file still admitted")
	}
}

func TestSSEDeliversUpdates(t *testing.T) {
	s := startSite(t, Config{})
	s.device(t, "pi1")
	req, _ := http.NewRequest("GET", s.base+"/events", nil)
	res, err := s.cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events := make(chan [2]string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				events <- [2]string{name, line[6:]}
			}
		}
	}()
	next := func() (string, View) {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			var v View
			if err := json.Unmarshal([]byte(ev[1]), &v); err != nil {
				t.Fatal(err)
			}
			return ev[0], v
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return "", View{}
	}
	name, v := next()
	if name != "snapshot" || !v.Reset || len(v.Devices) != 1 || v.Devices[0].ID != "pi1" || v.Devices[0].Split != 3 || v.Devices[0].Status != "online" {
		t.Fatalf("first event %s %+v", name, v)
	}
	tele := `{"device":"pi1","pipeline":"balltrack","fps":24.5,"results_per_s":24,"target_fps":15,"split":3,"mode":"auto",` +
		`"stages":[{"name":"capture"}],"latency_ms":{"p50":6.1,"p99":9.8},"window":{"in_flight":1,"size":8}}`
	s.publish(t, wire.TelemetryTopic("pi1"), tele, false)
	dec := `{"split":2,"mode":"manual","target_fps":15,"reason":"manual: split 2 set by command","predicted_fps":null,"gateway_run":"g","epoch":5,"ts":"2026-01-01T00:00:00Z"}`
	s.publish(t, wire.ControlSplitTopic("pi1"), dec, true)
	s.publish(t, wire.AnnotatedTopic("pi1"), "\xFF\xD8\xFF\xE0jpeg", false)
	var got Device
	for got.Decision == nil || got.FPS == 0 || got.Frame == 0 {
		name, v := next()
		if name != "update" {
			t.Fatalf("event %q", name)
		}
		for _, d := range v.Devices {
			if d.ID == "pi1" {
				if len(d.History) > 0 {
					got.History = append(got.History, d.History...)
				}
				h := got.History
				got = d
				got.History = h
			}
		}
	}
	if got.FPS != 24.5 || *got.LatencyP50 != 6.1 || *got.LatencyP99 != 9.8 || got.Decision.Reason != "manual: split 2 set by command" ||
		len(got.History) != 1 || got.History[0].FPS != 24.5 || got.History[0].Split != 3 {
		t.Errorf("update %+v", got)
	}
	res2, body := s.get(t, "/frame/pi1", nil)
	if res2.StatusCode != 200 || res2.Header.Get("Content-Type") != "image/jpeg" || body != "\xFF\xD8\xFF\xE0jpeg" {
		t.Errorf("frame: %d %v %q", res2.StatusCode, res2.Header, body)
	}
}

// A page that does not read is dropped; the broadcast never waits.
func TestSlowClientIsDropped(t *testing.T) {
	h := newHub(2, 3)
	slow, fast := h.add(), h.add()
	if h.add() != nil {
		t.Fatal("a third client past the limit of 2")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 10; i++ {
			h.broadcast([]byte("x"))
			<-fast.ch // the fast page reads
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("broadcast blocked on a slow client")
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("the slow client was not dropped")
	}
	select {
	case <-fast.gone:
		t.Fatal("the fast client was dropped")
	default:
	}
	if h.len() != 1 || h.dropped.Load() != 1 {
		t.Errorf("clients %d, dropped %d", h.len(), h.dropped.Load())
	}
}

func TestModelIsBounded(t *testing.T) {
	m := newModel(Limits{MaxDevices: 3, History: 5, Expiry: time.Minute, MaxClouds: 2, MaxFrameBytes: 100, MaxFramesBytes: 250})
	now := time.Unix(1000, 0)
	state := func(id string) string {
		b, _ := json.Marshal(wire.DeviceState{Device: id, Split: 2, Mode: wire.ModeAuto, Pipeline: "balltrack", Stages: 7})
		return string(b)
	}
	for _, id := range []string{"a", "b", "c"} {
		m.apply(wire.StatusTopic(id), []byte("online"), now)
		m.apply(wire.StateTopic(id), []byte(state(id)), now)
	}
	m.apply(wire.StateTopic("d"), []byte(state("d")), now)
	if len(m.devs) != 3 || m.devs["d"] != nil || m.ignored != 1 {
		t.Fatalf("a 4th device with every device online: %d devices, ignored %d", len(m.devs), m.ignored)
	}
	// b goes offline: the 4th device takes its place.
	m.apply(wire.StatusTopic("b"), []byte("offline"), now.Add(time.Second))
	m.apply(wire.StateTopic("d"), []byte(state("d")), now.Add(2*time.Second))
	if len(m.devs) != 3 || m.devs["d"] == nil || m.devs["b"] != nil {
		t.Fatalf("devices %v", keys(m.devs))
	}
	// History: a ring of 5.
	for i := 0; i < 12; i++ {
		m.apply(wire.TelemetryTopic("a"), fmt.Appendf(nil, `{"fps":%d,"split":2,"target_fps":15}`, i), now.Add(time.Duration(i)*time.Millisecond))
	}
	h := m.snapshot(now).Devices[0].History
	if len(h) != 5 || h[0].FPS != 7 || h[4].FPS != 11 {
		t.Errorf("history %v, want the last 5 points", h)
	}
	for i := 1; i < len(h); i++ {
		if h[i].T <= h[i-1].T {
			t.Errorf("history times not increasing: %v", h)
		}
	}
	// Frames: one over 100 bytes is ignored; all together stay ≤ 250.
	jpeg := func(n int) []byte { return append([]byte{0xFF, 0xD8}, make([]byte, n-2)...) }
	m.apply(wire.AnnotatedTopic("a"), jpeg(101), now)
	if b, _ := m.frame("a"); b != nil {
		t.Error("an oversized frame was kept")
	}
	for i, id := range []string{"a", "c", "d", "a"} {
		m.apply(wire.AnnotatedTopic(id), jpeg(100), now.Add(time.Duration(i)*time.Second))
		if m.frameBytes > 250 {
			t.Fatalf("frames hold %d bytes", m.frameBytes)
		}
	}
	if b, _ := m.frame("a"); b == nil {
		t.Error("the newest frame was dropped")
	}
	if b, _ := m.frame("c"); b != nil {
		t.Error("the oldest frame was kept past the total bound")
	}
	m.apply(wire.AnnotatedTopic("zz"), jpeg(10), now) // frames alone make no device
	if m.devs["zz"] != nil {
		t.Error("a frame made a device")
	}
	// Clouds: at most 2.
	for _, id := range []string{"c1", "c2", "c3"} {
		m.apply(wire.CloudStatusTopic(id), []byte("online"), now)
	}
	if len(m.clouds) != 2 {
		t.Errorf("%d clouds", len(m.clouds))
	}
	// Devices not heard from for Expiry are forgotten, and the update
	// says so; a and c keep reporting.
	_, _ = m.update(now)
	m.apply(wire.StatusTopic("d"), []byte("offline"), now.Add(3*time.Second))
	later := now.Add(3*time.Second + time.Minute + time.Millisecond)
	m.apply(wire.TelemetryTopic("a"), []byte(`{"fps":1,"split":2}`), later.Add(-time.Second))
	m.apply(wire.StatusTopic("c"), []byte("online"), later.Add(-time.Second))
	m.sweep(later)
	v, ok := m.update(now)
	if !ok || len(v.Removed) != 1 || v.Removed[0] != "d" || m.devs["d"] != nil || m.devs["a"] == nil || m.devs["c"] == nil {
		t.Errorf("after the sweep: update %+v, devices %v", v, keys(m.devs))
	}
	// Malformed messages change nothing.
	before := len(m.devs)
	for _, msg := range [][2]string{{wire.StateTopic("e"), "{"}, {wire.TelemetryTopic("f"), `{"split":0}`}, {"offload/_bridge/status", "online"},
		{wire.StatusTopic("g"), "maybe"}, {wire.ControlSplitTopic("h"), `{"split":0}`}, {"offload/BAD/state", state("x")}} {
		m.apply(msg[0], []byte(msg[1]), now)
	}
	if len(m.devs) != before {
		t.Errorf("malformed messages made devices: %v", keys(m.devs))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestCheckAccess(t *testing.T) {
	for _, tc := range []struct {
		listen                           string
		auth, https, anonymous, insecure bool
		want                             string // "" : allowed
	}{
		{"", false, false, false, false, ""},
		{"127.0.0.1:8080", false, false, false, false, ""},
		{"localhost:0", false, false, false, false, ""},
		{"[::1]:8080", true, false, false, false, ""},
		{"0.0.0.0:8080", false, false, false, false, "without [auth] anyone"},
		{":8080", false, false, false, false, "without [auth] anyone"},
		{"0.0.0.0:8080", false, false, true, true, ""},
		{"0.0.0.0:8080", true, false, false, false, "in clear text"},
		{"0.0.0.0:8080", true, true, false, false, ""},
		{"0.0.0.0:8080", true, false, false, true, ""},
		{"8080", false, false, false, false, "not host:port"},
	} {
		err := CheckAccess(tc.listen, tc.auth, tc.https, tc.anonymous, tc.insecure)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v", tc, err)
		}
	}
	for h, ok := range map[string]bool{"gateway.local": true, "192.168.1.10": true, "fe80::1": true, "*.local": false,
		"http://x": false, "x:80": false, "": false, "a..b": false} {
		if err := CheckHostName(h); (err == nil) != ok {
			t.Errorf("CheckHostName(%q): %v", h, err)
		}
	}
}

// Off ("" or an address in use) is not an error.
func TestOff(t *testing.T) {
	s, err := Start(Config{}, nil, nil)
	if err != nil || s.Addr() != "" || s.URL() != "" {
		t.Fatalf("off: %v %q", err, s.Addr())
	}
	s.Close()
	a := startSite(t, Config{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := Start(Config{Listen: a.host}, a.srv, log)
	if err != nil || b.Addr() != "" {
		t.Fatalf("address in use: %v %q", err, b.Addr())
	}
	b.Close()
	if _, err := Start(Config{Listen: "0.0.0.0:0"}, a.srv, log); err == nil || !strings.HasPrefix(err.Error(), "http_listen: ") {
		t.Errorf("non-loopback without auth: %v", err)
	}
}

// pki writes a CA, a server certificate for 127.0.0.1 and client
// certificates with the given CNs; it returns the CA's pool and file, the
// server's files and the clients' certificates.
func pki(t *testing.T, cns ...string) (*x509.CertPool, string, TLS, map[string]tls.Certificate) {
	t.Helper()
	dir := t.TempDir()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, pk *ecdsa.PrivateKey, signer *ecdsa.PrivateKey) *x509.Certificate {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &pk.PublicKey, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pemFile := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey := key()
	ca := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, caKey, caKey)
	caFile := pemFile("ca.crt", "CERTIFICATE", ca.Raw)
	srvKey := key()
	srv := issue(&x509.Certificate{Subject: pkix.Name{CommonName: "gateway"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, srvKey, caKey)
	der, _ := x509.MarshalECPrivateKey(srvKey)
	files := TLS{CertFile: pemFile("server.crt", "CERTIFICATE", srv.Raw), KeyFile: pemFile("server.key", "EC PRIVATE KEY", der)}
	clients := map[string]tls.Certificate{}
	for _, cn := range cns {
		k := key()
		c := issue(&x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			KeyUsage: x509.KeyUsageDigitalSignature}, ca, k, caKey)
		clients[cn] = tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, caFile, files, clients
}

// Over HTTPS an admin's client certificate identifies it (no password);
// another identity's is refused; the cookie is Secure and the Origin must
// be https.
func TestHTTPSWithClientCertificates(t *testing.T) {
	pool, caFile, files, certs := pki(t, "ops", "pi1")
	pw := writePasswd(t, map[string]string{"ops": "ops-secret"})
	s := startSite(t, Config{TLS: &files, Auth: &Auth{PasswordFile: pw, Admin: []string{"ops"}, ClientCAFile: caFile}})
	if !strings.HasPrefix(s.web.URL(), "https://") {
		t.Fatalf("URL %s", s.web.URL())
	}
	s.base = "https://" + s.host
	s.device(t, "pi1")
	client := func(cert *tls.Certificate) *http.Client {
		c := &tls.Config{RootCAs: pool}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		tr := &http.Transport{TLSClientConfig: c}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	ops, pi1 := certs["ops"], certs["pi1"]
	s.cl = client(&ops)
	c := s.session(t, nil)
	if !c.Secure {
		t.Error("the CSRF cookie is not Secure over HTTPS")
	}
	if res, body := s.control(t, c, `{"device":"pi1","split":2}`, nil); res.StatusCode != http.StatusAccepted {
		t.Errorf("admin certificate: %d %s", res.StatusCode, body)
	}
	if res, _ := s.control(t, c, `{"device":"pi1","split":2}`, func(r *http.Request) { r.Header.Set("Origin", "http://"+s.host) }); res.StatusCode != http.StatusForbidden {
		t.Errorf("http Origin on https: %d, want 403", res.StatusCode)
	}
	s.cl = client(&pi1)
	if res, body := s.get(t, "/api/state", nil); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "not an admin") {
		t.Errorf("device certificate: %d %s, want 403", res.StatusCode, body)
	}
	s.cl = client(nil)
	if res, _ := s.get(t, "/api/state", nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("no certificate, no password: %d, want 401", res.StatusCode)
	}
	if res, _ := s.get(t, "/api/state", func(r *http.Request) { r.SetBasicAuth("ops", "ops-secret") }); res.StatusCode != http.StatusOK {
		t.Errorf("password over HTTPS: %d, want 200", res.StatusCode)
	}
}
