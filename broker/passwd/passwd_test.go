package passwd

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Lines written by Debian 12's mosquitto_passwd 2.0.11 and htpasswd
// (apache2-utils 2.4), all for the password "secret".
const (
	golden7     = "alice:$7$101$Gk0Cd0nxJBJkuMW6$M2P2sqxkUfVD8eOF1KWel9041nbWWTwd2cqAWEkbO5MxM0Abk6OYQczuszVybsm7jt1BfdbYRCYjDiWVaUVFwA=="
	golden7I    = "alice:$7$1000$geEP2PygdBITAdP5$J7ZH06XMlsYGpKLKS31bRVRMfmm8oFNMgg/HGXeVeLqmkqPVzHK35m7P1aeOWa5AlYOqQrKkQnwgS6IxNeWNOA=="
	golden6     = "alice:$6$droh5atAaJAMIuyN$a12DzXXV+6nTrEf1jypfzOLGBEgPiwqao6NegG5zJSU0kL/EurZI9zZCQAmGcI+CqluWX91T2Z+s7yJlt2ZC5w=="
	goldenBcryp = "alice:$2y$05$WvrRbJfD9xptbsxsvgbmheM3psRo.V6u8t7CbHVDizONH57AiJvm."
)

// hash7 is the hash field of golden7.
var hash7 = strings.TrimPrefix(golden7, "alice:")

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): run `apt-get install mosquitto apache2-utils` (make test installs them)", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

func mustParse(t *testing.T, data string) (*File, []string) {
	t.Helper()
	f, warn, err := Parse("test", []byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f, warn
}

// checkPasswords verifies that each user's password is accepted and that
// wrong ones, the other users' ones and the empty one are refused.
func checkPasswords(t *testing.T, f *File, pw map[string]string) {
	t.Helper()
	for user, p := range pw {
		if !f.Verify(user, []byte(p)) {
			t.Errorf("Verify(%q, right password) = false", user)
		}
		for _, wrong := range []string{"", p + "x", strings.ToUpper(p), p[:len(p)-1]} {
			if f.Verify(user, []byte(wrong)) {
				t.Errorf("Verify(%q, %q) = true", user, wrong)
			}
		}
		for other, op := range pw {
			if op != p && f.Verify(user, []byte(op)) {
				t.Errorf("Verify(%q, password of %q) = true", user, other)
			}
		}
		if f.Verify(user+"x", []byte(p)) {
			t.Errorf("Verify(%q, password of %q) = true", user+"x", user)
		}
	}
}

// TestMosquittoPasswd checks files written by the real mosquitto_passwd and
// the facts about its format that this package relies on.
func TestMosquittoPasswd(t *testing.T) {
	dir := t.TempDir()
	pw := map[string]string{"alice": "secret", "bob": "hunter2", "carol": "pässwörd €", "dave": "x"}

	p7 := filepath.Join(dir, "p7")
	run(t, "mosquitto_passwd", "-c", "-b", p7, "alice", pw["alice"])
	run(t, "mosquitto_passwd", "-b", p7, "bob", pw["bob"])
	run(t, "mosquitto_passwd", "-b", "-I", "1000", p7, "carol", pw["carol"])
	run(t, "mosquitto_passwd", "-b", "-H", "sha512-pbkdf2", p7, "dave", pw["dave"])
	p6 := filepath.Join(dir, "p6")
	run(t, "mosquitto_passwd", "-c", "-b", "-H", "sha512", p6, "alice", pw["alice"])
	run(t, "mosquitto_passwd", "-b", "-H", "sha512", p6, "bob", pw["bob"])

	// The format: $7$ITERATIONS$SALT$HASH with 101 iterations by default,
	// a 12-byte salt and a 64-byte hash in standard padded base64.
	data, err := os.ReadFile(p7)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		user, hash, _ := strings.Cut(line, ":")
		f := strings.Split(hash, "$")
		if len(f) != 5 || f[0] != "" || f[1] != "7" {
			t.Fatalf("mosquitto_passwd wrote %q, want user:$7$ITER$SALT$HASH", line)
		}
		if want := map[bool]string{true: "1000", false: "101"}[user == "carol"]; f[2] != want {
			t.Errorf("%s: iterations %s, want %s", user, f[2], want)
		}
		salt, err1 := base64.StdEncoding.DecodeString(f[3])
		h, err2 := base64.StdEncoding.DecodeString(f[4])
		if err1 != nil || err2 != nil || len(salt) != 12 || len(h) != 64 || len(f[3]) != 16 || len(f[4]) != 88 || !strings.HasSuffix(f[4], "==") {
			t.Errorf("%s: salt %q hash %q: want 12 and 64 bytes in padded standard base64", user, f[3], f[4])
		}
	}

	f, warn, err := Load(p7)
	if err != nil {
		t.Fatal(err)
	}
	if len(warn) != 0 {
		t.Errorf("warnings for a $7$ file: %q", warn)
	}
	if got := f.Users(); !slices.Equal(got, []string{"alice", "bob", "carol", "dave"}) || f.Len() != 4 {
		t.Errorf("Users() = %q, Len() = %d", got, f.Len())
	}
	checkPasswords(t, f, pw)

	f, warn, err = Load(p6)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf(`passwd: %s:1: user "alice" uses the weak $6$ hash (one SHA-512); re-create it with mosquitto_passwd`, p6),
		fmt.Sprintf(`passwd: %s:2: user "bob" uses the weak $6$ hash (one SHA-512); re-create it with mosquitto_passwd`, p6),
	}
	if !slices.Equal(warn, want) {
		t.Errorf("warnings = %q, want %q", warn, want)
	}
	checkPasswords(t, f, map[string]string{"alice": pw["alice"], "bob": pw["bob"]})
}

