// Package passwd reads password files in mosquitto's format (as written by
// mosquitto_passwd, or htpasswd -B for bcrypt) and verifies passwords for
// the gateway's embedded MQTT broker. It also has a per-address limiter of
// failed logins (Limiter).
//
// A file has one "user:hash" line per user; blank lines and lines starting
// with '#' are ignored, and trailing blanks (a "\r" too) are tolerated. The
// hash is one of:
//
//   - $7$ITERATIONS$SALT$HASH: PBKDF2-HMAC-SHA512 (mosquitto_passwd's
//     default, 101 iterations), SALT 12 and HASH 64 bytes, both in standard
//     padded base64;
//   - $6$SALT$HASH: one SHA-512 over the password followed by the salt
//     (mosquitto 1.6 and earlier); accepted with a warning;
//   - bcrypt $2a$, $2b$ or $2y$ (htpasswd -B), cost at most 14.
//
// Everything is checked when the file is parsed, and the whole file is
// refused at its first bad line, so that a caller reloading a broken file can
// keep its old table. The bounds (file size, number of users, iterations and
// cost) keep a wrong or hostile file from making each login cost too much.
package passwd

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Bounds on what a file may hold.
const (
	maxFileSize   = 16 << 20
	maxUsers      = 100_000
	maxIterations = 10_000_000
	maxBcryptCost = 14
	maxUserLen    = 65535 // an MQTT string
	saltLen       = 12    // mosquitto only accepts 12-byte salts
	hashLen       = sha512.Size
)

type kind int

const (
	kindPBKDF2 kind = iota // $7$
	kindSHA512             // $6$
	kindBcrypt             // $2a$, $2b$, $2y$
	numKinds
)

// hashCalls counts the password checks of each kind, so that tests can see
// that an unknown user costs a check too.
var hashCalls [numKinds]atomic.Int64

type entry struct {
	kind kind
	iter int    // PBKDF2 iterations
	cost int    // bcrypt cost
	salt []byte // decoded; PBKDF2 and SHA-512
	hash []byte // decoded for PBKDF2 and SHA-512; the whole string for bcrypt
	line int
}

// check reports whether password matches e.
func (e *entry) check(password []byte) bool {
	hashCalls[e.kind].Add(1)
	switch e.kind {
	case kindPBKDF2:
		got, err := pbkdf2.Key(sha512.New, string(password), e.salt, e.iter, hashLen)
		return err == nil && subtle.ConstantTimeCompare(got, e.hash) == 1
	case kindSHA512:
		h := sha512.New()
		h.Write(password)
		h.Write(e.salt)
		return subtle.ConstantTimeCompare(h.Sum(nil), e.hash) == 1
	case kindBcrypt:
		return bcrypt.CompareHashAndPassword(e.hash, password) == nil
	}
	return false
}

// File is a loaded password file (immutable; safe for concurrent use).
type File struct {
	users   map[string]*entry
	names   []string // sorted
	unknown *entry   // checked for users not in the file
}

// Load reads and parses path. warnings lists one line per weak ($6$)
// entry, e.g.
//
//	passwd: FILE:LINE: user "x" uses the weak $6$ hash (one SHA-512); re-create it with mosquitto_passwd
//
// err names the file and line of the first bad line; a file over 16 MiB or
// with more than 100,000 users is refused.
func Load(path string) (f *File, warnings []string, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("passwd: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("passwd: %w", err)
	}
	return Parse(path, data)
}

// Parse parses the content of a file (name used in messages), as Load does.
func Parse(name string, data []byte) (*File, []string, error) {
	if len(data) > maxFileSize {
		return nil, nil, fmt.Errorf("passwd: %s: file is larger than 16 MiB", name)
	}
	f := &File{users: make(map[string]*entry)}
	var warnings []string
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimRight(line, " \t\r")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(string(line), ":")
		if !ok {
			return nil, nil, fmt.Errorf("passwd: %s:%d: malformed line (want user:hash)", name, n)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("passwd: %s:%d: user %.100q: %s", name, n, user, fmt.Sprintf(format, args...))
		}
		if err := checkUser(user); err != nil {
			return nil, nil, fail("%v", err)
		}
		if prev, dup := f.users[user]; dup {
			return nil, nil, fail("duplicate user (first on line %d)", prev.line)
		}
		if len(f.users) == maxUsers {
			return nil, nil, fmt.Errorf("passwd: %s:%d: more than %d users", name, n, maxUsers)
		}
		e, err := parseHash(hash)
		if err != nil {
			return nil, nil, fail("%v", err)
		}
		e.line = n
		if e.kind == kindSHA512 {
			warnings = append(warnings, fmt.Sprintf("passwd: %s:%d: user %q uses the weak $6$ hash (one SHA-512); re-create it with mosquitto_passwd", name, n, user))
		}
		user = strings.Clone(user) // not the whole line
		f.users[user] = e
		f.names = append(f.names, user)
	}
	slices.Sort(f.names)
	f.unknown = dummyFor(f.names, f.users)
	return f, warnings, nil
}

// checkUser refuses names that cannot be a single MQTT topic level.
func checkUser(user string) error {
	switch {
	case user == "":
		return errors.New("empty user name")
	case len(user) > maxUserLen:
		return fmt.Errorf("user name longer than %d bytes", maxUserLen)
	case !utf8.ValidString(user):
		return errors.New("user name is not valid UTF-8")
	}
	for _, r := range user {
		if strings.ContainsRune("+#/:", r) || r == ' ' || !unicode.IsPrint(r) {
			return fmt.Errorf("user name contains %q (whitespace, control characters, NUL, '+', '#', '/' and ':' are not allowed)", r)
		}
	}
	return nil
}

