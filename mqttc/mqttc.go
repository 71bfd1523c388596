// Package mqttc sets up paho MQTT clients the way every splitpoint process
// needs them: handlers off the network loop, subscriptions made in OnConnect
// (so they come back after a reconnect), every wait bounded, and a client
// that never stops reconnecting by itself.
//
// Failure rules (issue 6):
//   - Nothing here calls paho's Disconnect to force a reconnect: Disconnect
//     ends paho's auto-reconnect for good. A connection that must be
//     redone (its subscriptions failed) is closed underneath paho instead,
//     which paho handles as a lost connection and redials with its backoff.
//   - A SUBACK that refuses a filter (return code 0x80) is a failure. On the
//     first connection Connect returns a *RefusedError; on a later one the
//     client logs the error and reconnects with backoff (the broker's ACL
//     may have been reloaded).
//   - A client whose connection the broker closes TakeoverLimit times
//     within TakeoverWindow, with no failed dial in between (a broker that
//     was down or restarting refuses dials; a takeover never does), is
//     being kicked by another client using the same client id. The client logs "another client may be using client
//     id X" from the second such close on, and at the limit gives up: it
//     disconnects for good, and Done is closed with an *IDConflictError.
//     Takeovers alternate (each connect kicks the other process), so the
//     process that was connected first reaches the limit first: the older
//     process exits and the newer keeps running.
//   - A CONNECT refused for bad credentials or authorisation is final:
//     Connect returns the error (Done, later), instead of paho's silent
//     retry forever. Other failures are logged at most every 30 s and
//     retried.
package mqttc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Timeout bounds every wait on a paho token.
const Timeout = 10 * time.Second

// Defaults for the client-id conflict detector.
const (
	DefaultTakeoverLimit  = 5
	DefaultTakeoverWindow = 60 * time.Second
)

// CheckTakeover validates the takeover_limit and takeover_window settings
// of a config (the same for every binary): it returns the offending key
// and what is allowed, or "" and nil.
func CheckTakeover(limit int, window time.Duration) (key string, err error) {
	switch {
	case limit < 0 || limit == 1 || limit > 1000:
		return "takeover_limit", fmt.Errorf("must be 2..1000, or 0 to never give up (got %d)", limit)
	case window < 30*time.Second:
		return "takeover_window", fmt.Errorf("must be at least 30s, so that takeover_limit closes fit in it at paho's 5 s reconnect backoff (got %v)", window)
	}
	return "", nil
}

// TakeoverLimitOf turns a config's takeover_limit (0: never give up) into
// Options.TakeoverLimit (negative: never).
func TakeoverLimitOf(configured int) int {
	if configured == 0 {
		return -1
	}
	return configured
}

// Will is a last-will message.
type Will struct {
	Topic   string
	Payload string
	Retain  bool
}

// Options configure a client.
type Options struct {
	// Broker is tcp://host:port (or mqtt://), or ssl://, tls://, mqtts://
	// host:port for MQTT over TLS with TLS.
	Broker   string
	ClientID string
	Username string
	Password string
	// TLS configures TLS for an ssl://, tls:// or mqtts:// broker (nil:
	// the system's CAs, no client certificate). ServerName defaults to the
	// URL's host.
	TLS *tls.Config
	// Clean: a clean session. False keeps subscriptions and queued QoS 1
	// messages across a reconnect.
	Clean bool
	// ManualAck: the handler acknowledges each message with Ack().
	ManualAck bool
	Will      *Will
	// Subscriptions are (re)made on every connect, before OnReady runs.
	Subscriptions map[string]byte
	// Handler receives every message, on its own goroutine.
	Handler paho.MessageHandler
	// OnReady runs after the subscriptions of each connect are acknowledged.
	OnReady func(paho.Client)
	// OnLost, if set, runs (on its own goroutine) when a connection is
	// lost; the client is reconnecting.
	OnLost func(error)
	// TakeoverLimit is how many times the broker may close the connection
	// within TakeoverWindow before the client gives up (see the package
	// doc). 0 takes DefaultTakeoverLimit; negative never gives up.
	TakeoverLimit int
	// TakeoverWindow is the window of TakeoverLimit; 0 takes
	// DefaultTakeoverWindow.
	TakeoverWindow time.Duration
	Log            *slog.Logger
}

// RefusedError is a SUBACK that refused one or more filters.
type RefusedError struct {
	ClientID string
	Filters  []string
}

// Error says which filters were refused, for which client id.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("broker refused subscription to %s for client id %s (SUBACK 0x80): the broker does not allow this client to read it",
		strings.Join(e.Filters, ", "), e.ClientID)
}

