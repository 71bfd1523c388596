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
// Apply raises GOGC, and sets a soft memory limit of half the machine's
// physical memory (the collector works harder as the process nears it;
// runtime/debug) so that the larger heap GOGC allows (up to 5× what is
// live at GOGC=400) gives way before the machine's memory runs out.
// Measured with `go run ./cmd/bench -splits 1` on the 2-core development
// machine, GOGC set for all three processes (100 and 400: mean of two
// runs, 200 and 800: one run): 100 → 121 frames/s, 200 → 130, 400 → 153,
// 800 → 159; the gateway's CPU per frame 3.4 → 2.4 ms and the cloudproc's
// 4.3 → 2.8 ms at 400. The gateway uses 200 and the cloudproc 400 (their
// GCPercent documents why).
//
// The standard variables win: GOGC or GOMEMLIMIT set (not empty) in the
// environment is left as the runtime read it.
package gctune

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strings"

	"github.com/shirou/gopsutil/v4/mem"
)

// Apply sets the GC percent (unless GOGC is set and not empty) and a soft
// memory limit of half the physical memory (unless GOMEMLIMIT is set and
// not empty; none where the memory cannot be read), and describes the
// result for a start-up log line, e.g. "gogc=400 memory_limit=3904MiB".
func Apply(percent int) string {
	limit := int64(0)
	if vm, err := mem.VirtualMemory(); err == nil && vm.Total > 0 {
		limit = int64(min(vm.Total/2, math.MaxInt64))
	}
	return apply(percent, limit)
}

func apply(percent int, limit int64) string {
	var out []string
	if v := os.Getenv("GOGC"); v != "" {
		out = append(out, "gogc="+v+" (GOGC)")
	} else {
		debug.SetGCPercent(percent)
		out = append(out, fmt.Sprintf("gogc=%d", percent))
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		out = append(out, "memory_limit="+v+" (GOMEMLIMIT)")
	} else if limit > 0 {
		debug.SetMemoryLimit(limit)
		out = append(out, fmt.Sprintf("memory_limit=%dMiB", limit>>20))
	}
	return strings.Join(out, " ")
}
