package testutil

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// WritePasswd writes a mosquitto password file ($7$ lines, 101 PBKDF2
// iterations like mosquitto_passwd's default) with users (name →
// password), mode 0600, and returns its path.
func WritePasswd(t testing.TB, users map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		salt := make([]byte, 12)
		_, _ = rand.Read(salt)
		key, err := pbkdf2.Key(sha512.New, users[u], salt, 101, 64)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":$7$101$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(key) + "\n")
	}
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
