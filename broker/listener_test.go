package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/splitpoint/splitpoint/internal/testutil"
)

// guardAuthHook authenticates every client the way the broker's auth hook
// must: by marking its GuardedConn authenticated. It records what the
// connection tells about the client.
type guardAuthHook struct {
	mqtt.HookBase
	call bool // call Authenticated (false: a misbehaving hook)

	mu     sync.Mutex
	seen   map[string]guardSeen
	notOur int // connections that were not a GuardedConn
}

type guardSeen struct {
	ip       string
	tls      bool
	state    tls.ConnectionState
	verified bool
}

func (h *guardAuthHook) ID() string { return "guard-test-auth" }

func (h *guardAuthHook) Provides(b byte) bool { return b == mqtt.OnConnectAuthenticate }

func (h *guardAuthHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	gc, ok := cl.Net.Conn.(GuardedConn)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok {
		h.notOur++
		return false
	}
	if h.call {
		gc.Authenticated()
	}
	st, isTLS := gc.TLSState()
	h.seen[cl.ID] = guardSeen{ip: gc.RemoteIP(), tls: isTLS, state: st, verified: len(st.VerifiedChains) > 0}
	return true
}

func (h *guardAuthHook) get(id string) (guardSeen, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.seen[id]
	return s, ok
}

// guardServer runs a minimal mochi server with one guarded listener per
// config; the auth hook comes first (mochi stops at the first hook that
// allows), mochi's AllowHook after it for the ACL checks.
func guardServer(t *testing.T, callAuthenticated bool, cfgs ...GuardConfig) (*mqtt.Server, *guardAuthHook, []*Guard) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	caps := mqtt.NewDefaultServerCapabilities() // MaximumPacketSize 0: mochi itself allocates whatever is declared
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: log})
	hook := &guardAuthHook{call: callAuthenticated, seen: map[string]guardSeen{}}
	if err := srv.AddHook(hook, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	var gs []*Guard
	for _, cfg := range cfgs {
		if cfg.Address == "" {
			cfg.Address = "127.0.0.1:0"
		}
		g := NewGuard(cfg, log)
		if err := srv.AddListener(g); err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv, hook, gs
}

func guardWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// guardPaho connects a paho client (keepalive 30 s) through a guard.
func guardPaho(t *testing.T, g *Guard, id string, tc *tls.Config) paho.Client {
	t.Helper()
	scheme := "tcp://"
	if tc != nil {
		scheme = "tls://"
	}
	opts := paho.NewClientOptions().AddBroker(scheme + g.Address()).SetClientID(id).SetCleanSession(true).
		SetKeepAlive(30 * time.Second).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetTLSConfig(tc)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// guardRoundTrip subscribes and publishes a QoS 1 message and waits for it.
func guardRoundTrip(t *testing.T, c paho.Client, topic string) {
	t.Helper()
	got := make(chan []byte, 1)
	if tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		select {
		case got <- m.Payload():
		default:
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	want := []byte("guarded " + topic)
	if tok := c.Publish(topic, 1, false, want); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case p := <-got:
		if !bytes.Equal(p, want) {
			t.Fatalf("received %q, want %q", p, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("QoS 1 message not received")
	}
	if tok := c.Unsubscribe(topic); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("unsubscribe: %v", tok.Error())
	}
}

// guardDial opens a raw TCP connection to a guard, from a given loopback
// address if from is not empty.
func guardDial(t *testing.T, g *Guard, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", g.Address())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// guardExpectClosed reads until the server closes c; the server has
// `within` (generous) to do it.
func guardExpectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection from %s still open after %v", c.LocalAddr(), within)
		}
		return // EOF or reset
	}
}

func guardWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// guardConnect is an MQTT 3.1.1 CONNECT (clean session, keepalive 30 s).
func guardConnect(id string) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, byte(len(id))}
	body = append(body, id...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

// guardSubscribe is an MQTT 3.1.1 SUBSCRIBE (packet id 1, QoS 0).
func guardSubscribe(filter string) []byte {
	body := []byte{0, 1, 0, byte(len(filter))}
	body = append(body, filter...)
	body = append(body, 0)
	return append([]byte{0x82, byte(len(body))}, body...)
}

// guardPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate.
type guardPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newGuardPKI(t *testing.T) guardPKI {
	t.Helper()
	ca := testutil.NewCA(t, "guard-test-ca")
	return guardPKI{pool: ca.Pool(), server: ca.Server(t).TLS, client: ca.Client(t, "guard-client").TLS}
}

func (p guardPKI) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.server},
		ClientCAs: p.pool, ClientAuth: tls.VerifyClientCertIfGiven,
	}
}

