// Package gctune sets the pace of Go's garbage collector for the processes
// that move whole frames through Go memory (gateway, cloudproc).
//
// At split 1–2 every state is a raw frame (421 KB for balltrack's 500×281):
// the broker allocates each message about three times per hop and paho
// twice when it reads one. With Go's default GOGC=100 and a live heap of a
// few MiB the collector then ran about 40 times a second in each
// (GODEBUG=gctrace=1: 199 and 208 collections for 600 frames), and its
// scavenger handed the freed pages back to the kernel (madvise) for the
// next messages to fault in again: madvise alone was 10–11 % of the
// gateway's and the cloudproc's CPU in their profiles at split 1.
//
// Apply raises GOGC and bounds the heap by a soft memory limit instead (the
// collector works harder as the process nears it; runtime/debug). Measured
// with `go run ./cmd/bench -splits 1` on the 2-core development machine,
// GOGC for all three processes (100 and 400: mean of two runs, 200 and
// 800: one run): 100 → 121 frames/s, 200 →
// 130, 400 → 153, 800 → 159; the gateway's CPU per frame 3.4 → 2.4 ms and
// the cloudproc's 4.3 → 2.8 ms at 400. The gateway uses 200 and the
// cloudproc 400 (their Run documents why).
//
// The standard variables win: GOGC or GOMEMLIMIT set in the environment is
// left as the runtime read it.
package gctune

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

// Apply sets the GC percent (unless GOGC is set) and the soft memory limit
// in bytes (unless GOMEMLIMIT is set; 0: none) and describes the result
// for a start-up log line, e.g. "gogc=400 memory_limit=256MiB".
func Apply(percent int, limit int64) string {
	var out []string
	if v, set := os.LookupEnv("GOGC"); set {
		out = append(out, "gogc="+v+" (GOGC)")
	} else {
		debug.SetGCPercent(percent)
		out = append(out, fmt.Sprintf("gogc=%d", percent))
	}
	if v, set := os.LookupEnv("GOMEMLIMIT"); set {
		out = append(out, "memory_limit="+v+" (GOMEMLIMIT)")
	} else if limit > 0 {
		debug.SetMemoryLimit(limit)
		out = append(out, fmt.Sprintf("memory_limit=%dMiB", limit>>20))
	}
	return strings.Join(out, " ")
}
