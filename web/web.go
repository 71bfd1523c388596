// Package web serves the gateway's live view: one page that shows every
// device (status, split, mode, target and measured fps, latency, the last
// decision's reason, a chart of fps and split over the last minutes, the
// latest annotated frame) and sets its split, mode and target.
//
// The page learns everything from MQTT: the server makes its own inline
// subscriptions on the gateway's mochi server (subscription ids 500 and
// up) to the devices' status, state, telemetry, decisions, refused
// commands and annotated frames, and to the cloudprocs' status and
// telemetry, and keeps a bounded view model (Limits). Its controls publish
// the same …/set commands as Home Assistant or mosquitto_pub, through the
// gateway's inline client, so the gateway's control plane is the one
// control path.
//
// Endpoints:
//
//	GET  /               the page (HTML; app.js, style.css and favicon.svg are embedded)
//	GET  /events         server-sent events: "snapshot" (everything), then "update" (what changed, every 250 ms)
//	GET  /api/state      the snapshot as JSON
//	GET  /api/session    {"token": CSRF token, "user": identity} (also sets the token's cookie)
//	GET  /frame/<id>     the device's latest annotated JPEG
//	POST /api/control    {"device":"pi1","split":2} | {"device":"pi1","mode":"auto"|"manual"} | {"device":"pi1","target_fps":20}
//
// Security: every request must name an allowed host (Host header: the
// listen host, localhost, 127.0.0.1, ::1 and Config.AllowedHosts; 403
// otherwise), which defeats DNS rebinding. With Auth, every request must
// come from an admin identity (HTTP Basic against the password file, with
// the broker's failed-login limiter, or a client certificate). POST
// /api/control, the only request that changes anything, must also be
// same-origin (its Origin header names this very scheme and host;
// Sec-Fetch-Site, when sent, is same-origin), carry a JSON body
// (Content-Type application/json, which a cross-site form cannot send),
// and carry the page's CSRF token in the X-CSRF-Token header, equal to
// the SameSite=Strict, HttpOnly cookie set with the page (an HMAC-signed
// random token: a cross-site page can neither read nor send it).
package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/wire"
)

// Config configures the live view.
type Config struct {
	// Listen is the HTTP address, host:port ("" : no live view); port 0
	// picks a free port.
	Listen string
	// AllowedHosts are further names (or IP addresses) by which browsers
	// may reach the page, besides the listen host, localhost, 127.0.0.1
	// and ::1: the Host header of every request must be one of them.
	AllowedHosts []string
	// Auth, if set, admits admin identities only.
	Auth *Auth
	// TLS, if set, serves HTTPS.
	TLS *TLS
	// Anonymous allows a non-loopback Listen without Auth (the gateway's
	// allow_anonymous and insecure); Insecure allows Auth's passwords
	// over plain HTTP beyond loopback (the gateway's insecure).
	Anonymous, Insecure bool
	// Limits bound the view model; zero fields take the defaults.
	Limits Limits
	// MaxClients and ClientQueue bound the live updates (0: defaults).
	MaxClients, ClientQueue int
	// Flush is how often changes are sent to the pages (0: 250 ms).
	Flush time.Duration
}

// TLS is the page's HTTPS certificate: chain and key (PEM), re-read when
// the files change.
type TLS struct {
	CertFile, KeyFile string
}

// CheckAccess checks a live view address against the gateway's security:
// "" (off) and loopback addresses are fine; beyond loopback the page needs
// Auth (or anonymous, knowingly), and Auth's passwords need HTTPS (or
// insecure, knowingly). The error names no field: the caller does.
func CheckAccess(listen string, auth, https, anonymous, insecure bool) error {
	if listen == "" {
		return nil
	}
	loop, err := broker.IsLoopback(listen)
	if err != nil {
		return fmt.Errorf("%v (want host:port, e.g. 127.0.0.1:8080, or \"\" for no live view)", err)
	}
	switch {
	case loop:
	case !auth && !anonymous:
		return fmt.Errorf("%s is not a loopback address: without [auth] anyone who reaches the live view could change every device's split; keep it on 127.0.0.1, or set [auth] password_file (only admins may then use it) and [tls] cert_file and key_file (it then serves HTTPS), or, knowingly, allow_anonymous = true and insecure = true", listen)
	case auth && !https && !insecure:
		return fmt.Errorf("%s is not a loopback address: admins' passwords would cross the network in clear text; set [tls] cert_file and key_file (the live view then serves HTTPS with them), or keep it on 127.0.0.1 (or, knowingly, insecure = true)", listen)
	}
	return nil
}