func (p guardPKI) clientConfig(withCert bool) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool, ServerName: "127.0.0.1"}
	if withCert {
		c.Certificates = []tls.Certificate{p.client}
	}
	return c
}

func TestGuardPlainClientRoundTrip(t *testing.T) {
	_, hook, gs := guardServer(t, true, GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: 10 * time.Second})
	g := gs[0]
	c := guardPaho(t, g, "plain", nil)
	guardRoundTrip(t, c, "guard/plain")

	seen, ok := hook.get("plain")
	if !ok || seen.tls || seen.ip != "127.0.0.1" {
		t.Fatalf("hook saw %+v (found %v), want a plain connection from 127.0.0.1", seen, ok)
	}
	st := g.Stats()
	if st.Accepted != 1 || st.Open != 1 || st.PreAuthMaxBytes <= 0 || st.PreAuthMaxBytes > 4096 {
		t.Fatalf("stats %+v", st)
	}
	if hook.notOur != 0 {
		t.Fatalf("%d connections were not a GuardedConn", hook.notOur)
	}
}

func TestGuardTLSClientRoundTripAndPeerCertificate(t *testing.T) {
	pki := newGuardPKI(t)
	_, hook, gs := guardServer(t, true, GuardConfig{ID: "tls", TLS: pki.serverConfig(), MaxConnectBytes: 4096, ConnectTimeout: 10 * time.Second})
	g := gs[0]

	withCert := guardPaho(t, g, "with-cert", pki.clientConfig(true))
	guardRoundTrip(t, withCert, "guard/tls/cert")
	seen, ok := hook.get("with-cert")
	if !ok || !seen.tls || !seen.verified || len(seen.state.PeerCertificates) == 0 ||
		seen.state.PeerCertificates[0].Subject.CommonName != "guard-client" || seen.state.Version < tls.VersionTLS12 {
		t.Fatalf("hook saw %+v (found %v), want a verified guard-client certificate", seen, ok)
	}

	noCert := guardPaho(t, g, "no-cert", pki.clientConfig(false))
	guardRoundTrip(t, noCert, "guard/tls/nocert")
	seen, ok = hook.get("no-cert")
	if !ok || !seen.tls || seen.verified || len(seen.state.PeerCertificates) != 0 {
		t.Fatalf("hook saw %+v (found %v), want TLS without a peer certificate", seen, ok)
	}
	if st := g.Stats(); st.Accepted != 2 || st.Open != 2 || st.TLSFailed != 0 || st.PreAuthMaxBytes <= 0 || st.PreAuthMaxBytes > 4096 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGuardOversizedConnectIsRefusedBeforeMochi(t *testing.T) {
	const maxConnect, sockets = 4096, 50
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tcp", MaxConnectBytes: maxConnect, ConnectTimeout: time.Minute})
	g := gs[0]

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Each declares an 8 MiB CONNECT (remaining length 0x80 0x80 0x80 0x04)
	// and sends nothing more.
	conns := make([]net.Conn, sockets)
	for i := range conns {
		conns[i] = guardDial(t, g, "")
		guardWrite(t, conns[i], []byte{0x10, 0x80, 0x80, 0x80, 0x04})
	}
	for _, c := range conns {
		guardExpectClosed(t, c, 10*time.Second) // ConnectTimeout is a minute: this is the size check
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	guardWait(t, "all closed", func() bool { return g.Stats().Open == 0 })
	st := g.Stats()
	if st.Oversized != sockets || st.Accepted != sockets || st.TimedOut != 0 || st.NotConnect != 0 {
		t.Fatalf("stats %+v, want %d oversized", st, sockets)
	}
	if st.PreAuthMaxBytes > maxConnect {
		t.Fatalf("PreAuthMaxBytes %d > MaxConnectBytes %d", st.PreAuthMaxBytes, maxConnect)
	}
	// A sanity bound; the counters are the mechanism. mochi alone allocates
	// the declared 8 MiB per socket.
	const bound = sockets << 20
	if d := int64(after.HeapInuse) - int64(before.HeapInuse); d > bound {
		t.Fatalf("heap in use grew by %d bytes", d)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > bound {
		t.Fatalf("allocated %d bytes for %d sockets", d, sockets)
	}
}

func TestGuardSilentConnectionsTimeOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	pki := newGuardPKI(t)
	srv, _, gs := guardServer(t, true,
		GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: timeout},
		GuardConfig{ID: "tls", TLS: pki.serverConfig(), MaxConnectBytes: 4096, ConnectTimeout: timeout})
	plain, secure := gs[0], gs[1]

	start := time.Now()
	silent := []net.Conn{guardDial(t, plain, ""), guardDial(t, plain, ""), guardDial(t, plain, "")}
	partialHeader := guardDial(t, plain, "")
	guardWrite(t, partialHeader, []byte{0x10, 0x80}) // remaining length unfinished

	// A complete header and part of the body: this one reaches mochi,
	// whose read of the body runs into the guard's deadline.
	received := atomic.LoadInt64(&srv.Info.BytesReceived)
	partialBody := guardDial(t, plain, "")
	guardWrite(t, partialBody, guardConnect("slow")[:6])
	guardWait(t, "mochi to read the header", func() bool { return atomic.LoadInt64(&srv.Info.BytesReceived) >= received+2 })

	tlsSilent := guardDial(t, secure, "")
	tlsHalf, err := tls.Dial("tcp", secure.Address(), pki.clientConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsHalf.Close() // TLS done, no CONNECT

	for _, c := range append(silent, partialHeader, partialBody, tlsSilent, tlsHalf) {
		guardExpectClosed(t, c, 10*time.Second)
	}
	if e := time.Since(start); e < timeout {
		t.Fatalf("closed after %v, before ConnectTimeout %v", e, timeout)
	}
	guardWait(t, "all closed", func() bool { return plain.Stats().Open == 0 && secure.Stats().Open == 0 })
	if st := plain.Stats(); st.TimedOut != 5 || st.Accepted != 5 || st.NotConnect != 0 || st.PreAuthMaxBytes != 6 {
		t.Fatalf("plain stats %+v, want 5 timed out and 6 bytes delivered to mochi", st)
	}
	if st := secure.Stats(); st.TimedOut != 2 || st.Accepted != 2 || st.TLSFailed != 0 {
		t.Fatalf("TLS stats %+v, want 2 timed out", st)
	}
}

func TestGuardTLSHandshakeFailureIsCounted(t *testing.T) {
	pki := newGuardPKI(t)
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tls", TLS: pki.serverConfig(), ConnectTimeout: time.Minute})
	g := gs[0]
	c := guardDial(t, g, "")
	guardWrite(t, c, guardConnect("plain-on-tls")) // MQTT where a ClientHello belongs
	guardExpectClosed(t, c, 10*time.Second)
	guardWait(t, "closed", func() bool { return g.Stats().Open == 0 })
	if st := g.Stats(); st.TLSFailed != 1 || st.TimedOut != 0 || st.NotConnect != 0 {
		t.Fatalf("stats %+v, want 1 TLS failure", st)
	}
}

func TestGuardFirstPacketMustBeConnect(t *testing.T) {
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: time.Minute})
	g := gs[0]
	bad := [][]byte{
		{0x30, 0x05, 0, 1, 't', 'x', 'y'},    // PUBLISH
		{0x12, 0x02, 0, 0},                   // CONNECT type with flags
		{0xc0, 0x00},                         // PINGREQ
		{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}, // remaining length of 5 bytes
	}
	for _, b := range bad {
		c := guardDial(t, g, "")
		guardWrite(t, c, b)
		guardExpectClosed(t, c, 10*time.Second)
	}
	guardWait(t, "all closed", func() bool { return g.Stats().Open == 0 })
	if st := g.Stats(); st.NotConnect != int64(len(bad)) || st.Oversized != 0 || st.TimedOut != 0 || st.PreAuthMaxBytes != 0 {
		t.Fatalf("stats %+v, want %d not CONNECT", st, len(bad))
	}
}

