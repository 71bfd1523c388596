package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// mqttConnectByte is the first byte of an MQTT CONNECT packet: type 1,
// flags 0 (MQTT 3.1.1 §3.1.1, MQTT 5 §3.1.1).
const mqttConnectByte = 0x10

// maxVarintBytes is the longest remaining length encoding (MQTT 3.1.1
// §2.2.3).
const maxVarintBytes = 4

var (
	errNotConnect        = errors.New("first packet is not a well-formed CONNECT")
	errConnectOversized  = errors.New("CONNECT packet larger than the pre-authentication limit")
	errNotAuthenticated  = errors.New("guard: connection read past its CONNECT packet before it was authenticated")
	errGuardInitialized  = errors.New("guard: listener already initialized")
	errGuardClosedOnInit = errors.New("guard: listener closed")
)

// GuardConfig configures a guarded listener.
type GuardConfig struct {
	// ID is the listener id, e.g. "tcp" or "tls".
	ID string
	// Address is the host:port to bind; port 0 picks one.
	Address string
	// TLS makes the listener a TLS listener; nil means plain TCP. Minimum
	// versions and client certificate policy are this config's job.
	TLS *tls.Config
	// MaxConnectBytes caps the CONNECT packet (fixed header plus remaining
	// length) read before authentication; 0 takes
	// DefaultMaxConnectBytes.
	MaxConnectBytes int
	// ConnectTimeout bounds the TLS handshake plus the CONNECT packet; 0
	// takes DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConnections bounds the concurrent connections on this listener
	// (0: unlimited).
	MaxConnections int
	// MaxPerAddress bounds the concurrent connections from one IP address
	// (0: unlimited).
	MaxPerAddress int
}

// GuardStats are a guarded listener's counters (monotonic unless said).
type GuardStats struct {
	// Accepted counts the accepted connections.
	Accepted int64
	// Open is the number of connections open now.
	Open int64
	// RefusedLimit counts connections closed at once because the listener
	// was at MaxConnections.
	RefusedLimit int64
	// RefusedPerAddress counts connections closed at once because their IP
	// was at MaxPerAddress.
	RefusedPerAddress int64
	// TimedOut counts connections that did not complete their TLS
	// handshake and CONNECT packet within ConnectTimeout.
	TimedOut int64
	// NotConnect counts connections whose first packet was not a CONNECT
	// (first byte other than 0x10) or had a malformed remaining length.
	NotConnect int64
	// Oversized counts connections that declared a CONNECT larger than
	// MaxConnectBytes.
	Oversized int64
	// TLSFailed counts TLS handshake errors other than timeouts.
	TLSFailed int64
	// PreAuthMaxBytes is the most bytes any connection delivered to mochi
	// before it was authenticated; never more than MaxConnectBytes.
	PreAuthMaxBytes int64
}

// GuardedConn is the connection type a Guard hands to mochi.
type GuardedConn interface {
	net.Conn
	// Authenticated lifts the pre-authentication read cap and deadline;
	// the broker's authentication hook calls it after a successful login.
	Authenticated()
	// TLSState returns the TLS connection state (with the verified client
	// certificate chains, if any) when the listener is a TLS listener.
	TLSState() (tls.ConnectionState, bool)
	// RemoteIP returns the client's IP address without the port.
	RemoteIP() string
}

// Guard is a mochi listener (listeners.Listener) that guards the phase
// before a client is authenticated, which mochi itself leaves open: mochi
// sets no deadline before CONNECT, allocates a buffer as large as the
// declared CONNECT, and counts clients only once they are connected.
//
// A Guard bounds the concurrent connections (per listener and per IP),
// gives each connection ConnectTimeout to finish its TLS handshake and its
// CONNECT packet, reads and checks the CONNECT fixed header itself (type,
// remaining length, size at most MaxConnectBytes) before mochi sees the
// connection, and hands mochi a GuardedConn that delivers no more than that
// CONNECT packet until the authentication hook calls Authenticated.
type Guard struct {
	cfg      GuardConfig
	log      *slog.Logger
	maxBytes int
	timeout  time.Duration

	accepted, refusedLimit, refusedPerAddr atomic.Int64
	timedOut, notConnect, oversized        atomic.Int64
	tlsFailed, preAuthMax                  atomic.Int64

	mu        sync.Mutex
	ln        net.Listener
	closed    bool
	serving   bool
	open      int64
	perIP     map[string]int
	conns     map[net.Conn]struct{} // every open connection (raw), closed by Close
	serveDone chan struct{}         // closed when the accept loop returns
	done      chan struct{}         // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // connection goroutines
}

