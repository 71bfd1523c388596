package emulate

import (
	"fmt"
	"runtime"
	"sync"
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

// Several workers each spin on their own thread's CPU clock: W workers at
// once emulate W slower cores. Were the clock the process's, each worker
// would count the others' CPU time as its own (with W goroutines on fewer
// cores or not), and emulate more than it ran.
func TestConcurrentRunsSpinOnTheirOwnThreads(t *testing.T) {
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			before := ThreadCPU()
			cpu, got := Run(3, work)
			used := ThreadCPU() - before
			if got != 3*cpu || used < got {
				errs <- fmt.Sprintf("cpu %v, emulated %v, thread used %v", cpu, got, used)
			}
			// fn's own time cannot exceed what the thread used before the
			// spin: a process clock would count the others' work too.
			if cpu > used/3+used/10 {
				errs <- fmt.Sprintf("fn took %v of the thread's %v: not the thread's own time", cpu, used)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
