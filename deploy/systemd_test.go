package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binaries = []string{"gateway", "device", "cloudproc"}
	// configs maps each binary to its shipped config, configs/<name>.toml.
	configs = map[string]string{"gateway": "gateway", "device": "pi", "cloudproc": "cloud"}
)

// moduleRoot is the directory of the go.mod of the module under test.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not inside a module (%q)", gomod)
	}
	return filepath.Dir(gomod)
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// TestMain removes the binaries that buildBinaries built.
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinaries builds gateway, device and cloudproc, once for all the
// tests, into a temporary directory (not the repository's bin/) and
// returns it.
func buildBinaries(t *testing.T, root string) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "splitpoint-deploy-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		args := []string{"build", "-o", dir + "/"}
		for _, b := range binaries {
			args = append(args, "./cmd/"+b)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// makeInstall runs the Makefile's install target with the variables vars
// (given on the command line, so they override the environment) and returns
// its output. SUDO is emptied: everything is written under temporary
// directories, also when the test does not run as root.
func makeInstall(t *testing.T, root string, vars ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make not found: apt-get install make")
	}
	args := append([]string{"--no-print-directory", "-C", root, "install", "SUDO="}, vars...)
	cmd := exec.Command("make", args...)
	// Variables of an outer make (make test FOO=…) travel in MAKEFLAGS and
	// must not leak into this one.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install %s: %v\n%s", strings.Join(vars, " "), err, out)
	}
	return string(out)
}

// systemdAnalyze returns the path of systemd-analyze, failing the test
// (not skipping it) when it is missing.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: apt-get install systemd (Debian's package systemd provides it; make test installs it)")
	}
	return p
}