// IDConflictError says that the broker kept closing the connection: another
// client is very likely connected with the same client id.
type IDConflictError struct {
	ClientID string
	Closes   int
	Window   time.Duration
}

// Error names the client id and how often the broker closed it.
func (e *IDConflictError) Error() string {
	return fmt.Sprintf("another client may be using client id %s: the broker closed this client's connection %d times within %v; giving up so that the other one keeps running",
		e.ClientID, e.Closes, e.Window)
}

// Client is a paho client that reconnects by itself after any failure
// until Close, or until it gives up on a client-id conflict (Done).
type Client struct {
	paho.Client
	o   Options
	log *slog.Logger

	mu       sync.Mutex
	conn     net.Conn // the current network connection
	warned   map[string]time.Time
	closes   []time.Time
	first    chan error // the first connect's outcome, then nil
	done     chan struct{}
	err      error
	doneOnce sync.Once
}

// testHookBeforeSubscribe, when set by a test, runs in OnConnect before the
// subscriptions are sent.
var testHookBeforeSubscribe func(clientID string)

// ValidateBroker checks a broker URL: tcp://host:port or mqtt://host:port,
// or ssl://, tls:// or mqtts://host:port for TLS.
func ValidateBroker(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Port() == "" || (schemes[u.Scheme] == "") || u.Path != "" || u.User != nil {
		return fmt.Errorf("%q is not a broker URL (want tcp://host:port, or ssl://host:port for TLS)", s)
	}
	return nil
}

// schemes maps the accepted URL schemes to paho's (tcp or ssl).
var schemes = map[string]string{"tcp": "tcp", "mqtt": "tcp", "ssl": "ssl", "tls": "ssl", "mqtts": "ssl"}

// IsTLS reports whether a broker URL asks for TLS.
func IsTLS(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && schemes[u.Scheme] == "ssl"
}

// pahoURL rewrites a broker URL to the scheme paho knows.
func pahoURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || schemes[u.Scheme] == "" {
		return s
	}
	u.Scheme = schemes[u.Scheme]
	return u.String()
}

// Connect connects, retrying until ctx ends, and returns once the first
// connection's subscriptions are acknowledged and OnReady has run. The
// client then reconnects by itself whenever the connection drops. A
// refused subscription on the first connection returns a *RefusedError.
func Connect(ctx context.Context, o Options) (*Client, error) {
	first := make(chan error, 1)
	c := &Client{o: o.withDefaults(), first: first, done: make(chan struct{})}
	c.log = c.o.Log
	c.Client = paho.NewClient(c.pahoOptions())
	if err := c.await(ctx, c.Client.Connect(), nil); err != nil {
		return nil, err
	}
	if err := c.await(ctx, nil, first); err != nil {
		return nil, err
	}
	return c, nil
}

// withDefaults fills the zero values of o.
func (o Options) withDefaults() Options {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.TakeoverLimit == 0 {
		o.TakeoverLimit = DefaultTakeoverLimit
	}
	if o.TakeoverWindow <= 0 {
		o.TakeoverWindow = DefaultTakeoverWindow
	}
	return o
}

// pahoOptions sets paho up: handlers off the network loop, reconnects with
// backoff, our dialer, and OnConnect subscribing (after paho's resume of a
// persistent session has listed its store, see resumeGate).
func (c *Client) pahoOptions() *paho.ClientOptions {
	o := c.o
	po := paho.NewClientOptions().
		AddBroker(pahoURL(o.Broker)).
		SetClientID(o.ClientID).
		SetCleanSession(o.Clean).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(500 * time.Millisecond).
		SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetWriteTimeout(Timeout).
		SetConnectTimeout(Timeout).
		SetAutoAckDisabled(o.ManualAck).
		SetResumeSubs(false).
		SetProtocolVersion(4). // MQTT 3.1.1; no silent fall-back to 3.1 on a refusal
		SetCustomOpenConnectionFn(c.dial).
		SetConnectionNotificationHandler(c.onNotification).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.onLost(err) })
	if o.Username != "" {
		po.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.Will != nil {
		po.SetWill(o.Will.Topic, o.Will.Payload, 1, o.Will.Retain)
	}
	if o.Handler != nil {
		po.SetDefaultPublishHandler(o.Handler)
	}
	var gate *resumeGate
	if !o.Clean {
		gate = newResumeGate(1) // ConnectRetry is on: Connect lists the store once first
		po.SetStore(gate)
	}
	po.SetOnConnectHandler(func(pc paho.Client) {
		// paho runs this on its own goroutine, right after the connection
		// came up: waiting here is safe, and the current connection is
		// this handler's (a failure closes that one, never a newer one).
		conn := c.current()
		if gate != nil {
			gate.wait(Timeout)
		}
		c.onConnect(pc, conn)
	})
	return po
}

