//go:build matprofile

// Package matcheck reports how many gocv Mats are open. It needs gocv's
// matprofile build tag; without it Enabled is false and Open returns 0.
package matcheck

import (
	"strings"

	"gocv.io/x/gocv"
)

// Enabled reports whether Mats are being counted (build tag matprofile).
const Enabled = true

// Open returns the number of Mats not yet closed.
func Open() int { return gocv.MatProfile.Count() }

// Stacks describes where the open Mats were created.
func Stacks() string {
	var b strings.Builder
	_ = gocv.MatProfile.WriteTo(&b, 1)
	return b.String()
}