var _ listeners.Listener = (*Guard)(nil)

// NewGuard returns a guarded listener; srv.AddListener initializes it. Zero
// MaxConnectBytes and ConnectTimeout take the defaults. A nil log takes the
// logger mochi passes to Init.
func NewGuard(cfg GuardConfig, log *slog.Logger) *Guard {
	g := &Guard{
		cfg:       cfg,
		log:       log,
		maxBytes:  cfg.MaxConnectBytes,
		timeout:   cfg.ConnectTimeout,
		perIP:     map[string]int{},
		conns:     map[net.Conn]struct{}{},
		serveDone: make(chan struct{}),
		done:      make(chan struct{}),
	}
	if g.maxBytes <= 0 {
		g.maxBytes = DefaultMaxConnectBytes
	}
	if g.timeout <= 0 {
		g.timeout = DefaultConnectTimeout
	}
	return g
}

// ID returns the listener id.
func (g *Guard) ID() string { return g.cfg.ID }

// Protocol returns "tcp", as mochi's TCP listener does with and without TLS.
func (g *Guard) Protocol() string { return "tcp" }

// Address returns the bound address (with the real port) after Init, else
// the configured one.
func (g *Guard) Address() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return g.ln.Addr().String()
	}
	return g.cfg.Address
}

// Init binds the listener's address; mochi's AddListener calls it.
func (g *Guard) Init(log *slog.Logger) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return errGuardInitialized
	}
	if g.closed {
		return errGuardClosedOnInit
	}
	if g.log == nil {
		g.log = log
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	ln, err := net.Listen("tcp", g.cfg.Address)
	if err != nil {
		return err
	}
	g.ln = ln
	return nil
}

// Serve accepts connections until Close and hands each one that delivers a
// CONNECT header within the limits to establish (mochi's
// EstablishConnection) in its own goroutine.
func (g *Guard) Serve(establish listeners.EstablishFn) {
	g.mu.Lock()
	if g.closed || g.ln == nil || g.serving {
		g.mu.Unlock()
		return
	}
	g.serving = true
	ln := g.ln
	g.mu.Unlock()
	defer close(g.serveDone)

	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if g.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: keep serving, as
			// net/http does, instead of losing the listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.Warn("guard: accept failed", "listener", g.cfg.ID, "error", err, "retry_in", backoff)
			select {
			case <-g.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		g.accept(raw, establish)
	}
}

// accept counts a new connection and either refuses it at once or starts
// its goroutine. It never blocks on the client.
func (g *Guard) accept(raw net.Conn, establish listeners.EstablishFn) {
	g.accepted.Add(1)
	ip := remoteIP(raw.RemoteAddr())

	g.mu.Lock()
	g.open++
	g.perIP[ip]++
	var refused *atomic.Int64
	switch {
	case g.closed:
	case g.cfg.MaxConnections > 0 && g.open > int64(g.cfg.MaxConnections):
		refused = &g.refusedLimit
	case g.cfg.MaxPerAddress > 0 && g.perIP[ip] > g.cfg.MaxPerAddress:
		refused = &g.refusedPerAddr
	default:
		g.conns[raw] = struct{}{}
		g.wg.Add(1)
		g.mu.Unlock()
		go g.handle(raw, ip, establish)
		return
	}
	g.releaseLocked(raw, ip)
	g.mu.Unlock()
	if refused != nil {
		refused.Add(1)
		g.log.Debug("guard: connection refused", "listener", g.cfg.ID, "remote", ip,
			"per_address", refused == &g.refusedPerAddr)
	}
	_ = raw.Close()
}

// releaseLocked undoes accept's counting; g.mu is held.
func (g *Guard) releaseLocked(raw net.Conn, ip string) {
	g.open--
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
	delete(g.conns, raw)
}

// handle runs one connection: the guarded pre-authentication phase, then
// mochi for the client's lifetime.
func (g *Guard) handle(raw net.Conn, ip string, establish listeners.EstablishFn) {
	defer g.wg.Done()
	defer func() {
		g.mu.Lock()
		g.releaseLocked(raw, ip)
		g.mu.Unlock()
	}()

	gc := g.preAuth(raw, ip)
	if gc == nil {
		_ = raw.Close()
		return
	}
	// Like mochi's TCP listener; this blocks until the client is gone.
	if err := establish(g.cfg.ID, gc); err != nil {
		g.log.Debug("guard: client connection ended", "listener", g.cfg.ID, "remote", gc.RemoteAddr().String(), "error", err)
	}
	_ = gc.Close()
}