// CheckHostName checks an entry of AllowedHosts: a host name or IP
// address, without scheme or port.
func CheckHostName(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	if h == "" || len(h) > 253 || strings.Trim(strings.ToLower(h), "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" ||
		strings.HasPrefix(h, ".") || strings.HasPrefix(h, "-") || strings.Contains(h, "..") {
		return fmt.Errorf("%q is not a host name or IP address (no scheme, port or wildcard)", h)
	}
	return nil
}

// Server is a running live view; the zero value (Listen "") is off.
type Server struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	model   *model
	hub     *hub
	auth    *authenticator
	allowed map[string]bool
	key     []byte // signs CSRF tokens, keys the credential cache
	cookie  string // the CSRF cookie's name (per port: cookies ignore ports)
	index   *template.Template
	http    *http.Server
	addr    string
	scheme  string

	events  chan event
	dropped atomic.Int64
	subs    []string
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

type event struct {
	topic   string
	payload []byte
}

// Subscription ids of the inline subscriptions (the gateway's control
// plane uses 1..99 and 100+ for other purposes).
const firstSubID = 500

// eventQueue bounds the messages waiting for the model; past it a message
// is dropped (counted, logged every 1000).
const eventQueue = 4096

//go:embed static
var static embed.FS

// Start serves the live view on cfg.Listen and subscribes to what it
// shows. An address that cannot be bound is logged and leaves the live
// view off (the gateway's broker matters more than its view); invalid
// settings are errors. Close stops it.
func Start(cfg Config, srv *mqtt.Server, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Listen == "" {
		return &Server{}, nil
	}
	if err := CheckAccess(cfg.Listen, cfg.Auth != nil, cfg.TLS != nil, cfg.Anonymous, cfg.Insecure); err != nil {
		return nil, fmt.Errorf("http_listen: %w", err)
	}
	for _, h := range cfg.AllowedHosts {
		if err := CheckHostName(h); err != nil {
			return nil, fmt.Errorf("http_allowed_hosts: %w", err)
		}
	}
	if cfg.Flush <= 0 {
		cfg.Flush = 250 * time.Millisecond
	}
	s := &Server{cfg: cfg, log: log, srv: srv, model: newModel(cfg.Limits), hub: newHub(cfg.MaxClients, cfg.ClientQueue),
		events: make(chan event, eventQueue), done: make(chan struct{}), key: make([]byte, 32), scheme: "http"}
	_, _ = rand.Read(s.key)
	var err error
	if s.index, err = template.ParseFS(static, "static/index.html"); err != nil {
		return nil, err
	}
	if cfg.Auth != nil {
		if s.auth, err = newAuthenticator(*cfg.Auth, s.key, log); err != nil {
			return nil, err
		}
	}
	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		if tlsConfig, err = serverTLS(*cfg.TLS, cfg.Auth, log); err != nil {
			return nil, err
		}
		s.scheme = "https"
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Warn("live view off: cannot listen on http_listen (set another address, or \"\" for none)", "http_listen", cfg.Listen, "error", err)
		return &Server{}, nil
	}
	s.addr = ln.Addr().String()
	host, port, _ := net.SplitHostPort(s.addr)
	s.cookie = "splitpoint_csrf_" + port
	s.allowed = map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		s.allowed[strings.ToLower(host)] = true
	} else if len(cfg.AllowedHosts) == 0 {
		log.Warn("live view: it listens on every address, but browsers may reach it only as localhost; list the names or addresses they use in http_allowed_hosts", "http_listen", cfg.Listen)
	}
	for _, h := range cfg.AllowedHosts {
		s.allowed[strings.ToLower(strings.TrimSuffix(h, "."))] = true
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.http = &http.Server{
		Handler: s.routes(),
		// No ReadTimeout: it would end the event streams; the only body
		// read (POST /api/control) has its own deadline and 4 KiB limit.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go s.loop()
	if err := s.subscribe(); err != nil {
		for i, f := range s.subs {
			_ = s.srv.Unsubscribe(f, firstSubID+i)
		}
		close(s.done)
		s.wg.Wait()
		_ = ln.Close()
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("live view stopped", "error", err)
		}
	}()
	log.Info("live view", "url", s.URL(), "auth", cfg.Auth != nil, "allowed_hosts", cfg.AllowedHosts)
	return s, nil
}

