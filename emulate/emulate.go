// Package emulate makes this machine behave like a slower one: it runs a
// piece of work, measures the CPU time the work took on its thread, and then
// busy-spins until the thread has used slowdown times that much. The load is
// real CPU load, not sleep, and it is measured on the thread's CPU clock, so
// contention from other processes does not inflate it. Each call locks its
// goroutine to its thread and counts only that thread's time, so W workers
// calling Run at once emulate W slower cores (given W real ones).
package emulate

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// ThreadCPU returns the calling OS thread's CPU time.
func ThreadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Run runs fn on a locked OS thread and, when slowdown > 1, spins until the
// thread has used slowdown × fn's CPU time. It returns fn's own CPU time and
// the emulated one (cpu × slowdown, or cpu when slowdown ≤ 1).
func Run(slowdown float64, fn func()) (cpu, emulated time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := ThreadCPU()
	fn()
	cpu = ThreadCPU() - start
	if slowdown <= 1 {
		return cpu, cpu
	}
	want := time.Duration(float64(cpu) * slowdown)
	x := uint64(1)
	for ThreadCPU()-start < want {
		for i := 0; i < 2000; i++ { // burn a little CPU between clock reads
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	runtime.KeepAlive(x)
	return cpu, want
}