// await waits for the connect token or the first connection's outcome
// (first), whichever is given, and disconnects the client on failure, on
// its own giving up or when ctx ends.
func (c *Client) await(ctx context.Context, tok paho.Token, first <-chan error) error {
	var done <-chan struct{}
	if tok != nil {
		done = tok.Done()
	}
	var err error
	select {
	case <-done:
		if err = tok.Error(); err != nil {
			err = fmt.Errorf("connect to %s: %w", c.o.Broker, err)
		}
	case err = <-first:
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.Client.Disconnect(0)
	}
	return err
}

// dial opens the network connection for paho and remembers it, so that a
// failed connection can be closed underneath paho (see the package doc). It
// refuses to dial once the client has given up. A dial that fails resets
// the count of closes by the broker: the broker was down or restarting,
// which a takeover never causes.
func (c *Client) dial(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	if u.Scheme == "ssl" {
		conn, err = c.dialTLS(&d, u.Host)
	} else {
		conn, err = d.Dial("tcp", u.Host)
	}
	if err != nil {
		c.mu.Lock()
		c.closes = nil
		c.mu.Unlock()
		c.warnEvery("dial", "cannot reach the broker; retrying", "broker", c.o.Broker, "client", c.o.ClientID, "error", err)
		return nil, err
	}
	tc := &trackedConn{Conn: conn, c: c}
	c.mu.Lock()
	c.conn = tc
	c.mu.Unlock()
	return tc, nil
}

// dialTLS dials and completes the TLS handshake within the dialer's
// timeout. A certificate that does not verify is final (the client gives
// up, like on refused credentials): retrying cannot fix a wrong CA or host
// name, and retrying silently would hide it.
func (c *Client) dialTLS(d *net.Dialer, host string) (net.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.o.TLS != nil {
		cfg = c.o.TLS.Clone()
	}
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	conn, err := (&tls.Dialer{NetDialer: d, Config: cfg}).Dial("tcp", host)
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		err = fmt.Errorf("TLS to %s: the broker's certificate does not verify (check ca_file and the host name in the broker URL): %w", c.o.Broker, err)
		c.fail(err)
	}
	return conn, err
}

// trackedConn notices, before paho does, that the broker closed the
// connection — EOF or a reset on a read, a reset or broken pipe on a write
// — so that the count of such closes is up to date before paho's reconnect
// dials again. A connection closed by this process (net.ErrClosed) is not
// counted.
type trackedConn struct {
	net.Conn
	c    *Client
	once sync.Once
}

func (t *trackedConn) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		t.once.Do(t.c.closedByBroker)
	}
	return n, err
}

func (t *trackedConn) Write(b []byte) (int, error) {
	n, err := t.Conn.Write(b)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		t.once.Do(t.c.closedByBroker)
	}
	return n, err
}

// current is the connection dialled last.
func (c *Client) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// redo closes conn; when it is the live connection paho sees a lost
// connection and reconnects with its backoff.
func redo(conn net.Conn) {
	if conn != nil {
		_ = conn.Close()
	}
}

// onConnect makes the subscriptions of the new connection conn, then runs
// OnReady. Any failure redoes that connection.
func (c *Client) onConnect(pc paho.Client, conn net.Conn) {
	if h := testHookBeforeSubscribe; h != nil {
		h(c.o.ClientID)
	}
	if len(c.o.Subscriptions) > 0 {
		refused, err := c.subscribe(pc)
		if err != nil {
			c.log.Warn("subscribe failed; reconnecting", "filters", keys(c.o.Subscriptions), "client", c.o.ClientID, "error", err)
			redo(conn)
			return
		}
		if len(refused) > 0 {
			err := &RefusedError{ClientID: c.o.ClientID, Filters: refused}
			if c.report(err) {
				return // Connect returns the error
			}
			c.log.Error("subscription refused; reconnecting", "error", err)
			redo(conn)
			return
		}
	}
	c.log.Debug("connected", "broker", c.o.Broker, "client", c.o.ClientID)
	if c.o.OnReady != nil {
		c.o.OnReady(pc)
	}
	c.report(nil)
}

// refusalTries is how many times a refused filter is subscribed again
// before the refusal counts. mochi v2.7.9 refuses a SUBSCRIBE whose packet
// id equals the id of a QoS 1 message it is itself sending the client
// (processSubscribe checks the client's packet id against the server's own
// in-flight ids, though the two directions have separate id spaces), and
// MQTT 3.1.1 cannot tell that 0x80 from an ACL's. It was seen with a second
// SUBSCRIBE sent while retained messages were being delivered; a retry a
// moment later, once they are acknowledged, passes. A real refusal repeats.
const refusalTries = 4