// Addr is the address the live view listens on ("" : off).
func (s *Server) Addr() string { return s.addr }

// URL is the page's address, e.g. http://127.0.0.1:8080/ ("" : off).
func (s *Server) URL() string {
	if s.addr == "" {
		return ""
	}
	return s.scheme + "://" + s.addr + "/"
}

// Close stops serving, ends the live updates and removes the
// subscriptions; it waits for the server's goroutines.
func (s *Server) Close() {
	if s.addr == "" {
		return
	}
	s.once.Do(func() {
		for i, f := range s.subs {
			_ = s.srv.Unsubscribe(f, firstSubID+i)
		}
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			_ = s.http.Close()
		}
		s.wg.Wait()
	})
}

// subscribe makes the inline subscriptions. mochi runs the handler on the
// publisher's goroutine: it copies the message into a bounded queue and
// never blocks (a full queue drops the message and counts it).
func (s *Server) subscribe() error {
	filters := []string{wire.StatusFilter, wire.StateFilter, wire.TelemetryFilter, wire.ControlSplitFilter,
		wire.ControlErrorTopic("+"), wire.AnnotatedTopic("+"), wire.CloudStatusFilter, wire.CloudTelemetryFilter}
	maxFrame := s.model.lim.MaxFrameBytes
	for i, f := range filters {
		err := s.srv.Subscribe(f, firstSubID+i, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			if len(pk.Payload) > maxFrame {
				return
			}
			select {
			case s.events <- event{topic: pk.TopicName, payload: bytes.Clone(pk.Payload)}:
			default:
				if s.dropped.Add(1)%1000 == 1 {
					s.log.Warn("live view: event queue full; message dropped", "topic", pk.TopicName, "dropped", s.dropped.Load())
				}
			}
		})
		if err != nil {
			return fmt.Errorf("live view: subscribe %s: %w", f, err)
		}
		s.subs = append(s.subs, f)
	}
	return nil
}

// loop applies the messages to the model, sends the changes to the pages
// every Flush, and forgets what expired.
func (s *Server) loop() {
	defer s.wg.Done()
	flush := time.NewTicker(s.cfg.Flush)
	defer flush.Stop()
	sweep := time.NewTicker(min(s.model.lim.Expiry/4, time.Minute))
	defer sweep.Stop()
	for {
		select {
		case <-s.done:
			return
		case ev := <-s.events:
			s.model.apply(ev.topic, ev.payload, time.Now())
		case now := <-flush.C:
			v, ok := s.model.update(now)
			if !ok || s.hub.len() == 0 {
				continue
			}
			name := "update"
			if v.Reset {
				name = "snapshot"
			}
			msg, err := sseEvent(name, v)
			if err != nil {
				s.log.Error("live view: cannot encode an update", "error", err)
				continue
			}
			s.hub.broadcast(msg)
		case now := <-sweep.C:
			s.model.sweep(now)
		}
	}
}

