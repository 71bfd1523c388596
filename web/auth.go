package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/broker/passwd"
)

// Bounds and timings of the page's authentication.
const (
	// Failed logins allowed per IP address, then one more per
	// failedLoginEvery (the broker's figures); at most
	// maxLimitedAddresses addresses are remembered.
	failedLoginBurst    = 10
	failedLoginEvery    = 2 * time.Second
	maxLimitedAddresses = 4096
	// A verified user name and password is remembered for credCacheTTL
	// (a browser sends them with every request, and a bcrypt check costs
	// tens of milliseconds), at most credCacheSize of them; the cache is
	// cleared when the password file changes.
	credCacheTTL  = 5 * time.Minute
	credCacheSize = 64
	// The password file is checked for changes at most this often.
	reloadCheckEvery = 2 * time.Second
)

// Auth restricts the page to admin identities: HTTP Basic against a
// mosquitto password file (the broker's), or a client certificate verified
// against ClientCAFile when the page serves HTTPS, whose CN is the identity.
type Auth struct {
	// PasswordFile is the mosquitto password file ("" : certificates only).
	// It is re-read when it changes (a broken file keeps the old one).
	PasswordFile string
	// Admin names the identities that may use the page.
	Admin []string
	// ClientCAFile, with TLS, verifies client certificates.
	ClientCAFile string
}

type cachedCred struct {
	user    string
	expires time.Time
}

// authenticator identifies the requests of a page with Auth on.
type authenticator struct {
	cfg     Auth
	admins  map[string]bool
	limiter *passwd.Limiter
	key     []byte
	log     *slog.Logger

	mu      sync.Mutex
	file    *passwd.File
	stamp   fileStamp
	checked time.Time
	cache   map[[sha256.Size]byte]cachedCred
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

func newAuthenticator(cfg Auth, key []byte, log *slog.Logger) (*authenticator, error) {
	a := &authenticator{cfg: cfg, admins: map[string]bool{}, key: key, log: log,
		limiter: passwd.NewLimiter(failedLoginBurst, failedLoginEvery, maxLimitedAddresses),
		cache:   map[[sha256.Size]byte]cachedCred{}}
	for _, n := range cfg.Admin {
		a.admins[n] = true
	}
	if cfg.PasswordFile != "" {
		st, err := stampOf(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("live view: %w", err)
		}
		f, _, err := passwd.Load(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("live view: %w", err)
		}
		a.file, a.stamp, a.checked = f, st, time.Now()
	}
	return a, nil
}

// passwords returns the password file, re-read if it changed. Call with
// a.mu held.
func (a *authenticator) passwords(now time.Time) *passwd.File {
	if now.Sub(a.checked) < reloadCheckEvery {
		return a.file
	}
	a.checked = now
	st, err := stampOf(a.cfg.PasswordFile)
	if err != nil || st == a.stamp {
		return a.file
	}
	f, _, err := passwd.Load(a.cfg.PasswordFile)
	if err != nil {
		a.log.Error("live view: cannot re-read the password file; the old one stays in force", "error", err)
		a.stamp = st // do not retry until it changes again
		return a.file
	}
	a.file, a.stamp = f, st
	clear(a.cache)
	a.log.Info("live view: re-read the password file", "users", f.Len())
	return a.file
}

// refusal is why a request is refused: its HTTP status and message.
type refusal struct {
	status int
	msg    string
}

// identify returns the admin identity of a request, or why it is refused:
// 401 (no or wrong credentials), 403 (not an admin), 429 (too many failed
// logins from the address: the password is not even checked).
func (a *authenticator) identify(r *http.Request) (string, *refusal) {
	if cn, ok := verifiedCN(r.TLS); ok {
		if !a.admins[cn] {
			return "", &refusal{http.StatusForbidden, fmt.Sprintf("certificate identity %q is not an admin ([auth] admin)", cn)}
		}
		return cn, nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		return "", &refusal{http.StatusUnauthorized, "log in with an admin identity ([auth] admin)"}
	}
	if a.cfg.PasswordFile == "" {
		return "", &refusal{http.StatusUnauthorized, "this gateway has no password file: present an admin client certificate"}
	}
	now := time.Now()
	mac := hmac.New(sha256.New, a.key)
	mac.Write([]byte("cred\x00" + user + "\x00" + pass))
	var k [sha256.Size]byte
	copy(k[:], mac.Sum(nil))
	ip := remoteIP(r)

	a.mu.Lock()
	f := a.passwords(now)
	c, hit := a.cache[k]
	if hit && now.After(c.expires) {
		delete(a.cache, k)
		hit = false
	}
	a.mu.Unlock()
	if !hit {
		if !a.limiter.Allow(ip, now) {
			return "", &refusal{http.StatusTooManyRequests, "too many failed logins from this address; try again in a few seconds"}
		}
		if f == nil || !f.Verify(user, []byte(pass)) {
			a.limiter.Fail(ip, now)
			return "", &refusal{http.StatusUnauthorized, "wrong user name or password"}
		}
		a.mu.Lock()
		if len(a.cache) >= credCacheSize {
			clear(a.cache)
		}
		a.cache[k] = cachedCred{user: user, expires: now.Add(credCacheTTL)}
		a.mu.Unlock()
	}
	if !a.admins[user] {
		return "", &refusal{http.StatusForbidden, fmt.Sprintf("user %q is not an admin ([auth] admin)", user)}
	}
	return user, nil
}

// verifiedCN is the CN of a client certificate the TLS handshake verified.
func verifiedCN(st *tls.ConnectionState) (string, bool) {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	return cn, cn != ""
}

func remoteIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}
