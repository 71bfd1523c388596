//go:build !matprofile

// Package matcheck reports how many gocv Mats are open. It needs gocv's
// matprofile build tag; without it Enabled is false and Open returns 0.
package matcheck

// Enabled reports whether Mats are being counted (build tag matprofile).
const Enabled = false

// Open returns the number of Mats not yet closed (always 0 here).
func Open() int { return 0 }

// Stacks describes where the open Mats were created (nothing here).
func Stacks() string { return "" }