// serverTLS is the HTTPS configuration: TLS 1.2 or later, the certificate
// re-read when its files change, client certificates verified if given
// (with Auth's ClientCAFile).
func serverTLS(t TLS, auth *Auth, log *slog.Logger) (*tls.Config, error) {
	cs := &certSource{files: t, log: log}
	if err := cs.load(); err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cs.get}
	if auth != nil && auth.ClientCAFile != "" {
		pem, err := os.ReadFile(auth.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("live view: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("live view: client CA: %s holds no PEM certificate", auth.ClientCAFile)
		}
		c.ClientCAs, c.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return c, nil
}

type certSource struct {
	files   TLS
	log     *slog.Logger
	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
}

func (c *certSource) load() error {
	s1, err1 := stampOf(c.files.CertFile)
	s2, err2 := stampOf(c.files.KeyFile)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("live view: tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.files.CertFile, c.files.KeyFile)
	if err != nil {
		return fmt.Errorf("live view: tls: %w", err)
	}
	c.cert, c.stamp, c.checked = &cert, [2]fileStamp{s1, s2}, time.Now()
	return nil
}

func (c *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= 5*time.Second {
		c.checked = now
		s1, err1 := stampOf(c.files.CertFile)
		s2, err2 := stampOf(c.files.KeyFile)
		if err1 == nil && err2 == nil && [2]fileStamp{s1, s2} != c.stamp {
			old := c.cert
			if err := c.load(); err != nil {
				c.cert, c.stamp = old, [2]fileStamp{s1, s2}
				c.log.Error("live view: cannot re-read the certificate; the old one stays in force", "error", err)
			}
		}
	}
	return c.cert, nil
}

// routes is the handler: security headers, the Host check and
// authentication on every request, then the endpoints.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /app.js", s.asset("static/app.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /style.css", s.asset("static/style.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /favicon.svg", s.asset("static/favicon.svg", "image/svg+xml"))
	mux.HandleFunc("GET /events", s.sse)
	mux.HandleFunc("GET /api/state", s.state)
	mux.HandleFunc("GET /api/session", s.session)
	mux.HandleFunc("GET /frame/{id}", s.frame)
	mux.HandleFunc("POST /api/control", s.control)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if !s.hostAllowed(r.Host) {
			httpError(w, http.StatusForbidden, "host "+strconv.Quote(clip(r.Host))+" is not allowed (add it to http_allowed_hosts)")
			return
		}
		user := ""
		if s.auth != nil {
			var no *refusal
			if user, no = s.auth.identify(r); no != nil {
				switch no.status {
				case http.StatusUnauthorized:
					h.Set("WWW-Authenticate", `Basic realm="splitpoint live view", charset="UTF-8"`)
				case http.StatusTooManyRequests:
					h.Set("Retry-After", "2")
				}
				httpError(w, no.status, no.msg)
				return
			}
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

type userKey struct{}

func userOf(r *http.Request) string { s, _ := r.Context().Value(userKey{}).(string); return s }

// hostAllowed checks a Host header (with or without port) against the
// allowed names.
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	return host != "" && s.allowed[host]
}

// sameOrigin checks that a request comes from a page of this server: its
// Origin is this scheme and host, and Sec-Fetch-Site, when sent, says
// same-origin.
func (s *Server) sameOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return errors.New("no Origin header")
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != s.scheme || !strings.EqualFold(u.Host, r.Host) || u.Path != "" {
		return fmt.Errorf("origin %q is not %s://%s", clip(origin), s.scheme, clip(r.Host))
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("Sec-Fetch-Site is %q", clip(site))
	}
	return nil
}

// newToken returns a CSRF token: a random nonce and its HMAC.
func (s *Server) newToken() string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(nonce) + "." + base64.RawURLEncoding.EncodeToString(s.tokenMAC(nonce))
}

func (s *Server) tokenMAC(nonce []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("csrf\x00"))
	m.Write(nonce)
	return m.Sum(nil)[:16]
}

func (s *Server) validToken(t string) bool {
	n, m, ok := strings.Cut(t, ".")
	if !ok {
		return false
	}
	nonce, err1 := base64.RawURLEncoding.DecodeString(n)
	mac, err2 := base64.RawURLEncoding.DecodeString(m)
	return err1 == nil && err2 == nil && len(nonce) == 16 && hmac.Equal(mac, s.tokenMAC(nonce))
}

// token returns the request's CSRF token, setting a new cookie when it has
// none (or one this server did not sign).
func (s *Server) token(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(s.cookie); err == nil && s.validToken(c.Value) {
		return c.Value
	}
	t := s.newToken()
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: t, Path: "/", HttpOnly: true, Secure: s.scheme == "https",
		SameSite: http.SameSiteStrictMode})
	return t
}

// csrfOK checks the X-CSRF-Token header against the cookie.
func (s *Server) csrfOK(r *http.Request) bool {
	c, err := r.Cookie(s.cookie)
	h := r.Header.Get("X-CSRF-Token")
	return err == nil && h != "" && subtle.ConstantTimeCompare([]byte(h), []byte(c.Value)) == 1 && s.validToken(c.Value)
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"cannot encode"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	data := struct{ Token, User string }{s.token(w, r), userOf(r)}
	if err := s.index.Execute(&buf, data); err != nil {
		httpError(w, http.StatusInternalServerError, "cannot render the page")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) asset(name, ctype string) http.HandlerFunc {
	b, err := static.ReadFile(name)
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ctype)
		_, _ = w.Write(b)
	}
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"token": s.token(w, r), "user": userOf(r)})
}

func (s *Server) state(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.model.snapshot(time.Now()))
}

