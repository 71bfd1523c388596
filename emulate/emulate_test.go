package emulate

import (
	"runtime"
	"testing"
)

func work() {
	x := 0
	for i := 0; i < 2_000_000; i++ {
		x += i ^ (x >> 3)
	}
	runtime.KeepAlive(x)
}

func TestRunSpinsOnTheThreadCPUClock(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := ThreadCPU()
	cpu, got := Run(3, work)
	used := ThreadCPU() - before
	if got <= 0 {
		t.Fatalf("emulated time %v", got)
	}
	// The thread really used at least the emulated CPU time: a property of
	// the clock, independent of this machine's speed.
	if used < got {
		t.Errorf("thread used %v CPU, less than the emulated %v", used, got)
	}
	if got != 3*cpu {
		t.Errorf("emulated %v, want 3 × %v", got, cpu)
	}
	plainCPU, plain := Run(1, work)
	if plain <= 0 || plain != plainCPU {
		t.Errorf("slowdown 1: cpu %v emulated %v", plainCPU, plain)
	}
}