func TestHtpasswd(t *testing.T) {
	long := strings.Repeat("0123456789", 8) // bcrypt uses the first 72 bytes
	pw := map[string]string{"alice": "secret", "bob": "hunter2", "carol": long}
	short := map[string]string{"alice": "secret", "bob": "hunter2"}
	var data []byte
	for _, u := range []string{"alice", "bob", "carol"} {
		data = append(data, run(t, "htpasswd", "-nbB", u, pw[u])...)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if !bytes.Contains(data, []byte(u+":$2y$05$")) {
			t.Fatalf("htpasswd -nbB wrote %q, want user:$2y$05$...", data)
		}
	}
	f, warn := mustParse(t, string(data))
	if len(warn) != 0 || f.Len() != 3 {
		t.Errorf("Len() = %d, warnings %q", f.Len(), warn)
	}
	checkPasswords(t, f, short)
	// bcrypt uses the first 72 bytes only, in htpasswd and here.
	if !f.Verify("carol", []byte(long)) || !f.Verify("carol", []byte(long[:72]+"x")) {
		t.Error("bcrypt: a password of more than 72 bytes refused")
	}
	if f.Verify("carol", []byte(long[:71])) || f.Verify("carol", []byte("x"+long[1:])) || f.Verify("alice", []byte(long)) {
		t.Error("bcrypt: a wrong password accepted")
	}

	// Other bcrypt versions.
	for _, v := range []string{"$2a$", "$2b$"} {
		h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		line := "u:" + v + string(h[4:])
		f, _ := mustParse(t, line)
		if !f.Verify("u", []byte("pw")) || f.Verify("u", []byte("pW")) {
			t.Errorf("%s: Verify wrong", line)
		}
	}
}

func TestGolden(t *testing.T) {
	f, warn := mustParse(t, strings.Join([]string{
		"# written by mosquitto_passwd and htpasswd",
		golden7,
		strings.Replace(golden7I, "alice", "bob", 1),
		strings.Replace(golden6, "alice", "carol", 1),
		strings.Replace(goldenBcryp, "alice", "dave", 1),
	}, "\r\n")+"\r\n")
	if len(warn) != 1 || !strings.Contains(warn[0], `test:4: user "carol" uses the weak $6$ hash`) {
		t.Errorf("warnings %q", warn)
	}
	for _, u := range f.Users() {
		if !f.Verify(u, []byte("secret")) || f.Verify(u, []byte("secreT")) {
			t.Errorf("%s: Verify wrong", u)
		}
	}
}