func TestGuardConnectionLimits(t *testing.T) {
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tcp", ConnectTimeout: time.Minute, MaxConnections: 5, MaxPerAddress: 3})
	g := gs[0]
	accepted := int64(0)
	dial := func(from string) net.Conn {
		t.Helper()
		c := guardDial(t, g, from)
		accepted++
		guardWait(t, "accept", func() bool { return g.Stats().Accepted == accepted })
		return c
	}
	check := func(open, perAddr, limit int64) {
		t.Helper()
		st := g.Stats()
		if st.Accepted != accepted || st.Open != open || st.RefusedPerAddress != perAddr || st.RefusedLimit != limit {
			t.Fatalf("stats %+v, want accepted %d open %d refused per address %d limit %d", st, accepted, open, perAddr, limit)
		}
	}

	a := []net.Conn{dial("127.0.0.1"), dial("127.0.0.1"), dial("127.0.0.1")}
	check(3, 0, 0)
	guardExpectClosed(t, dial("127.0.0.1"), 10*time.Second) // a 4th from one address
	check(3, 1, 0)
	others := []net.Conn{dial("127.0.0.2"), dial("127.0.0.2")}
	check(5, 1, 0)
	guardExpectClosed(t, dial("127.0.0.3"), 10*time.Second) // a 6th in all
	check(5, 1, 1)

	for _, c := range a[:2] {
		_ = c.Close()
	}
	guardWait(t, "two closed", func() bool { return g.Stats().Open == 3 })
	b := []net.Conn{dial("127.0.0.1"), dial("127.0.0.3")}
	check(5, 1, 1)
	perIP := func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.perIP)
	}
	if n := perIP(); n != 3 {
		t.Fatalf("per-address map has %d entries, want 3", n)
	}

	for _, c := range append(append(a[2:], b...), others...) {
		_ = c.Close()
	}
	guardWait(t, "all closed", func() bool { return g.Stats().Open == 0 })
	if n := perIP(); n != 0 {
		t.Fatalf("per-address map has %d entries with no connection open", n)
	}
}

