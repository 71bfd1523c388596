package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type sub struct {
	Slowdown float64 `toml:"slowdown"`
}

type testCfg struct {
	Name  string   `toml:"name"`
	Count int      `toml:"count"`
	Wait  Duration `toml:"wait"`
	Sub   sub      `toml:"sub"`
}

func load(t *testing.T, body string) (*testCfg, *File, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &testCfg{Count: 1}
	f, err := Load(p, c, "opts")
	return c, f, err
}

func TestLoadErrorsAreOneLineWithPlace(t *testing.T) {
	for body, want := range map[string]string{
		"name = \"a\"\ncont = 2\n":     "x.toml:2: cont: unknown field (allowed: [opts], count, name, sub, wait)",
		"count = \"2\"\n":              "x.toml:1: count: must be an integer (got a string)",
		"\n\n[sub]\nslowdown = true\n": "x.toml:4: sub.slowdown: must be a float (got a boolean)",
		"[sub]\nfast = 1\n":            "x.toml:2: sub.fast: unknown field in [sub] (allowed: slowdown)",
		"wait = \"soon\"\n":            `x.toml:1: wait:`,
		"name = \"a\nb\"\n":            "x.toml:1: name:",
		"[sub]\n[sub]\n":               "x.toml:2:",
	} {
		_, _, err := load(t, body)
		if err == nil {
			t.Errorf("%q loaded", body)
			continue
		}
		got := err.Error()
		if !strings.Contains(got, want) || strings.Contains(got, "\n") {
			t.Errorf("%q:\n got %q\nwant one line containing %q", body, got, want)
		}
	}
}

func TestLocateNamesFileLineOrFlag(t *testing.T) {
	c, f, err := load(t, "name = \"a\"\n\n[sub]\nslowdown = 0.5\n[opts]\nx = 1\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Sub.Slowdown != 0.5 || c.Count != 1 {
		t.Errorf("decoded %+v", c)
	}
	if got := f.Locate(Errorf("sub.slowdown", "too small")).Error(); !strings.HasSuffix(got, "x.toml:4: sub.slowdown: too small") {
		t.Errorf("got %q", got)
	}
	if got := f.Locate(Errorf("count", "bad")).Error(); !strings.HasSuffix(got, "x.toml: count: bad") {
		t.Errorf("a default value's error: %q", got)
	}
	f.SetByFlag("count", "count")
	if got := f.Locate(Errorf("count", "bad")).Error(); got != "flag --count: count: bad" {
		t.Errorf("got %q", got)
	}
	var o struct {
		X int `toml:"x"`
	}
	if err := f.DecodeTable("opts", &o); err != nil || o.X != 1 {
		t.Errorf("table: %+v %v", o, err)
	}
	var strict struct{}
	if err := f.DecodeTable("opts", &strict); err == nil || !strings.Contains(err.Error(), "x.toml:6: opts.x: unknown field") {
		t.Errorf("unknown key in table: %v", err)
	}
}