// pbkdf2SHA512 is PBKDF2 (RFC 8018 section 5.2) with HMAC-SHA512, written
// out here to check the package's use of crypto/pbkdf2.
func pbkdf2SHA512(password, salt []byte, iter, n int) []byte {
	var out []byte
	for block := uint32(1); len(out) < n; block++ {
		mac := hmac.New(sha512.New, password)
		mac.Write(salt)
		mac.Write(binary.BigEndian.AppendUint32(nil, block))
		u := mac.Sum(nil)
		t := slices.Clone(u)
		for range iter - 1 {
			mac.Reset()
			mac.Write(u)
			u = mac.Sum(u[:0])
			for j := range t {
				t[j] ^= u[j]
			}
		}
		out = append(out, t...)
	}
	return out[:n]
}

func TestKnownAnswer(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	salt := []byte("0123456789ab")

	// The hand-written PBKDF2 and SHA-512 give mosquitto_passwd's hashes.
	for _, line := range []string{golden7, golden7I} {
		f := strings.Split(line, "$")
		s, _ := base64.StdEncoding.DecodeString(f[3])
		iter := map[string]int{"101": 101, "1000": 1000}[f[2]]
		if got := b64(pbkdf2SHA512([]byte("secret"), s, iter, 64)); got != f[4] {
			t.Errorf("PBKDF2 of %s = %s", line, got)
		}
	}
	f6 := strings.Split(golden6, "$")
	s6, _ := base64.StdEncoding.DecodeString(f6[2])
	if sum := sha512.Sum512(append([]byte("secret"), s6...)); b64(sum[:]) != f6[3] {
		t.Errorf("SHA-512 of %s = %s", golden6, b64(sum[:]))
	}

	for _, tc := range []struct {
		pw   string
		iter int
	}{{"secret", 1}, {"secret", 2}, {"", 101}, {"pässwörd", 1000}, {strings.Repeat("long", 100), 7}} {
		line := fmt.Sprintf("u:$7$%d$%s$%s", tc.iter, b64(salt), b64(pbkdf2SHA512([]byte(tc.pw), salt, tc.iter, 64)))
		f, _ := mustParse(t, line)
		if !f.Verify("u", []byte(tc.pw)) || f.Verify("u", []byte(tc.pw+"!")) {
			t.Errorf("%s (password %q): Verify wrong", line, tc.pw)
		}
		// A different iteration count is a different hash.
		other := strings.Replace(line, fmt.Sprintf("$7$%d$", tc.iter), fmt.Sprintf("$7$%d$", tc.iter+1), 1)
		if f, _ := mustParse(t, other); f.Verify("u", []byte(tc.pw)) {
			t.Errorf("%s: accepted with the wrong iteration count", other)
		}
	}

	for _, pw := range []string{"secret", "", "pässwörd"} {
		sum := sha512.Sum512(append([]byte(pw), salt...))
		line := fmt.Sprintf("u:$6$%s$%s", b64(salt), b64(sum[:]))
		f, warn := mustParse(t, line)
		if !f.Verify("u", []byte(pw)) || f.Verify("u", []byte(pw+"!")) || len(warn) != 1 {
			t.Errorf("%s (password %q): Verify wrong or warnings %q", line, pw, warn)
		}
		// The salt goes after the password, not before.
		sum = sha512.Sum512(append(slices.Clone(salt), pw...))
		if f, _ := mustParse(t, fmt.Sprintf("u:$6$%s$%s", b64(salt), b64(sum[:]))); pw != "" && f.Verify("u", []byte(pw)) {
			t.Errorf("$6$ with salt first accepted")
		}
	}

	// Verify does not write into the caller's password.
	pw := make([]byte, 6, 64)
	copy(pw, "secret")
	f, _ := mustParse(t, golden6)
	before := slices.Clone(pw[:cap(pw)])
	if !f.Verify("alice", pw) || !bytes.Equal(pw[:cap(pw)], before) {
		t.Error("Verify changed the password's backing array")
	}
}

