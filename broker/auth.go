package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/splitpoint/splitpoint/broker/passwd"
	"github.com/splitpoint/splitpoint/wire"
)

// Auth turns authentication and authorisation on. Every client must then
// log in, with a user name and password from PasswordFile or with a client
// certificate verified against the TLS listener's ClientCAFile (its CN is
// the identity), and may then do only what its role allows (ACL).
type Auth struct {
	// PasswordFile is a mosquitto password file ($7$, $6$ or bcrypt
	// lines); "" means only client certificates authenticate.
	PasswordFile string
	// Cloud and Admin name the cloudproc and admin identities; every other
	// identity is a device whose id is its name.
	Cloud, Admin []string
	// Stages are the stage names devices may publish (every registered
	// pipeline's).
	Stages []string
	// HAPrefix is Home Assistant's discovery prefix (admins read it).
	HAPrefix string
	// FailedLoginBurst failed logins are allowed per remote address, then
	// one more per FailedLoginEvery; 0 takes DefaultFailedLoginBurst and
	// DefaultFailedLoginEvery.
	FailedLoginBurst int
	FailedLoginEvery time.Duration
}

// Defaults of the failed-login limiter.
const (
	DefaultFailedLoginBurst = 10
	DefaultFailedLoginEvery = 2 * time.Second
	// maxLimitedAddresses bounds the addresses the failed-login limiter
	// remembers.
	maxLimitedAddresses = 4096
	// denyLogEvery: a denial is logged once per client, reason and topic
	// in this interval (with the count of those not logged).
	denyLogEvery = 10 * time.Minute
)

// Denial reasons, as counted in SecurityStats.Denied.
const (
	DenyNoCredentials  = "no_credentials"  // CONNECT without user name (and no client certificate)
	DenyBadCredentials = "bad_credentials" // unknown user or wrong password
	DenyRateLimited    = "rate_limited"    // too many failed logins from the address: not even checked
	DenyCertMismatch   = "cert_mismatch"   // user name differs from the client certificate's CN
	DenyIdentity       = "bad_identity"    // the identity is no valid device, cloud or admin name
	DenyClientID       = "client_id"       // client id not the identity's own
	DenyWill           = "will"            // last will on a topic the identity may not publish (or retain)
	DenyPublish        = "publish"         // publish to a topic the identity may not write
	DenyRead           = "read"            // subscription (or delivery) the identity may not read
	DenyRetain         = "retain"          // retain flag on a topic the identity may not retain: delivered, not kept
)

var denyReasons = []string{DenyNoCredentials, DenyBadCredentials, DenyRateLimited, DenyCertMismatch, DenyIdentity,
	DenyClientID, DenyWill, DenyPublish, DenyRead, DenyRetain}

// SecurityStats are the broker's authentication and authorisation
// counters, published as JSON on wire.SysSecurityTopic.
type SecurityStats struct {
	// Auth is false when the broker runs anonymous (everything allowed).
	Auth bool `json:"auth"`
	// Users is the number of users in the password file.
	Users int `json:"users"`
	// Logins counts successful logins.
	Logins int64 `json:"logins"`
	// Denied counts refusals by reason (Deny* constants).
	Denied map[string]int64 `json:"denied"`
	// Reloads and ReloadErrors count password-file reloads (SIGHUP).
	Reloads      int64 `json:"reloads"`
	ReloadErrors int64 `json:"reload_errors"`
	// Listeners are the pre-authentication guards' counters, by listener
	// id ("tcp", "tls").
	Listeners map[string]GuardStats `json:"listeners"`
}

// access is the authentication and authorisation state of a broker with
// Auth on.
type access struct {
	cfg     Auth
	acl     *ACL
	roles   map[string]Role // cloud and admin names
	file    atomic.Pointer[passwd.File]
	limiter *passwd.Limiter
	log     *slog.Logger
	logLim  *limiter

	logins, reloads, reloadErrors atomic.Int64
	denied                        map[string]*atomic.Int64 // fixed keys: denyReasons
}

