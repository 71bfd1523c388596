package gctune

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

// resetGC skips a test run with GOGC or GOMEMLIMIT set, sets Go's defaults
// for the test and restores the process's settings after it.
func resetGC(t *testing.T) {
	t.Helper()
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOGC or GOMEMLIMIT set in this test's environment")
	}
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) })
}

// Apply sets both knobs and says so; restored afterwards for the other
// tests of the process.
func TestApplySetsPercentAndLimit(t *testing.T) {
	resetGC(t)
	if got := apply(400, 256<<20); got != "gogc=400 memory_limit=256MiB" {
		t.Errorf("described %q", got)
	}
	if p := debug.SetGCPercent(100); p != 400 {
		t.Errorf("GC percent %d, want 400", p)
	}
	if l := debug.SetMemoryLimit(-1); l != 256<<20 {
		t.Errorf("memory limit %d, want %d", l, 256<<20)
	}
}

// The environment wins: a child with GOGC and GOMEMLIMIT keeps the values
// the runtime read from them.
func TestApplyLeavesTheEnvironmentsChoice(t *testing.T) {
	if os.Getenv("GCTUNE_CHILD") == "1" {
		got := Apply(400)
		p, l := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
		if got != "gogc=50 (GOGC) memory_limit=1GiB (GOMEMLIMIT)" || p != 50 || l != 1<<30 {
			t.Fatalf("child: %q, percent %d, limit %d", got, p, l)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestApplyLeavesTheEnvironmentsChoice$", "-test.v")
	cmd.Env = append(os.Environ(), "GCTUNE_CHILD=1", "GOGC=50", "GOMEMLIMIT=1GiB")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// Apply's limit is half the physical memory.
func TestApplyLimitIsHalfTheMemory(t *testing.T) {
	resetGC(t)
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Skip("no /proc/meminfo")
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			fmt.Sscan(rest, &kb)
		}
	}
	got := Apply(400)
	if l := debug.SetMemoryLimit(-1); l != kb<<10/2 || !strings.HasSuffix(got, fmt.Sprintf("memory_limit=%dMiB", l>>20)) {
		t.Errorf("limit %d (%q), want half of MemTotal %d kB", l, got, kb)
	}
}
