package broker

import (
	"strings"

	"github.com/splitpoint/splitpoint/wire"
)

// Role is the kind of an authenticated identity.
type Role uint8

// The roles (see wire.DeviceRules, wire.CloudRules, wire.AdminRules).
const (
	RoleNone Role = iota
	RoleDevice
	RoleCloud
	RoleAdmin
)

// String names the role.
func (r Role) String() string {
	switch r {
	case RoleDevice:
		return "device"
	case RoleCloud:
		return "cloud"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Identity is an authenticated client: the user name of its password-file
// entry or the CN of its client certificate, and its role.
type Identity struct {
	Name string
	Role Role
}

// ACL enforces the access rules of wire.DeviceRules, wire.CloudRules and
// wire.AdminRules, deny by default: a topic or filter that no rule of the
// identity's role allows is refused. Matching is exact, level by level (no
// prefix matching); a subscription filter is granted only when a single
// rule covers every topic the filter can match, so that what a granted
// subscription delivers is always allowed. It is immutable and safe for
// concurrent use.
type ACL struct {
	stages map[string]bool
	rules  [RoleAdmin + 1]compiled
}

type compiled struct {
	publish, retain, subscribe, shared []pattern
}

// pattern is a rule split into levels.
type pattern []string

// NewACL compiles the rules. stages are the stage names of every
// registered pipeline (devices may publish only those); haPrefix is Home
// Assistant's discovery prefix.
func NewACL(stages []string, haPrefix string) *ACL {
	a := &ACL{stages: make(map[string]bool, len(stages))}
	for _, s := range stages {
		a.stages[s] = true
	}
	a.rules[RoleDevice] = compile(wire.DeviceRules())
	a.rules[RoleCloud] = compile(wire.CloudRules())
	a.rules[RoleAdmin] = compile(wire.AdminRules(haPrefix))
	return a
}

func compile(r wire.AccessRules) compiled {
	split := func(ss []string) []pattern {
		out := make([]pattern, len(ss))
		for i, s := range ss {
			out[i] = strings.Split(s, "/")
		}
		return out
	}
	return compiled{publish: split(r.Publish), retain: split(r.Retain), subscribe: split(r.Subscribe), shared: split(r.Shared)}
}

// CanPublish reports whether id may publish to topic.
func (a *ACL) CanPublish(id Identity, topic string) bool {
	return validTopicName(topic) && a.any(a.rules[id.Role].publish, id.Name, topic)
}

// CanRetain reports whether id's publish to topic may be retained.
func (a *ACL) CanRetain(id Identity, topic string) bool {
	return validTopicName(topic) && a.any(a.rules[id.Role].retain, id.Name, topic)
}

// CanRead reports whether id may subscribe to filter (a topic filter, or
// $share/<group>/<filter>) or receive a message published to it (a topic).
func (a *ACL) CanRead(id Identity, filter string) bool {
	r := a.rules[id.Role]
	if rest, ok := strings.CutPrefix(filter, wire.ShareLevel+"/"); ok {
		group, f, ok := strings.Cut(rest, "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#") {
			return false
		}
		return a.any(r.shared, id.Name, f)
	}
	return a.any(r.subscribe, id.Name, filter)
}

// validTopicName: a publish topic has no wildcards (mochi checks this too;
// the ACL does not rely on it).
func validTopicName(t string) bool { return t != "" && !strings.ContainsAny(t, "+#") }

func (a *ACL) any(ps []pattern, self, filter string) bool {
	if filter == "" || self == "" {
		return false
	}
	for _, p := range ps {
		if a.covers(p, self, filter) {
			return true
		}
	}
	return false
}

// covers reports whether every topic that filter matches is matched by p
// (for a topic, whether p matches it). It walks filter's levels without
// allocating.
func (a *ACL) covers(p pattern, self, filter string) bool {
	i := 0
	for rest, more := filter, true; more; i++ {
		var level string
		level, rest, more = strings.Cut(rest, "/")
		if i >= len(p) {
			return false
		}
		switch p[i] {
		case "#":
			return true // covers this level and all below
		case "+":
			if level == "#" {
				return false // "#" spans several levels
			}
		case wire.SelfLevel:
			if level != self {
				return false
			}
		case wire.StageLevel:
			if !a.stages[level] {
				return false
			}
		default:
			if level != p[i] {
				return false
			}
		}
	}
	// filter is exhausted: p must be too, or end in "#" (which also
	// matches its parent level).
	return i == len(p) || (i == len(p)-1 && p[i] == "#")
}
