package matcheck

import "testing"

// Assert fails t when the number of open Mats differs from before, and
// logs a note when Mats are not being counted.
func Assert(t testing.TB, before int) {
	t.Helper()
	if !Enabled {
		t.Log("Mat leak check skipped: build with -tags matprofile")
		return
	}
	if n := Open(); n != before {
		t.Errorf("%d Mats left open (before: %d):\n%s", n-before, before, Stacks())
	}
}