func TestGuardDeadlineLiftedAfterAuthentication(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: timeout})
	c := guardPaho(t, gs[0], "lifted", nil)
	time.Sleep(2 * timeout)
	if !c.IsConnectionOpen() {
		t.Fatal("connection closed after the pre-authentication deadline")
	}
	guardRoundTrip(t, c, "guard/lifted")
	if st := gs[0].Stats(); st.TimedOut != 0 || st.Open != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGuardPipelinedPacketsWaitForAuthentication(t *testing.T) {
	_, _, gs := guardServer(t, true, GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: 10 * time.Second})
	g := gs[0]
	c := guardDial(t, g, "")
	connect := guardConnect("pipelined")
	// One write: mochi's bufio reader would take all of it with the CONNECT.
	guardWrite(t, c, append(append([]byte(nil), connect...), guardSubscribe("guard/pipe")...))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	want := []byte{0x20, 2, 0, 0, 0x90, 3, 0, 1, 0} // CONNACK accepted, SUBACK QoS 0
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %x (%v), want %x", got, err, want)
	}
	if st := g.Stats(); st.PreAuthMaxBytes != int64(len(connect)) {
		t.Fatalf("PreAuthMaxBytes %d, want the CONNECT's %d", st.PreAuthMaxBytes, len(connect))
	}
}

func TestGuardUnauthenticatedConnectionCannotReadOn(t *testing.T) {
	// The auth hook allows the client but never calls Authenticated:
	// mochi gets its CONNECT and nothing more.
	_, _, gs := guardServer(t, false, GuardConfig{ID: "tcp", MaxConnectBytes: 4096, ConnectTimeout: time.Minute})
	g := gs[0]
	c := guardDial(t, g, "")
	connect := guardConnect("forgotten")
	guardWrite(t, c, connect)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK %x (%v)", ack, err)
	}
	guardWrite(t, c, guardSubscribe("guard/never"))
	guardExpectClosed(t, c, 10*time.Second)
	guardWait(t, "closed", func() bool { return g.Stats().Open == 0 })
	if st := g.Stats(); st.PreAuthMaxBytes != int64(len(connect)) {
		t.Fatalf("PreAuthMaxBytes %d, want %d", st.PreAuthMaxBytes, len(connect))
	}
}

func TestGuardCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	pki := newGuardPKI(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: mqtt.NewDefaultServerCapabilities(), Logger: log})
	if err := srv.AddHook(&guardAuthHook{call: true, seen: map[string]guardSeen{}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	// ConnectTimeout is long: only Close can end the pending connections.
	plain := NewGuard(GuardConfig{ID: "tcp", Address: "127.0.0.1:0", ConnectTimeout: time.Minute}, log)
	secure := NewGuard(GuardConfig{ID: "tls", Address: "127.0.0.1:0", TLS: pki.serverConfig(), ConnectTimeout: time.Minute}, log)
	for _, g := range []*Guard{plain, secure} {
		if err := srv.AddListener(g); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}

	clients := []paho.Client{guardPaho(t, plain, "leak-plain", nil), guardPaho(t, secure, "leak-tls", pki.clientConfig(true))}
	silent := guardDial(t, plain, "")
	header := guardDial(t, plain, "")
	guardWrite(t, header, []byte{0x10})
	received := atomic.LoadInt64(&srv.Info.BytesReceived)
	body := guardDial(t, plain, "")
	guardWrite(t, body, guardConnect("never-finished")[:6]) // in mochi, reading the body
	guardWait(t, "mochi to read the header", func() bool { return atomic.LoadInt64(&srv.Info.BytesReceived) >= received+2 })
	tlsSilent := guardDial(t, secure, "")
	guardWait(t, "all accepted", func() bool { return plain.Stats().Open == 4 && secure.Stats().Open == 2 })

	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if e := time.Since(start); e > 10*time.Second {
		t.Fatalf("Close took %v", e)
	}
	if st := plain.Stats(); st.Open != 0 {
		t.Fatalf("plain stats after Close %+v", st)
	}
	if st := secure.Stats(); st.Open != 0 {
		t.Fatalf("TLS stats after Close %+v", st)
	}
	for _, c := range []net.Conn{silent, header, body, tlsSilent} {
		guardExpectClosed(t, c, 10*time.Second)
	}
	for _, c := range clients {
		c.Disconnect(0)
	}
	plain.Close(func(string) {}) // a second Close is harmless
	goleak.VerifyNone(t, ignore)
}

func TestGuardCloseWithoutServe(t *testing.T) {
	g := NewGuard(GuardConfig{ID: "idle", Address: "127.0.0.1:0"}, nil)
	if err := g.Init(slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if _, port, _ := net.SplitHostPort(g.Address()); port == "0" || port == "" {
		t.Fatalf("Address %q has no real port", g.Address())
	}
	closed := 0
	g.Close(func(id string) {
		if id == "idle" {
			closed++
		}
	})
	g.Serve(func(string, net.Conn) error { t.Error("served after Close"); return nil })
	if closed != 1 {
		t.Fatalf("closeClients called %d times", closed)
	}
}

// guardFakeConn records the deadlines set on it and serves reads from r.
type guardFakeConn struct {
	net.Conn
	r      io.Reader
	rd, wd time.Time
}

func (f *guardFakeConn) Read(p []byte) (int, error)         { return f.r.Read(p) }
func (f *guardFakeConn) SetDeadline(t time.Time) error      { f.rd, f.wd = t, t; return nil }
func (f *guardFakeConn) SetReadDeadline(t time.Time) error  { f.rd = t; return nil }
func (f *guardFakeConn) SetWriteDeadline(t time.Time) error { f.wd = t; return nil }
func (f *guardFakeConn) Close() error                       { return nil }

func TestGuardConnCapsReadsAndDeadlinesUntilAuthenticated(t *testing.T) {
	g := NewGuard(GuardConfig{}, nil)
	connect := guardConnect("unit")
	next := guardSubscribe("unit/t")
	fake := &guardFakeConn{r: bytes.NewReader(append(append([]byte(nil), connect[2:]...), next...))}
	pre := time.Now().Add(time.Minute)
	c := &guardConn{Conn: fake, g: g, hdr: connect[:2], size: int64(len(connect)), deadline: pre}

	// mochi's refreshDeadline: keepalive 0 (none) and keepalive 90 s.
	_ = c.SetDeadline(time.Time{})
	if !fake.rd.Equal(pre) || !fake.wd.Equal(pre) {
		t.Fatalf("no deadline applied as %v/%v, want the pre-authentication %v", fake.rd, fake.wd, pre)
	}
	later := pre.Add(time.Minute)
	_ = c.SetDeadline(later)
	if !fake.rd.Equal(pre) {
		t.Fatalf("later deadline applied as %v, want %v", fake.rd, pre)
	}
	sooner := pre.Add(-time.Second)
	_ = c.SetReadDeadline(sooner)
	if !fake.rd.Equal(sooner) || !fake.wd.Equal(pre) {
		t.Fatalf("sooner read deadline applied as %v/%v", fake.rd, fake.wd)
	}
	_ = c.SetDeadline(later)

	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if !errors.Is(err, errNotAuthenticated) {
				t.Fatalf("read error %v", err)
			}
			break
		}
	}
	if !bytes.Equal(got, connect) {
		t.Fatalf("before authentication read %x, want the CONNECT %x", got, connect)
	}

	c.Authenticated()
	if !fake.rd.Equal(later) || !fake.wd.Equal(later) {
		t.Fatalf("after authentication deadlines %v/%v, want mochi's %v", fake.rd, fake.wd, later)
	}
	rest, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(rest, next) {
		t.Fatalf("after authentication read %x (%v), want %x", rest, err, next)
	}
	_ = c.SetDeadline(time.Time{})
	if !fake.rd.IsZero() {
		t.Fatalf("deadline after authentication applied as %v, want none", fake.rd)
	}
	_ = c.Close()
	if st := g.Stats(); st.PreAuthMaxBytes != int64(len(connect)) {
		t.Fatalf("PreAuthMaxBytes %d, want %d", st.PreAuthMaxBytes, len(connect))
	}
}