func newAccess(cfg Auth, log *slog.Logger) (*access, error) {
	if cfg.FailedLoginBurst <= 0 {
		cfg.FailedLoginBurst = DefaultFailedLoginBurst
	}
	if cfg.FailedLoginEvery <= 0 {
		cfg.FailedLoginEvery = DefaultFailedLoginEvery
	}
	a := &access{
		cfg: cfg, acl: NewACL(cfg.Stages, cfg.HAPrefix), roles: map[string]Role{},
		limiter: passwd.NewLimiter(cfg.FailedLoginBurst, cfg.FailedLoginEvery, maxLimitedAddresses),
		log:     log, logLim: newLimiter(denyLogEvery), denied: map[string]*atomic.Int64{},
	}
	for _, r := range denyReasons {
		a.denied[r] = new(atomic.Int64)
	}
	for _, l := range []struct {
		names []string
		role  Role
	}{{cfg.Cloud, RoleCloud}, {cfg.Admin, RoleAdmin}} {
		for _, n := range l.names {
			if err := wire.ValidateName(n); err != nil && l.role == RoleCloud {
				return nil, fmt.Errorf("cloud identity: %w", err)
			}
			if n == "" {
				return nil, errors.New("empty identity name")
			}
			if r, dup := a.roles[n]; dup {
				return nil, fmt.Errorf("identity %q is both %s and %s", n, r, l.role)
			}
			a.roles[n] = l.role
		}
	}
	if cfg.PasswordFile != "" {
		if err := a.reload(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// reload reads the password file again; on error the old one stays.
func (a *access) reload() error {
	f, warnings, err := passwd.Load(a.cfg.PasswordFile)
	if err != nil {
		a.reloadErrors.Add(1)
		return err
	}
	if fi, err := os.Stat(a.cfg.PasswordFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
		a.log.Warn("password file is readable by every user; chmod 640 it", "file", a.cfg.PasswordFile)
	}
	for _, w := range warnings {
		a.log.Warn(w)
	}
	a.file.Store(f)
	a.reloads.Add(1)
	return nil
}

// roleOf is the role of an identity name (RoleNone: no valid identity).
func (a *access) roleOf(name string) Role {
	if r, ok := a.roles[name]; ok {
		return r
	}
	if wire.ValidateName(name) != nil {
		return RoleNone
	}
	return RoleDevice
}

// identityOf is the identity of a connected client: the authentication
// hook stored its name as the client's user name.
func (a *access) identityOf(cl *mqtt.Client) Identity {
	name := string(cl.Properties.Username)
	return Identity{Name: name, Role: a.roleOf(name)}
}

// authenticate decides a CONNECT; reason is "" when it is accepted.
func (a *access) authenticate(cl *mqtt.Client, pk packets.Packet) (id Identity, reason, detail string) {
	user := string(pk.Connect.Username)
	gc, _ := cl.Net.Conn.(GuardedConn)
	if cn, ok := verifiedCN(gc); ok {
		if user != "" && user != cn {
			return Identity{Name: user}, DenyCertMismatch, "certificate CN " + cn
		}
		id.Name = cn
	} else {
		if user == "" {
			return id, DenyNoCredentials, ""
		}
		ip := clientIP(cl, gc)
		now := time.Now()
		if !a.limiter.Allow(ip, now) {
			return Identity{Name: user}, DenyRateLimited, ""
		}
		f := a.file.Load()
		if f == nil || !f.Verify(user, pk.Connect.Password) {
			a.limiter.Fail(ip, now)
			return Identity{Name: user}, DenyBadCredentials, ""
		}
		id.Name = user
	}
	id.Role = a.roleOf(id.Name)
	switch id.Role {
	case RoleNone:
		return id, DenyIdentity, "not a valid device name and not listed as cloud or admin"
	case RoleDevice:
		if cl.ID != wire.DeviceClientID(id.Name) {
			return id, DenyClientID, "a device must use client id " + wire.DeviceClientID(id.Name)
		}
	case RoleCloud:
		if cl.ID != wire.CloudClientID(id.Name) {
			return id, DenyClientID, "a cloudproc must use client id " + wire.CloudClientID(id.Name)
		}
	case RoleAdmin:
		if len(cl.ID) >= len(wire.ReservedClientIDPrefix) && cl.ID[:len(wire.ReservedClientIDPrefix)] == wire.ReservedClientIDPrefix {
			return id, DenyClientID, "client ids starting with " + wire.ReservedClientIDPrefix + " belong to devices and cloudprocs"
		}
	}
	if pk.Connect.WillFlag {
		if !a.acl.CanPublish(id, pk.Connect.WillTopic) || (pk.Connect.WillRetain && !a.acl.CanRetain(id, pk.Connect.WillTopic)) {
			return id, DenyWill, fmt.Sprintf("will topic %q retain=%v", pk.Connect.WillTopic, pk.Connect.WillRetain)
		}
	}
	return id, "", ""
}

// deny counts a refusal and logs it once per client, reason and topic in
// denyLogEvery.
func (a *access) deny(reason string, cl *mqtt.Client, id Identity, topic, detail string) {
	a.denied[reason].Add(1)
	ok, n := a.logLim.allow(cl.ID + "\x00" + reason + "\x00" + topic)
	if !ok {
		return
	}
	args := []any{"reason", reason, "client", cl.ID, "identity", id.Name, "role", id.Role.String(), "remote", cl.Net.Remote}
	if topic != "" {
		args = append(args, "topic", topic)
	}
	if detail != "" {
		args = append(args, "detail", detail)
	}
	if n > 0 {
		args = append(args, "not_logged", n, "per", denyLogEvery)
	}
	a.log.Warn("denied", args...)
}

func (a *access) stats() SecurityStats {
	st := SecurityStats{Auth: true, Logins: a.logins.Load(), Reloads: a.reloads.Load(), ReloadErrors: a.reloadErrors.Load(),
		Denied: make(map[string]int64, len(a.denied))}
	if f := a.file.Load(); f != nil {
		st.Users = f.Len()
	}
	for r, c := range a.denied {
		st.Denied[r] = c.Load()
	}
	return st
}

// verifiedCN is the CN of the client certificate the TLS listener verified,
// if there is one.
func verifiedCN(gc GuardedConn) (string, bool) {
	if gc == nil {
		return "", false
	}
	st, ok := gc.TLSState()
	if !ok || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	return cn, cn != ""
}

func clientIP(cl *mqtt.Client, gc GuardedConn) string {
	if gc != nil {
		return gc.RemoteIP()
	}
	if h, _, err := net.SplitHostPort(cl.Net.Remote); err == nil {
		return h
	}
	return cl.Net.Remote
}

// accessHook adapts the access state to mochi. With a nil access the
// broker is anonymous and allows everything.
type accessHook struct {
	mqtt.HookBase
	a *access
}

func (h *accessHook) ID() string { return "splitpoint-access" }

func (h *accessHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	gc, _ := cl.Net.Conn.(GuardedConn)
	if h.a != nil {
		id, reason, detail := h.a.authenticate(cl, pk)
		if reason != "" {
			topic := ""
			if reason == DenyWill {
				topic = pk.Connect.WillTopic
			}
			h.a.deny(reason, cl, id, topic, detail)
			return false
		}
		cl.Properties.Username = []byte(id.Name) // the identity, for every later check
		h.a.logins.Add(1)
	}
	if gc != nil {
		gc.Authenticated()
	}
	return true
}

func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.a == nil || cl.Net.Inline {
		return true // anonymous broker, or the gateway's own inline client
	}
	id := h.a.identityOf(cl)
	if write {
		if h.a.acl.CanPublish(id, topic) {
			return true
		}
		h.a.deny(DenyPublish, cl, id, topic, "")
		return false
	}
	if h.a.acl.CanRead(id, topic) {
		return true
	}
	h.a.deny(DenyRead, cl, id, topic, "")
	return false
}

// OnPublish keeps the retain flag only where the identity may retain: the
// message is delivered, but not kept for later subscribers.
func (h *accessHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.a == nil || cl.Net.Inline || !pk.FixedHeader.Retain {
		return pk, nil
	}
	id := h.a.identityOf(cl)
	if !h.a.acl.CanRetain(id, pk.TopicName) {
		pk.FixedHeader.Retain = false
		h.a.deny(DenyRetain, cl, id, pk.TopicName, "delivered without retain")
	}
	return pk, nil
}

// TLSListener configures the broker's TLS listener.
type TLSListener struct {
	// Listen is host:port; port 0 picks a free port.
	Listen string
	// CertFile and KeyFile hold the server's certificate chain and key
	// (PEM). They are read again by Reload.
	CertFile, KeyFile string
	// ClientCAFile, if set, holds the CAs (PEM) that client certificates
	// are verified against; a client that presents one is identified by
	// its CN (mutual TLS). A certificate is optional; one that does not
	// verify fails the handshake.
	ClientCAFile string
}

// certStore holds the server certificate, replaced by Reload.
type certStore struct {
	files TLSListener
	mu    sync.RWMutex
	cert  *tls.Certificate
}

func (s *certStore) load() error {
	c, err := tls.LoadX509KeyPair(s.files.CertFile, s.files.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s.mu.Lock()
	s.cert = &c
	s.mu.Unlock()
	return nil
}

// tlsConfig builds the listener's TLS configuration: TLS 1.2 or later,
// the server certificate from the store, client certificates verified if
// given.
func (s *certStore) tlsConfig() (*tls.Config, error) {
	if err := s.load(); err != nil {
		return nil, err
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.RLock()
			defer s.mu.RUnlock()
			return s.cert, nil
		},
	}
	if s.files.ClientCAFile != "" {
		pem, err := os.ReadFile(s.files.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client CA file %s holds no PEM certificate", s.files.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// securityHook publishes the SecurityStats on wire.SysSecurityTopic when
// they changed, on mochi's $SYS tick.
type securityHook struct {
	mqtt.HookBase
	b    *Broker
	mu   sync.Mutex
	last string
}

func (h *securityHook) ID() string { return "splitpoint-security" }

func (h *securityHook) Provides(b byte) bool { return b == mqtt.OnSysInfoTick }

func (h *securityHook) OnSysInfoTick(*system.Info) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := json.Marshal(h.b.SecurityStats())
	if err != nil || string(b) == h.last {
		return
	}
	h.last = string(b)
	_ = h.b.srv.Publish(wire.SysSecurityTopic, b, true, 0)
}
