package mqttc

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Credentials are the login and TLS settings every splitpoint client's
// config shares (device, cloudproc, the gateway's bridge). Their TOML keys
// sit at the top level of the config file.
type Credentials struct {
	// Username is the MQTT user name ("" : none; a device defaults to its
	// id).
	Username string `toml:"username"`
	// PasswordFile holds the password (its first line; a trailing newline
	// is ignored), so that no secret sits on a command line or in a
	// config file others may read. A warning is logged when the file is
	// readable by group or others.
	PasswordFile string `toml:"password_file"`
	// CAFile holds the CA certificates (PEM) the broker's certificate is
	// verified against; "" uses the system's CAs.
	CAFile string `toml:"ca_file"`
	// CertFile and KeyFile hold a client certificate and its key (PEM) for
	// mutual TLS: the certificate's CN is the identity.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// maxPasswordFileBytes bounds the password file a client reads.
const maxPasswordFileBytes = 4096

// Check validates the settings against the broker URL: it returns the
// offending key and why, or "" and nil. Files are only read by Load.
func (c Credentials) Check(broker string) (key string, err error) {
	tlsURL := IsTLS(broker)
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return "cert_file", errors.New("cert_file and key_file go together")
	case !tlsURL && (c.CAFile != "" || c.CertFile != ""):
		k := "ca_file"
		if c.CAFile == "" {
			k = "cert_file"
		}
		return k, fmt.Errorf("needs a TLS broker URL (ssl://, tls:// or mqtts://host:port), not %s", broker)
	case c.PasswordFile != "" && c.Username == "":
		return "password_file", errors.New("a password needs a username")
	}
	return "", nil
}

// Load reads the password file and the TLS files. tlsConfig is nil for a
// plain broker URL. warnings say what is unsafe but allowed (a password
// file others can read).
func (c Credentials) Load(broker string) (password string, tlsConfig *tls.Config, warnings []string, err error) {
	if c.PasswordFile != "" {
		fi, err := os.Stat(c.PasswordFile)
		if err != nil {
			return "", nil, nil, fmt.Errorf("password_file: %w", err)
		}
		if fi.Size() > maxPasswordFileBytes {
			return "", nil, nil, fmt.Errorf("password_file: %s is larger than %d bytes: not a password file", c.PasswordFile, maxPasswordFileBytes)
		}
		if fi.Mode().Perm()&0o044 != 0 {
			warnings = append(warnings, fmt.Sprintf("password_file %s is readable by group or others (mode %04o): chmod 600 it", c.PasswordFile, fi.Mode().Perm()))
		}
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", nil, nil, fmt.Errorf("password_file: %w", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimSuffix(password, "\r")
		if password == "" {
			return "", nil, nil, fmt.Errorf("password_file: %s: the first line is empty", c.PasswordFile)
		}
	}
	if !IsTLS(broker) {
		return password, nil, warnings, nil
	}
	tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return "", nil, nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, nil, fmt.Errorf("ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return "", nil, nil, fmt.Errorf("cert_file: %w", err)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	}
	return password, tlsConfig, warnings, nil
}
