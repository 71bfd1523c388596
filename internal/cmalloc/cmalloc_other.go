//go:build !linux || !cgo

package cmalloc

func apply(Settings) (Settings, string) { return Settings{}, "not linux with cgo" }