// subscribe makes the subscriptions and returns the filters the broker
// still refuses after refusalTries attempts.
func (c *Client) subscribe(pc paho.Client) ([]string, error) {
	want := c.o.Subscriptions
	for try := 1; ; try++ {
		tok := pc.SubscribeMultiple(want, c.o.Handler)
		if !tok.WaitTimeout(Timeout) || tok.Error() != nil {
			return nil, tokErr(tok)
		}
		st, ok := tok.(*paho.SubscribeToken)
		if !ok {
			return nil, nil
		}
		refused := map[string]byte{}
		for f, code := range st.Result() {
			if code == 0x80 {
				refused[f] = want[f]
			}
		}
		if len(refused) == 0 {
			return nil, nil
		}
		if try == refusalTries {
			return keys(refused), nil
		}
		c.log.Debug("subscription refused; trying again", "filters", keys(refused), "try", try)
		want = refused
		time.Sleep(time.Duration(try) * 50 * time.Millisecond)
	}
}

// report hands the first connection's outcome to Connect; false when
// Connect has returned already.
func (c *Client) report(err error) bool {
	c.mu.Lock()
	ch := c.first
	c.first = nil
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	ch <- err
	return true
}

// onNotification logs a refused CONNECT. Refused credentials or
// authorisation are final: the client gives up (Connect or Done report
// it) instead of retrying silently forever.
func (c *Client) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	f, ok := n.(paho.ConnectionNotificationFailed)
	if !ok || f.Reason == nil {
		return
	}
	if errors.Is(f.Reason, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(f.Reason, packets.ErrorRefusedNotAuthorised) {
		c.fail(fmt.Errorf("broker %s refused client id %s: %w", c.o.Broker, c.o.ClientID, f.Reason))
		return
	}
	c.warnEvery("connect", "connect failed; retrying", "broker", c.o.Broker, "client", c.o.ClientID, "error", f.Reason)
}

// warnEvery logs at most one line of a kind per 30 s.
func (c *Client) warnEvery(kind, msg string, args ...any) {
	now := time.Now()
	c.mu.Lock()
	if c.warned == nil {
		c.warned = map[string]time.Time{}
	}
	last := c.warned[kind] // kinds: a fixed few
	due := now.Sub(last) >= 30*time.Second
	if due {
		c.warned[kind] = now
	}
	c.mu.Unlock()
	if due {
		c.log.Warn(msg, args...)
	}
}

// onLost logs a lost connection; paho reconnects by itself.
func (c *Client) onLost(err error) {
	c.log.Warn("connection lost; reconnecting", "broker", c.o.Broker, "client", c.o.ClientID, "error", err)
	if c.o.OnLost != nil {
		c.o.OnLost(err)
	}
}

// closedByBroker counts a connection the broker closed and gives up at the
// limit.
func (c *Client) closedByBroker() {
	if c.o.TakeoverLimit < 0 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	kept := c.closes[:0]
	for _, t := range c.closes {
		if now.Sub(t) < c.o.TakeoverWindow {
			kept = append(kept, t)
		}
	}
	c.closes = append(kept, now)
	n := len(c.closes)
	c.mu.Unlock()
	if n >= 2 {
		c.log.Warn(fmt.Sprintf("another client may be using client id %s", c.o.ClientID),
			"closes_by_broker", n, "window", c.o.TakeoverWindow, "limit", c.o.TakeoverLimit)
	}
	if n >= c.o.TakeoverLimit {
		c.fail(&IDConflictError{ClientID: c.o.ClientID, Closes: n, Window: c.o.TakeoverWindow})
	}
}

// fail gives up for good: it stops reconnecting and closes Done.
func (c *Client) fail(err error) {
	c.doneOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		c.log.Error("giving up the connection", "error", err)
		go c.Client.Disconnect(0) // not on paho's goroutine that called us
		close(c.done)
	})
}

// Done is closed when the client has given up for good (Err says why). A
// client that is only reconnecting is not done.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why Done was closed, or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close disconnects for good, waiting at most quiesce for pending work.
func (c *Client) Close(quiesce uint) { c.Client.Disconnect(quiesce) }

// Publish publishes and waits, at most Timeout, for the broker's
// acknowledgement (QoS 1) or the write (QoS 0).
func Publish(c paho.Client, topic string, qos byte, retain bool, payload any) error {
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(Timeout) {
		return fmt.Errorf("publish %s: no acknowledgement within %v", topic, Timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

func tokErr(t paho.Token) error {
	if t.Error() != nil {
		return t.Error()
	}
	return errors.New("timed out")
}

func keys(m map[string]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