// parseHash decodes and checks one hash field.
func parseHash(h string) (*entry, error) {
	switch typ := hashType(h); typ {
	case "$7$":
		f := strings.Split(h[len(typ):], "$")
		if len(f) != 3 {
			return nil, errors.New("malformed $7$ hash (want $7$ITERATIONS$SALT$HASH)")
		}
		iter, err := strconv.Atoi(f[0])
		if err != nil || !isDigits(f[0]) || iter < 1 || iter > maxIterations {
			return nil, fmt.Errorf("$7$ iteration count %.20q is not in 1..%d", f[0], maxIterations)
		}
		salt, hash, err := decodeSaltHash(f[1], f[2])
		if err != nil {
			return nil, err
		}
		return &entry{kind: kindPBKDF2, iter: iter, salt: salt, hash: hash}, nil
	case "$6$":
		f := strings.Split(h[len(typ):], "$")
		if len(f) != 2 {
			return nil, errors.New("malformed $6$ hash (want $6$SALT$HASH)")
		}
		salt, hash, err := decodeSaltHash(f[0], f[1])
		if err != nil {
			return nil, err
		}
		return &entry{kind: kindSHA512, salt: salt, hash: hash}, nil
	case "$2a$", "$2b$", "$2y$":
		// $2y$CC$, then 22 characters of salt and 31 of hash.
		if len(h) != 60 || !isDigits(h[4:6]) || h[6] != '$' || strings.Trim(h[7:], bcryptAlphabet) != "" {
			return nil, errors.New("malformed bcrypt hash (want $2y$COST$ and 53 characters)")
		}
		cost, _ := strconv.Atoi(h[4:6])
		if cost < bcrypt.MinCost || cost > maxBcryptCost {
			return nil, fmt.Errorf("bcrypt cost %d is not in %d..%d", cost, bcrypt.MinCost, maxBcryptCost)
		}
		return &entry{kind: kindBcrypt, cost: cost, hash: []byte(h)}, nil
	case "":
		// Do not print it: it may be a password.
		return nil, errors.New("hash is not $7$, $6$ or bcrypt (a plain-text password? hash the file with mosquitto_passwd -U)")
	default:
		return nil, fmt.Errorf("unknown hash type %q", typ)
	}
}

// hashType returns the leading "$id$" of h, or "" if it has none.
func hashType(h string) string {
	if len(h) < 3 || h[0] != '$' {
		return ""
	}
	i := strings.IndexByte(h[1:], '$')
	if i < 1 || i > 16 {
		return ""
	}
	return h[:i+2]
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// decodeSaltHash decodes the salt and hash of a $7$ or $6$ entry: standard
// base64 with padding, in its canonical form (as mosquitto_passwd writes it).
func decodeSaltHash(salt64, hash64 string) (salt, hash []byte, err error) {
	salt, ok := decode64(salt64)
	if !ok || len(salt) != saltLen {
		return nil, nil, fmt.Errorf("salt is not %d bytes in base64", saltLen)
	}
	hash, ok = decode64(hash64)
	if !ok || len(hash) != hashLen {
		return nil, nil, fmt.Errorf("hash is not %d bytes in base64", hashLen)
	}
	return salt, hash, nil
}

func decode64(s string) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	// The decoder skips '\r' and '\n' and ignores unused bits: insist on
	// the one spelling of these bytes.
	return b, err == nil && base64.StdEncoding.EncodeToString(b) == s
}

// dummyFor returns the entry checked for unknown users: a fixed salt and
// hash with the parameters that most users have (the first in name order
// among equals), so that an unknown user costs what a typical known one
// does. With no users it is $7$ at mosquitto_passwd's default 101
// iterations.
func dummyFor(names []string, users map[string]*entry) *entry {
	type params struct {
		kind       kind
		iter, cost int
	}
	count := make(map[params]int)
	best, most := params{kind: kindPBKDF2, iter: 101}, 0
	for _, name := range names {
		e := users[name]
		p := params{e.kind, e.iter, e.cost}
		count[p]++
		if count[p] > most {
			best, most = p, count[p]
		}
	}
	d := &entry{kind: best.kind, iter: best.iter, cost: best.cost,
		salt: make([]byte, saltLen), hash: make([]byte, hashLen)}
	if d.kind == kindBcrypt {
		// Any well-formed hash will do: the check computes bcrypt at this
		// cost, then compares.
		d.hash = fmt.Appendf(nil, "$2y$%02d$%s", d.cost, strings.Repeat("A", 53))
	}
	return d
}

// Verify reports whether password is the user's password. Unknown users
// still cost one hash check, of a fixed dummy hash with the kind and
// parameters of the file's most common entry ($7$ at 101 iterations for an
// empty file), so that timing does not reveal which users exist. $7$ and $6$
// hashes are compared with crypto/subtle.ConstantTimeCompare (bcrypt's own
// comparison is constant-time too).
func (f *File) Verify(user string, password []byte) bool {
	e, ok := f.users[user]
	if !ok {
		e = f.unknown
	}
	return e.check(password) && ok
}

// Has reports whether user is in the file.
func (f *File) Has(user string) bool {
	_, ok := f.users[user]
	return ok
}

// Users returns the user names, sorted.
func (f *File) Users() []string {
	return slices.Clone(f.names)
}

// Len is the number of users.
func (f *File) Len() int {
	return len(f.names)
}