// preAuth sets the pre-authentication deadline, completes the TLS
// handshake and reads the CONNECT fixed header. It returns nil (having
// counted why) if the connection is to be closed.
func (g *Guard) preAuth(raw net.Conn, ip string) *guardConn {
	deadline := time.Now().Add(g.timeout)
	if err := raw.SetDeadline(deadline); err != nil {
		return nil
	}
	conn := raw
	var tc *tls.Conn
	if g.cfg.TLS != nil {
		tc = tls.Server(raw, g.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			switch {
			case isTimeout(err):
				g.timedOut.Add(1)
			case g.isClosed() || errors.Is(err, net.ErrClosed):
			default:
				g.tlsFailed.Add(1)
			}
			g.log.Debug("guard: TLS handshake failed", "listener", g.cfg.ID, "remote", ip, "error", err)
			return nil
		}
		conn = tc
	}

	hdr, size, err := readConnectHeader(conn, g.maxBytes)
	if err != nil {
		switch {
		case errors.Is(err, errNotConnect):
			g.notConnect.Add(1)
		case errors.Is(err, errConnectOversized):
			g.oversized.Add(1)
		case isTimeout(err):
			g.timedOut.Add(1)
		}
		g.log.Debug("guard: no acceptable CONNECT", "listener", g.cfg.ID, "remote", ip, "error", err)
		return nil
	}
	return &guardConn{
		Conn:     conn,
		g:        g,
		tls:      tc,
		ip:       ip,
		hdr:      hdr,
		size:     int64(size),
		deadline: deadline,
	}
}

// Close stops accepting, closes the listener, has mochi close this
// listener's clients (closeClients), closes the connections still in the
// pre-authentication phase, and waits until every goroutine of the
// listener has returned.
func (g *Guard) Close(closeClients listeners.CloseFn) {
	g.closeOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		close(g.done)
		ln, serving := g.ln, g.serving
		g.mu.Unlock()

		if ln != nil {
			_ = ln.Close()
		}
		if serving {
			<-g.serveDone // no new connections after this
		}
		if closeClients != nil {
			closeClients(g.cfg.ID)
		}
		// Connections mochi does not list as clients yet (pre-authentication,
		// or being authenticated) and any it did not close.
		g.mu.Lock()
		conns := make([]net.Conn, 0, len(g.conns))
		for c := range g.conns {
			conns = append(conns, c)
		}
		g.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
		g.wg.Wait()
	})
}

// Stats returns the listener's counters.
func (g *Guard) Stats() GuardStats {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	return GuardStats{
		Accepted:          g.accepted.Load(),
		Open:              open,
		RefusedLimit:      g.refusedLimit.Load(),
		RefusedPerAddress: g.refusedPerAddr.Load(),
		TimedOut:          g.timedOut.Load(),
		NotConnect:        g.notConnect.Load(),
		Oversized:         g.oversized.Load(),
		TLSFailed:         g.tlsFailed.Load(),
		PreAuthMaxBytes:   g.preAuthMax.Load(),
	}
}

func (g *Guard) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// notePreAuthBytes raises PreAuthMaxBytes to n.
func (g *Guard) notePreAuthBytes(n int64) {
	for {
		cur := g.preAuthMax.Load()
		if n <= cur || g.preAuthMax.CompareAndSwap(cur, n) {
			return
		}
	}
}

// readConnectHeader reads an MQTT fixed header byte by byte (nothing past
// it) and checks it is a CONNECT of at most maxBytes in all. It returns the
// header bytes and the packet's total size.
func readConnectHeader(r io.Reader, maxBytes int) ([]byte, int, error) {
	var buf [1 + maxVarintBytes]byte
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return nil, 0, err
	}
	if buf[0] != mqttConnectByte {
		return nil, 0, fmt.Errorf("%w: first byte %#02x", errNotConnect, buf[0])
	}
	n, remaining := 1, 0
	for i := 0; ; i++ {
		if i == maxVarintBytes {
			return nil, 0, fmt.Errorf("%w: remaining length longer than %d bytes", errNotConnect, maxVarintBytes)
		}
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			return nil, 0, err
		}
		b := buf[n]
		n++
		remaining |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
	}
	total := n + remaining
	if total > maxBytes {
		return nil, 0, fmt.Errorf("%w: %d bytes, limit %d", errConnectOversized, total, maxBytes)
	}
	return append([]byte(nil), buf[:n]...), total, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// remoteIP returns the IP of addr without the port.
