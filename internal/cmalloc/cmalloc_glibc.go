//go:build linux && cgo

package cmalloc

/*
#include <malloc.h>

#ifdef __GLIBC__
static int tune(int mmap, int trim) {
	if (mmap > 0 && mallopt(M_MMAP_THRESHOLD, mmap) != 1) return 1;
	if (trim > 0 && mallopt(M_TRIM_THRESHOLD, trim) != 1) return 2;
	return 0;
}
#else
static int tune(int mmap, int trim) { return -1; }
#endif
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
)

func apply(s Settings) (Settings, string) {
	env := os.Getenv("GLIBC_TUNABLES")
	if strings.Contains(env, "glibc.malloc.mmap_threshold=") {
		s.MmapThreshold = 0
	}
	if strings.Contains(env, "glibc.malloc.trim_threshold=") {
		s.TrimThreshold = 0
	}
	switch rc := C.tune(C.int(s.MmapThreshold), C.int(s.TrimThreshold)); rc {
	case 0:
		return s, ""
	case -1:
		return Settings{}, "not glibc"
	default:
		return Settings{}, fmt.Sprintf("mallopt refused parameter %d", int(rc))
	}
}
