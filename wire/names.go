package wire

import (
	"fmt"
	"regexp"
)

// MaxNameLen bounds device, cloudproc and stage names.
const MaxNameLen = 64

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// reserved are the topic words under offload/<device>/ that are not stages.
var reserved = map[string]bool{
	"result":    true,
	"status":    true,
	"telemetry": true,
	"control":   true,
	"state":     true,
	"annotated": true,
	"probe":     true,
}

// ReservedWords lists the topic words that no device or stage may be named.
func ReservedWords() []string {
	return []string{"result", "status", "telemetry", "control", "state", "annotated", "probe"}
}

// ValidateName checks a device, cloudproc or stage name: it must match
// [a-z0-9][a-z0-9_-]*, be at most MaxNameLen long and must not be one of the
// reserved topic words.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("name is empty (allowed: [a-z0-9][a-z0-9_-]*)")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name %q is longer than %d characters", name, MaxNameLen)
	}
	if !namePattern.MatchString(name) {
		return fmt.Errorf("name %q is not allowed (allowed: [a-z0-9][a-z0-9_-]*)", name)
	}
	if reserved[name] {
		return fmt.Errorf("name %q is a reserved topic word (reserved: result, status, telemetry, control, state, annotated, probe)", name)
	}
	return nil
}