func remoteIP(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if addr == nil {
		return ""
	}
	s := addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// guardConn is the GuardedConn a Guard hands to mochi. Until Authenticated
// it delivers the CONNECT header the guard read, then at most the rest of
// that CONNECT packet, and keeps the pre-authentication deadline: deadlines
// mochi sets in the meantime are remembered and applied, but never later
// than the guard's, until Authenticated restores mochi's own.
type guardConn struct {
	net.Conn // *tls.Conn or the TCP connection

	g    *Guard
	tls  *tls.Conn // nil for plain TCP
	ip   string
	size int64 // the CONNECT packet's total size

	free      atomic.Bool  // authenticated and the header delivered: Read passes through
	authed    atomic.Bool  // Authenticated was called
	delivered atomic.Int64 // bytes delivered before authentication
	recorded  atomic.Bool  // delivered went into PreAuthMaxBytes

	rmu      sync.Mutex // serializes pre-authentication reads
	hdr      []byte     // header bytes not yet delivered
	timedOut bool       // counted in TimedOut

	dmu                   sync.Mutex
	deadline              time.Time // the guard's pre-authentication deadline
	mochiRead, mochiWrite time.Time // the read and write deadlines mochi asked for

	closeOnce sync.Once
	closeErr  error
}

var _ GuardedConn = (*guardConn)(nil)

// Read delivers the CONNECT header the guard consumed, then reads from the
// connection; before authentication, no further than the CONNECT packet.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.free.Load() {
		return c.Conn.Read(p)
	}
	c.rmu.Lock()
	if len(c.hdr) > 0 {
		n := copy(p, c.hdr)
		c.hdr = c.hdr[n:]
		c.delivered.Add(int64(n))
		c.rmu.Unlock()
		return n, nil
	}
	if c.authed.Load() {
		c.free.Store(true)
		c.rmu.Unlock()
		return c.Conn.Read(p)
	}
	defer c.rmu.Unlock()
	left := c.size - c.delivered.Load()
	if left <= 0 {
		return 0, errNotAuthenticated
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.delivered.Add(int64(n))
	if err != nil && isTimeout(err) && !c.timedOut {
		c.timedOut = true // the CONNECT body did not arrive in time
		c.g.timedOut.Add(1)
	}
	return n, err
}

// Authenticated lifts the read cap and replaces the pre-authentication
// deadline by the one mochi last asked for (mochi sets its keepalive
// deadline just before calling the authentication hook), or by none.
func (c *guardConn) Authenticated() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.authed.Swap(true) {
		return
	}
	c.record()
	if c.mochiRead.Equal(c.mochiWrite) {
		_ = c.Conn.SetDeadline(c.mochiRead)
		return
	}
	_ = c.Conn.SetReadDeadline(c.mochiRead)
	_ = c.Conn.SetWriteDeadline(c.mochiWrite)
}

// SetDeadline sets the read and write deadlines, before authentication no
// later than the pre-authentication deadline.
func (c *guardConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.mochiRead, c.mochiWrite = t, t
	return c.Conn.SetDeadline(c.capLocked(t))
}

// SetReadDeadline sets the read deadline, before authentication no later
// than the pre-authentication deadline.
func (c *guardConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.mochiRead = t
	return c.Conn.SetReadDeadline(c.capLocked(t))
}

// SetWriteDeadline sets the write deadline, before authentication no later
// than the pre-authentication deadline.
func (c *guardConn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.mochiWrite = t
	return c.Conn.SetWriteDeadline(c.capLocked(t))
}

// capLocked returns the deadline to apply for t; c.dmu is held.
func (c *guardConn) capLocked(t time.Time) time.Time {
	if c.authed.Load() || (!t.IsZero() && t.Before(c.deadline)) {
		return t
	}
	return c.deadline
}

// Close closes the connection, recording the bytes delivered if it was
// never authenticated.
func (c *guardConn) Close() error {
	c.closeOnce.Do(func() {
		if !c.authed.Load() {
			c.record()
		}
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}

// record notes the bytes delivered before authentication, once.
func (c *guardConn) record() {
	if !c.recorded.Swap(true) {
		c.g.notePreAuthBytes(c.delivered.Load())
	}
}

// TLSState returns the TLS connection state when the listener is TLS.
func (c *guardConn) TLSState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// RemoteIP returns the client's IP address without the port.
func (c *guardConn) RemoteIP() string { return c.ip }