// verifyUnit runs `systemd-analyze verify` on the unit file at path. It
// fails when the command fails (e.g. ExecStart names a file that is not
// executable) and also when it prints anything: an unknown or misspelt
// directive is only a warning ("Unknown key 'X' in section [Service],
// ignoring.") with exit status 0.
//
// What systemd-analyze 252 (Debian 12) does in a container without systemd
// as PID 1, as root: it loads the unit offline, with no complaint about
// the user splitpoint that does not exist (User= is resolved only when the
// service starts), about network-online.target (it is found in
// /lib/systemd/system) or about After= on a unit that is not installed. So
// no message needs to be filtered out, and none is.
func verifyUnit(analyze, path string) error {
	cmd := exec.Command(analyze, "verify", path)
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	msg := strings.TrimSpace(string(out))
	switch {
	case err != nil:
		return fmt.Errorf("systemd-analyze verify %s: %v\n%s", path, err, msg)
	case msg != "":
		return fmt.Errorf("systemd-analyze verify %s: exit status 0 but warnings:\n%s", path, msg)
	}
	return nil
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkFile(t *testing.T, path string, mode os.FileMode, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("not installed: %v", err)
		return
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	if want != nil && !bytes.Equal(readFile(t, path), want) {
		t.Errorf("%s differs from its source", path)
	}
}

// TestMakeInstall installs with the defaults (PREFIX=/usr/local,
// SYSCONFDIR=/etc, UNITDIR=/etc/systemd/system) into a DESTDIR and checks
// every file, its mode, that the checked-in units are installed unchanged,
// and that a config already there is never overwritten.
func TestMakeInstall(t *testing.T) {
	root := moduleRoot(t)
	bin := buildBinaries(t, root)
	dest := t.TempDir()
	out := makeInstall(t, root, "DESTDIR="+dest, "BINSRC="+bin,
		"PREFIX=/usr/local", "SYSCONFDIR=/etc", "UNITDIR=/etc/systemd/system")

	for _, b := range binaries {
		checkFile(t, filepath.Join(dest, "usr/local/bin", b), 0o755, readFile(t, filepath.Join(bin, b)))
		c := configs[b]
		checkFile(t, filepath.Join(dest, "etc/splitpoint", c+".toml"), 0o640, readFile(t, filepath.Join(root, "configs", c+".toml")))
		unit := "splitpoint-" + b + ".service"
		checkFile(t, filepath.Join(dest, "etc/systemd/system", unit), 0o644, readFile(t, filepath.Join(root, "deploy/systemd", unit)))
	}
	for _, want := range []string{
		"useradd --system --no-create-home --shell /usr/sbin/nologin --groups video splitpoint",
		"chgrp splitpoint /etc/splitpoint/gateway.toml /etc/splitpoint/pi.toml /etc/splitpoint/cloud.toml",
		"systemctl daemon-reload && systemctl enable --now splitpoint-gateway",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("make install does not print %q:\n%s", want, out)
		}
	}

	// A second install keeps the user's config and says so.
	mine := filepath.Join(dest, "etc/splitpoint/pi.toml")
	if err := os.WriteFile(mine, []byte("id = \"kitchen\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(mine, 0o600); err != nil {
		t.Fatal(err)
	}
	out = makeInstall(t, root, "DESTDIR="+dest, "BINSRC="+bin)
	checkFile(t, mine, 0o600, []byte("id = \"kitchen\"\n"))
	if !strings.Contains(out, "keeping "+mine) {
		t.Errorf("make install does not say it kept %s:\n%s", mine, out)
	}
}

// TestUnitsVerify installs with every path under a temporary directory
// (DESTDIR empty), so that the installed units' ExecStart names the
// binaries and configs just built and installed, and runs
// `systemd-analyze verify` on each. It then checks that verify does catch
// a missing binary and a misspelt directive, so that this test can fail.
func TestUnitsVerify(t *testing.T) {
	analyze := systemdAnalyze(t)
	root := moduleRoot(t)
	bin := buildBinaries(t, root)
	tmp := t.TempDir()
	prefix, sysconf, unitdir := filepath.Join(tmp, "usr"), filepath.Join(tmp, "etc"), filepath.Join(tmp, "units")
	makeInstall(t, root, "DESTDIR=", "BINSRC="+bin, "PREFIX="+prefix, "SYSCONFDIR="+sysconf, "UNITDIR="+unitdir)

	for _, b := range binaries {
		path := filepath.Join(unitdir, "splitpoint-"+b+".service")
		unit := string(readFile(t, path))
		want := fmt.Sprintf("\nExecStart=%s/bin/%s -c %s/splitpoint/%s.toml\n", prefix, b, sysconf, configs[b])
		if !strings.Contains(unit, want) {
			t.Errorf("%s: no line %q:\n%s", path, strings.TrimSpace(want), unit)
		}
		if err := verifyUnit(analyze, path); err != nil {
			t.Error(err)
		}
	}

	// The same gateway unit with ExecStart naming a binary that is not there.
	gw := string(readFile(t, filepath.Join(unitdir, "splitpoint-gateway.service")))
	bad := t.TempDir()
	missing := filepath.Join(prefix, "bin", "no-such-gateway")
	path := filepath.Join(bad, "splitpoint-gateway.service")
	if err := os.WriteFile(path, []byte(strings.Replace(gw, filepath.Join(prefix, "bin", "gateway"), missing, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	err := verifyUnit(analyze, path)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("verify of a unit whose ExecStart is missing: got %v, want an error naming %s", err, missing)
	}

	// A misspelt directive: systemd only warns, and verifyUnit fails.
	path = filepath.Join(bad, "splitpoint-device.service")
	dev := string(readFile(t, filepath.Join(unitdir, "splitpoint-device.service")))
	if err := os.WriteFile(path, []byte(strings.Replace(dev, "ProtectSystem=strict", "ProtectSystm=strict", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	err = verifyUnit(analyze, path)
	if err == nil || !strings.Contains(err.Error(), "ProtectSystm") {
		t.Errorf("verify of a unit with a misspelt directive: got %v, want an error naming ProtectSystm", err)
	}
}

// directives parses a unit file into section.Key → values (a key may
// repeat), ignoring comments and blank lines.
func directives(t *testing.T, path string) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a directive: %q", path, line)
			}
			m[section+"."+k] = append(m[section+"."+k], v)
		}
	}
	return m
}

// TestUnitsPolicy checks the checked-in units for what the deployment
// promises: the service user, restarts, ordering, journald, the hardening,
// and the device's access to /dev/video*.
func TestUnitsPolicy(t *testing.T) {
	root := moduleRoot(t)
	common := map[string]string{
		"Unit.Wants":                    "network-online.target",
		"Service.User":                  "splitpoint",
		"Service.Group":                 "splitpoint",
		"Service.Restart":               "on-failure",
		"Service.RestartSec":            "5",
		"Service.NoNewPrivileges":       "yes",
		"Service.ProtectSystem":         "strict",
		"Service.ProtectHome":           "yes",
		"Service.PrivateTmp":            "yes",
		"Service.ProtectKernelTunables": "yes",
		"Service.ProtectControlGroups":  "yes",
		"Service.RestrictSUIDSGID":      "yes",
		"Service.LockPersonality":       "yes",
		"Install.WantedBy":              "multi-user.target",
	}
	extra := map[string]map[string]string{
		"gateway": {
			"Service.ExecReload":        "/bin/kill -HUP $MAINPID",
			"Service.StateDirectory":    "splitpoint",
			"Service.PrivateDevices":    "yes",
			"Service.LimitNOFILE":       "65536",
			"Service.ReadWritePaths":    "",
			"Service.StandardOutput":    "",
			"Service.StandardError":     "",
			"Unit.Requires":             "",
			"Service.DeviceAllow":       "",
			"Service.ProtectClock":      "",
			"Service.ReadOnlyPaths":     "",
			"Service.InaccessiblePaths": "",
		},
		"device": {
			"Service.SupplementaryGroups": "video",
			"Service.PrivateDevices":      "",
			"Service.DevicePolicy":        "",
			"Service.DeviceAllow":         "",
			"Service.ProtectClock":        "",
			"Service.ExecReload":          "",
			"Service.ReadWritePaths":      "",
			"Service.StandardOutput":      "",
			"Service.StandardError":       "",
			"Unit.Requires":               "",
			"Unit.BindsTo":                "",
		},
		"cloudproc": {
			"Service.PrivateDevices": "yes",
			"Service.ExecReload":     "",
			"Service.ReadWritePaths": "",
			"Service.StandardOutput": "",
			"Service.StandardError":  "",
			"Unit.Requires":          "",
		},
	}
	for _, b := range binaries {
		path := filepath.Join(root, "deploy/systemd", "splitpoint-"+b+".service")
		d := directives(t, path)
		want := map[string]string{
			"Service.ExecStart": fmt.Sprintf("/usr/local/bin/%s -c /etc/splitpoint/%s.toml", b, configs[b]),
		}
		for k, v := range common {
			want[k] = v
		}
		for k, v := range extra[b] {
			want[k] = v
		}
		for k, v := range want {
			got := strings.Join(d[k], " | ")
			if got != v {
				t.Errorf("%s: %s = %q, want %q", filepath.Base(path), k, got, v)
			}
		}
		// After= orders only: network-online.target, and the gateway when
		// it runs on the same host.
		after := strings.Fields(strings.Join(d["Unit.After"], " "))
		if len(after) == 0 || after[0] != "network-online.target" {
			t.Errorf("%s: After = %q, want network-online.target first", filepath.Base(path), after)
		}
	}
}

// TestInstalledBinariesLogFormat runs the installed binaries with their
// installed configs changed to an invalid log_format (each must exit 2 with
// one line naming the file, the line and the field) and the gateway with
// log_format = "json" (each line of its log must be a JSON object with
// level, msg and app).
func TestInstalledBinariesLogFormat(t *testing.T) {
	root := moduleRoot(t)
	bin := buildBinaries(t, root)
	dest := t.TempDir()
	makeInstall(t, root, "DESTDIR="+dest, "BINSRC="+bin)

	line := regexp.MustCompile(`(?m)^log_format = "text".*$`)
	for _, b := range binaries {
		cfg := readFile(t, filepath.Join(dest, "etc/splitpoint", configs[b]+".toml"))
		if !line.Match(cfg) {
			t.Fatalf("%s.toml has no log_format = \"text\" line", configs[b])
		}
		path := filepath.Join(t.TempDir(), configs[b]+".toml")
		if err := os.WriteFile(path, line.ReplaceAll(cfg, []byte(`log_format = "xml"`)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(dest, "usr/local/bin", b), "-c", path).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s with log_format = \"xml\": %v, want exit status 2\n%s", b, err, out)
		}
		want := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `:\d+: log_format: "xml" is not a log format \(allowed: text, json\)\n$`)
		if !want.Match(out) {
			t.Errorf("%s with log_format = \"xml\" printed %q, want %v", b, out, want)
		}
	}

	cfg := readFile(t, filepath.Join(dest, "etc/splitpoint/gateway.toml"))
	path := filepath.Join(t.TempDir(), "gateway.toml")
	if err := os.WriteFile(path, line.ReplaceAll(cfg, []byte(`log_format = "json"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dest, "usr/local/bin/gateway"), "-c", path, "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	timer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	sc := bufio.NewScanner(stderr)
	started := false
	for n := 0; sc.Scan(); n++ {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("gateway log line %d is not JSON: %v\n%s", n+1, err, sc.Text())
		}
		if rec["level"] == nil || rec["msg"] == nil || rec["app"] != "gateway" {
			t.Fatalf("gateway log line %d lacks level, msg or app=gateway: %s", n+1, sc.Text())
		}
		if rec["msg"] == "gateway started" {
			started = true
			break
		}
	}
	if !started {
		t.Fatal("the gateway never logged \"gateway started\"")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		if !json.Valid(sc.Bytes()) {
			t.Errorf("gateway log line after SIGTERM is not JSON: %s", sc.Text())
		}
	}
}