func TestAccepted(t *testing.T) {
	for _, data := range []string{
		"",
		"\n\n",
		"# only a comment\n",
		golden7,
		golden7 + "   \t\r\n",
		"\r\n" + golden7 + "\r\n#x\r\n",
		"Ünïcødé-user_1.2@x:" + hash7,
		"u:" + strings.Replace(hash7, "$101$", "$10000000$", 1),
		"u:" + strings.Replace(hash7, "$101$", "$1$", 1),
		"u:$2y$14$" + strings.Repeat("A", 53),
		"u:$2b$04$" + strings.Repeat("A", 53),
	} {
		if _, _, err := Parse("test", []byte(data)); err != nil {
			t.Errorf("Parse(%q): %v", data, err)
		}
	}
}

func TestRejected(t *testing.T) {
	const name = "/etc/splitpoint/passwd"
	b64 := base64.StdEncoding.EncodeToString
	salt12, hash64 := b64(make([]byte, 12)), b64(make([]byte, 64))
	bad := func(chr rune) string {
		return fmt.Sprintf("user name contains %q (whitespace, control characters, NUL, '+', '#', '/' and ':' are not allowed)", chr)
	}
	const notHash = "hash is not $7$, $6$ or bcrypt (a plain-text password? hash the file with mosquitto_passwd -U)"
	saltErr, hashErr := "salt is not 12 bytes in base64", "hash is not 64 bytes in base64"
	for _, tc := range []struct{ line, want string }{
		{"pi1:$5$abc$def", `user "pi1": unknown hash type "$5$"`},
		{"pi1:$argon2id$v=19$m=65536", `user "pi1": unknown hash type "$argon2id$"`},
		{"pi1:$2x$05$" + strings.Repeat("A", 53), `user "pi1": unknown hash type "$2x$"`},
		{"pi1:secret", `user "pi1": ` + notHash},
		{"pi1:", `user "pi1": ` + notHash},
		{"pi1:$$", `user "pi1": ` + notHash},
		{"no colon here", "malformed line (want user:hash)"},
		{"alice:" + hash7, `user "alice": duplicate user (first on line 2)`},
		{":" + hash7, `user "": empty user name`},
		{"a+b:" + hash7, `user "a+b": ` + bad('+')},
		{"a#b:" + hash7, `user "a#b": ` + bad('#')},
		{"a/b:" + hash7, `user "a/b": ` + bad('/')},
		{"a b:" + hash7, `user "a b": ` + bad(' ')},
		{" a:" + hash7, `user " a": ` + bad(' ')},
		{"a\tb:" + hash7, `user "a\tb": ` + bad('\t')},
		{"a\x00b:" + hash7, `user "a\x00b": ` + bad('\x00')},
		{"a\u00a0b:" + hash7, `user "a\u00a0b": ` + bad('\u00a0')},
		{"\ufeffa:" + hash7, `user "\ufeffa": ` + bad('\ufeff')},
		{"a\xffb:" + hash7, `user "a\xffb": user name is not valid UTF-8`},
		{strings.Repeat("a", 65536) + ":" + hash7, fmt.Sprintf("user %q: user name longer than 65535 bytes", strings.Repeat("a", 100))},
		// The user name ends at the first ':', so a ':' in a name leaves a
		// line whose hash is wrong.
		{"a:b:" + hash7, `user "a": ` + notHash},
		{"u:$7$0$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "0" is not in 1..10000000`},
		{"u:$7$10000001$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "10000001" is not in 1..10000000`},
		{"u:$7$99999999999999999999999$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "99999999999999999999" is not in 1..10000000`},
		{"u:$7$-5$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "-5" is not in 1..10000000`},
		{"u:$7$+5$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "+5" is not in 1..10000000`},
		{"u:$7$$" + salt12 + "$" + hash64, `user "u": $7$ iteration count "" is not in 1..10000000`},
		{"u:$7$101$" + salt12, `user "u": malformed $7$ hash (want $7$ITERATIONS$SALT$HASH)`},
		{"u:$7$101$" + salt12 + "$" + hash64 + "$", `user "u": malformed $7$ hash (want $7$ITERATIONS$SALT$HASH)`},
		{"u:$7$101$" + b64(make([]byte, 16)) + "$" + hash64, `user "u": ` + saltErr},
		{"u:$7$101$" + b64(make([]byte, 11)) + "$" + hash64, `user "u": ` + saltErr},
		{"u:$7$101$" + "!!!!AAAAAAAAAAAA" + "$" + hash64, `user "u": ` + saltErr},
		{"u:$7$101$" + "AAAAAAAA\rAAAAAAA" + "$" + hash64, `user "u": ` + saltErr},
		{"u:$7$101$" + salt12 + "$" + strings.TrimRight(hash64, "="), `user "u": ` + hashErr},
		{"u:$7$101$" + salt12 + "$" + b64(make([]byte, 63)), `user "u": ` + hashErr},
		{"u:$7$101$" + salt12 + "$" + b64(make([]byte, 65)), `user "u": ` + hashErr},
		{"u:$7$101$" + salt12 + "$" + strings.ReplaceAll(hash64, "A", "-"), `user "u": ` + hashErr},
		{"u:$7$101$" + salt12 + "$" + hash64[:84] + "AB==", `user "u": ` + hashErr}, // unused bits set
		{"u:$6$" + salt12, `user "u": malformed $6$ hash (want $6$SALT$HASH)`},
		{"u:$6$" + salt12 + "$" + b64(make([]byte, 32)), `user "u": ` + hashErr},
		{"u:$6$" + b64(make([]byte, 8)) + "$" + hash64, `user "u": ` + saltErr},
		{"u:$2y$15$" + strings.Repeat("A", 53), `user "u": bcrypt cost 15 is not in 4..14`},
		{"u:$2y$31$" + strings.Repeat("A", 53), `user "u": bcrypt cost 31 is not in 4..14`},
		{"u:$2y$03$" + strings.Repeat("A", 53), `user "u": bcrypt cost 3 is not in 4..14`},
		{"u:$2y$05$" + strings.Repeat("A", 52), `user "u": malformed bcrypt hash (want $2y$COST$ and 53 characters)`},
		{"u:$2y$05$" + strings.Repeat("A", 54), `user "u": malformed bcrypt hash (want $2y$COST$ and 53 characters)`},
		{"u:$2y$05$" + strings.Repeat("+", 53), `user "u": malformed bcrypt hash (want $2y$COST$ and 53 characters)`},
		{"u:$2y$+5$" + strings.Repeat("A", 53), `user "u": malformed bcrypt hash (want $2y$COST$ and 53 characters)`},
		{"u:$2y$05x" + strings.Repeat("A", 53), `user "u": malformed bcrypt hash (want $2y$COST$ and 53 characters)`},
	} {
		// Line 3 is the bad one, after a good line that is not a user's.
		data := "# users\n" + golden7 + "\n" + tc.line + "\nzed:" + hash7 + "\n"
		want := name + ":3: " + tc.want
		f, warn, err := Parse(name, []byte(data))
		if err == nil || err.Error() != "passwd: "+want || f != nil || warn != nil {
			t.Errorf("Parse(%.80q):\n got %v\nwant passwd: %s", tc.line, err, want)
		}
	}
	// The duplicate's first line is named.
	_, _, err := Parse(name, []byte("\n\nalice:"+hash7+"\n#\nbob:"+hash7+"\nalice:"+hash7))
	if want := `passwd: /etc/splitpoint/passwd:6: user "alice": duplicate user (first on line 3)`; err == nil || err.Error() != want {
		t.Errorf("duplicate: got %v, want %s", err, want)
	}
	// A password is not echoed.
	_, _, err = Parse(name, []byte("u:Tr0ub4dor&3"))
	if err == nil || strings.Contains(err.Error(), "Tr0ub4dor") {
		t.Errorf("plain-text password: %v", err)
	}
}

func TestSizeBounds(t *testing.T) {
	line := func(i int) string { return fmt.Sprintf("user%d:%s\n", i, hash7) }
	var b strings.Builder
	for i := range 100_000 {
		b.WriteString(line(i))
	}
	f, _, err := Parse("big", []byte(b.String()))
	if err != nil || f.Len() != 100_000 || !f.Has("user99999") || f.Has("user100000") {
		t.Fatalf("100000 users: %v", err)
	}
	b.WriteString("# comment\n")
	b.WriteString(line(100_000))
	if _, _, err := Parse("big", []byte(b.String())); err == nil || err.Error() != "passwd: big:100002: more than 100000 users" {
		t.Errorf("100001 users: %v", err)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "huge")
	data := []byte(golden7 + "\n" + strings.Repeat("#", 16<<20-len(golden7)-1))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if f, _, err := Load(path); err != nil || f.Len() != 1 {
		t.Errorf("16 MiB file: %v", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || err.Error() != "passwd: "+path+": file is larger than 16 MiB" {
		t.Errorf("16 MiB + 1 file: %v", err)
	}
	if _, _, err := Load(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "passwd: open "+dir) {
		t.Errorf("missing file: %v", err)
	}
}

// TestUnknownUser checks that an unknown user costs one check of the kind
// and parameters of the file's typical entry.
func TestUnknownUser(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	salt := make([]byte, 12)
	line7 := func(user string, iter int) string {
		return fmt.Sprintf("%s:$7$%d$%s$%s\n", user, iter, b64(salt), b64(pbkdf2SHA512([]byte("pw"), salt, iter, 64)))
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("pw"), 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, data string
		kind       kind
		iter, cost int
	}{
		{"empty", "", kindPBKDF2, 101, 0},
		{"pbkdf2", line7("a", 1000) + line7("b", 1000) + line7("c", 50), kindPBKDF2, 1000, 0},
		{"sha512", strings.Replace(golden6, "alice", "a", 1) + "\n" + line7("b", 3), kindSHA512, 0, 0},
		{"bcrypt", "a:" + string(bc) + "\nb:" + string(bc) + "\n" + line7("c", 3), kindBcrypt, 0, 5},
	} {
		f, _ := mustParse(t, tc.data)
		d := f.unknown
		if d.kind != tc.kind || d.iter != tc.iter || d.cost != tc.cost {
			t.Errorf("%s: dummy is kind %d iter %d cost %d, want %d %d %d", tc.name, d.kind, d.iter, d.cost, tc.kind, tc.iter, tc.cost)
		}
		var before [numKinds]int64
		for k := range before {
			before[k] = hashCalls[k].Load()
		}
		for _, pw := range []string{"pw", "", "secret"} {
			if f.Verify("nobody", []byte(pw)) || f.Has("nobody") {
				t.Errorf("%s: unknown user accepted", tc.name)
			}
		}
		for k := range before {
			want := int64(0)
			if kind(k) == tc.kind {
				want = 3
			}
			if got := hashCalls[k].Load() - before[k]; got != want {
				t.Errorf("%s: %d checks of kind %d for 3 unknown-user Verify calls, want %d", tc.name, got, k, want)
			}
		}
		// The known users cost the same one check.
		if tc.name != "empty" {
			n := hashCalls[tc.kind].Load()
			if !f.Verify("a", []byte("pw")) && tc.kind != kindSHA512 {
				t.Errorf("%s: a's password refused", tc.name)
			}
			if got := hashCalls[tc.kind].Load() - n; got != 1 {
				t.Errorf("%s: %d checks for a known user", tc.name, got)
			}
		}
	}
}

func TestConcurrentVerify(t *testing.T) {
	f, _ := mustParse(t, golden7+"\n"+strings.Replace(golden6, "alice", "bob", 1))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				user := []string{"alice", "bob", "carol"}[i%3]
				if f.Verify(user, []byte("secret")) != (user != "carol") || f.Verify(user, []byte("x")) {
					t.Errorf("Verify(%q) wrong", user)
				}
				_ = f.Users()
			}
		}()
	}
	wg.Wait()
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "#\n\n", golden7, golden7I + "\r\n", golden6, goldenBcryp,
		"a:b", "a:$7$1$$", "a:$6$$", "a:$2y$05$", ":\n:", "a b:$7$101$x$y",
		golden7 + "\n" + golden7,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, warn, err := Parse("fuzz", data)
		if err != nil {
			if file != nil || warn != nil || !strings.HasPrefix(err.Error(), "passwd: fuzz") {
				t.Fatalf("error %v with file %v warnings %q", err, file, warn)
			}
			return
		}
		users := file.Users()
		if len(users) != file.Len() || !slices.IsSorted(users) {
			t.Fatalf("Users() = %q, Len() = %d", users, file.Len())
		}
		for _, u := range users {
			if !file.Has(u) {
				t.Fatalf("Has(%q) = false", u)
			}
		}
	})
}