func (s *Server) frame(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if wire.ValidateName(id) != nil {
		httpError(w, http.StatusNotFound, "no such device")
		return
	}
	b, n := s.model.frame(id)
	if b == nil {
		httpError(w, http.StatusNotFound, "no annotated frame for this device")
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("X-Frame-Number", strconv.FormatUint(n, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// sse streams the live updates: a snapshot, then the updates, and a
// comment every 15 s to find dead connections. A write that takes over
// 10 s ends the stream, as does falling DefaultClientQueue updates behind.
func (s *Server) sse(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	now := time.Now()
	s.model.mu.Lock()
	snap := s.model.snapshotLocked(now)
	c := s.hub.add() // under the model's lock: every later change reaches this page
	s.model.mu.Unlock()
	if c == nil {
		httpError(w, http.StatusServiceUnavailable, "too many live views open")
		return
	}
	defer s.hub.remove(c)
	first, err := sseEvent("snapshot", snap)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "cannot encode the snapshot")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(append([]byte("retry: 2000\n\n"), first...)) {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-c.gone:
			return
		case msg := <-c.ch:
			if !write(msg) {
				return
			}
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		}
	}
}

// controlRequest is the body of POST /api/control: a device and exactly
// one of split, mode, target_fps.
type controlRequest struct {
	Device    string   `json:"device"`
	Split     *int     `json:"split"`
	Mode      *string  `json:"mode"`
	TargetFPS *float64 `json:"target_fps"`
}

// ControlResponse answers POST /api/control: the command published.
type ControlResponse struct {
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	CmdID   string `json:"cmd_id"`
}

// control publishes a …/set command for the page, after the same-origin,
// content-type and CSRF checks.
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	if err := s.sameOrigin(r); err != nil {
		httpError(w, http.StatusForbidden, "cross-origin request refused: "+err.Error())
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		httpError(w, http.StatusUnsupportedMediaType, "the body must be application/json")
		return
	}
	if !s.csrfOK(r) {
		httpError(w, http.StatusForbidden, "csrf: missing or stale X-CSRF-Token (reload the page)")
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
	var req controlRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	if err := wire.ValidateName(req.Device); err != nil {
		httpError(w, http.StatusBadRequest, "device: "+err.Error())
		return
	}
	stages, known := s.model.stages(req.Device)
	if !known || stages == 0 {
		httpError(w, http.StatusNotFound, "unknown device: it has not published its state")
		return
	}
	idb := make([]byte, 6)
	_, _ = rand.Read(idb)
	cmdID := "web-" + hex.EncodeToString(idb)
	var topic string
	var payload []byte
	var err error
	switch {
	case req.Split != nil && req.Mode == nil && req.TargetFPS == nil:
		topic = wire.ControlSplitSetTopic(req.Device)
		payload, _ = json.Marshal(map[string]any{"split": *req.Split, "cmd_id": cmdID})
		_, err = wire.ParseSplitCommand(payload, stages-1)
	case req.Mode != nil && req.Split == nil && req.TargetFPS == nil:
		topic = wire.ControlSplitSetTopic(req.Device)
		payload, _ = json.Marshal(map[string]any{"mode": *req.Mode, "cmd_id": cmdID})
		var c wire.SplitCommand
		if c, err = wire.ParseSplitCommand(payload, stages-1); err == nil && c.Mode != *req.Mode {
			err = fmt.Errorf("mode must be %q or %q", wire.ModeAuto, wire.ModeManual)
		}
	case req.TargetFPS != nil && req.Split == nil && req.Mode == nil:
		topic = wire.ControlTargetSetTopic(req.Device)
		payload = fmt.Appendf(nil, `{"target_fps":%s,"cmd_id":%q}`, strconv.FormatFloat(*req.TargetFPS, 'f', -1, 64), cmdID)
		_, err = wire.ParseTargetCommand(payload)
	default:
		err = errors.New(`give exactly one of "split", "mode" and "target_fps"`)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.srv.Publish(topic, payload, false, 1); err != nil {
		s.log.Error("live view: cannot publish a command", "topic", topic, "error", err)
		httpError(w, http.StatusInternalServerError, "cannot publish the command")
		return
	}
	s.log.Info("live view command", "user", userOf(r), "remote", r.RemoteAddr, "topic", topic, "payload", string(payload))
	writeJSON(w, http.StatusAccepted, ControlResponse{Topic: topic, Payload: string(payload), CmdID: cmdID})
}
