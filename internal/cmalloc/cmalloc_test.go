package cmalloc

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The settings are in force in this (glibc, cgo) test process; a process
// started with GLIBC_TUNABLES keeps the tunables it sets.
func TestApplied(t *testing.T) {
	if os.Getenv("CMALLOC_CHILD") != "" {
		s, why := Applied()
		fmt.Printf("%d %d %q\n", s.MmapThreshold, s.TrimThreshold, why)
		return
	}
	s, why := Applied()
	if why != "" || s != Default() {
		t.Fatalf("Applied() = %+v, %q; want %+v", s, why, Default())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplied$")
	cmd.Env = append(os.Environ(), "CMALLOC_CHILD=1", "GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=1048576")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "16777216 0 \"\"\n"; !strings.HasPrefix(string(out), want) {
		t.Errorf("child with GLIBC_TUNABLES: %q, want %q first", out, want)
	}
}
