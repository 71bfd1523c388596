// Package cmalloc tunes glibc's malloc for the processes that run OpenCV
// (device, cloudproc) when it is imported.
//
// OpenCV allocates every cv::Mat with malloc. Frames are about 1.5 MB
// (960×540×3), above glibc's initial mmap threshold (128 KiB), and each
// state frees and allocates several per frame: with the defaults glibc
// maps and unmaps them, or trims the heap back to the kernel, so that every
// frame's buffers are fresh pages the kernel must fault in and zero —
// 126 to 192 page faults per frame were measured at split 6. With many
// threads calling into C (Go runs cgo calls on any of its threads) glibc
// also creates up to 8 arenas per core, each holding its own free memory.
//
// So, at start-up, each of these is set unless GLIBC_TUNABLES already sets
// it (the operator's choice wins):
//
//   - M_MMAP_THRESHOLD = 16 MiB: buffers below it come from the heap and
//     are reused (16 MiB is the largest value glibc accepts on 32-bit
//     targets such as armhf; a 4K frame, 24 MiB, is still mapped);
//   - M_TRIM_THRESHOLD = 64 MiB: free memory at the top of the heap is
//     given back only past it.
//
// The number of arenas cannot be capped from here: glibc fixes the cap
// when a second thread first allocates, before any Go code runs. Start the
// process with GLIBC_TUNABLES=glibc.malloc.arena_max=<cores> for that (the
// systemd units do): on the development machine it took a device's peak
// anonymous memory at split 1 from about 70 to about 55 MB.
//
// Measured on the development machine (2 cores, x86-64, Debian 12) with a
// device at split 1 and 6 (600 synthetic 960×540 frames; README,
// performance notes): about 1.3× the frames per second at both for the
// same work. Elsewhere (musl, other C libraries, no cgo) it does nothing.
package cmalloc

import (
	"fmt"
	"os"
)

// Settings are the malloc parameters this package applies.
type Settings struct {
	MmapThreshold int // bytes; 0: not set here
	TrimThreshold int // bytes; 0: not set here
}

// Default is what init applies.
func Default() Settings {
	return Settings{MmapThreshold: 16 << 20, TrimThreshold: 64 << 20}
}

// Applied reports what init set, and why it set nothing ("" when it did:
// another C library, mallopt refused); a parameter GLIBC_TUNABLES sets is
// left out.
func Applied() (Settings, string) { return applied, skipped }

var (
	applied Settings
	skipped string
)

func init() { applied, skipped = apply(Default()) }

// String describes what init did, for a start-up log line.
func String() string {
	if skipped != "" {
		return "glibc defaults (" + skipped + ")"
	}
	s := fmt.Sprintf("mmap_threshold=%dMiB trim_threshold=%dMiB", applied.MmapThreshold>>20, applied.TrimThreshold>>20)
	if t := os.Getenv("GLIBC_TUNABLES"); t != "" {
		s += " GLIBC_TUNABLES=" + t + " (0: left to it)"
	}
	return s
}
