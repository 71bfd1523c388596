package broker

import (
	"testing"
)

func TestACLDenyByDefaultExactMatch(t *testing.T) {
	a := NewACL([]string{"capture", "hsv", "mask"}, "homeassistant")
	pi1 := Identity{Name: "pi1", Role: RoleDevice}
	c1 := Identity{Name: "c1", Role: RoleCloud}
	adm := Identity{Name: "ops", Role: RoleAdmin}
	none := Identity{Name: "x", Role: RoleNone}
	type tc struct {
		id    Identity
		op    string // pub, ret, sub
		topic string
		want  bool
	}
	cases := []tc{
		// device: its own topics only, known stages only
		{pi1, "pub", "offload/pi1/hsv", true},
		{pi1, "pub", "offload/pi1/nosuchstage", false},
		{pi1, "pub", "offload/pi2/hsv", false},
		{pi1, "pub", "offload/pi1/result", false},
		{pi1, "pub", "offload/pi1/annotated", false},
		{pi1, "pub", "offload/pi1/control/split", false},
		{pi1, "pub", "offload/pi1/control/split/set", true},
		{pi1, "pub", "offload/pi1/control/target_fps/set", true},
		{pi1, "pub", "offload/pi1/control/slowdown/set", false},
		{pi1, "pub", "offload/pi1/telemetry", true},
		{pi1, "pub", "offload/pi1/state", true},
		{pi1, "pub", "offload/pi1/status", true},
		{pi1, "pub", "offload/pi1/probe", true},
		{pi1, "pub", "offload/pi1/control/error", true},
		{pi1, "pub", "offload/_cloud/pi1/status", false},
		{pi1, "pub", "offload/pi1/hsv/x", false},
		{pi1, "pub", "offload/pi1", false},
		{pi1, "pub", "offload/pi1/+", false},
		{pi1, "pub", "offload/pi10/hsv", false},
		{pi1, "pub", "offload/pi/hsv", false},
		{pi1, "ret", "offload/pi1/status", true},
		{pi1, "ret", "offload/pi1/state", true},
		{pi1, "ret", "offload/pi1/hsv", false},
		{pi1, "ret", "offload/pi1/control/split/set", false},
		{pi1, "sub", "offload/pi1/result", true},
		{pi1, "sub", "offload/pi1/control/split", true},
		{pi1, "sub", "offload/pi1/control/slowdown/set", true},
		{pi1, "sub", "offload/_cloud/+/status", true},
		{pi1, "sub", "offload/_cloud/c1/status", true},
		{pi1, "sub", "offload/_cloud/#", false},
		{pi1, "sub", "offload/pi2/result", false},
		{pi1, "sub", "offload/+/result", false},
		{pi1, "sub", "offload/pi1/#", false},
		{pi1, "sub", "#", false},
		{pi1, "sub", "$share/g/offload/+/hsv", false},
		{pi1, "sub", "offload/pi1/hsv", false},
		// cloud
		{c1, "sub", "$share/cloudproc/offload/+/hsv", true},
		{c1, "sub", "$share/other/offload/+/mask", true},
		{c1, "sub", "offload/+/hsv", true},
		{c1, "sub", "offload/pi1/hsv", true},
		{c1, "sub", "offload/+/+", false},
		{c1, "sub", "offload/+/nosuch", false},
		{c1, "sub", "$share/cloudproc/offload/#", false},
		{c1, "sub", "$share//offload/+/hsv", false},
		{c1, "sub", "$share/+/offload/+/hsv", false},
		{c1, "sub", "$share/g", false},
		{c1, "sub", "offload/+/result", false},
		{c1, "pub", "offload/pi1/result", true},
		{c1, "pub", "offload/pi1/annotated", true},
		{c1, "pub", "offload/_cloud/c1/status", true},
		{c1, "pub", "offload/_cloud/c1/telemetry", true},
		{c1, "pub", "offload/_cloud/c2/status", false},
		{c1, "pub", "offload/pi1/control/split", false},
		{c1, "pub", "offload/pi1/hsv", false},
		{c1, "ret", "offload/_cloud/c1/status", true},
		{c1, "ret", "offload/pi1/result", false},
		// admin
		{adm, "sub", "offload/+/status", true},
		{adm, "sub", "offload/+/telemetry", true},
		{adm, "sub", "offload/pi1/state", true},
		{adm, "sub", "offload/+/result", true},
		{adm, "sub", "offload/+/annotated", true},
		{adm, "sub", "offload/+/control/split", true},
		{adm, "sub", "offload/_cloud/+/status", true},
		{adm, "sub", "homeassistant/#", true},
		{adm, "sub", "homeassistant/device/x/config", true},
		{adm, "sub", "$SYS/#", true},
		{adm, "sub", "$SYS/broker/clients/connected", true},
		{adm, "sub", "#", false},
		{adm, "sub", "offload/#", false},
		{adm, "sub", "offload/+/+", false},
		{adm, "sub", "offload/pi1/hsv", false},
		{adm, "sub", "offload/pi1/probe", false},
		{adm, "sub", "+/+/status", false},
		{adm, "pub", "offload/pi1/control/split/set", true},
		{adm, "pub", "offload/pi1/control/target_fps/set", true},
		{adm, "pub", "offload/pi1/control/slowdown/set", true},
		{adm, "pub", "homeassistant/status", true},
		{adm, "pub", "offload/pi1/control/split", false},
		{adm, "pub", "offload/pi1/result", false},
		{adm, "pub", "homeassistant/device/x/config", false},
		{adm, "ret", "offload/pi1/control/split/set", false},
		// no role: nothing
		{none, "sub", "offload/+/status", false},
		{none, "pub", "offload/x/status", false},
	}
	for _, c := range cases {
		var got bool
		switch c.op {
		case "pub":
			got = a.CanPublish(c.id, c.topic)
		case "ret":
			got = a.CanRetain(c.id, c.topic)
		case "sub":
			got = a.CanRead(c.id, c.topic)
		}
		if got != c.want {
			t.Errorf("%s %s %s %q: got %v, want %v", c.id.Role, c.id.Name, c.op, c.topic, got, c.want)
		}
	}
}

// A granted filter delivers only allowed topics: for each allowed filter,
// every concrete topic it matches is readable.
func TestACLGrantedFilterDeliversOnlyAllowedTopics(t *testing.T) {
	a := NewACL([]string{"hsv"}, "ha")
	adm := Identity{Name: "ops", Role: RoleAdmin}
	topics := []string{"offload/pi1/hsv", "offload/pi1/status", "offload/pi1/result", "ha/status", "ha/device/x/config", "$SYS/x", "offload/_cloud/c/status", "offload/pi1/probe"}
	filters := []string{"offload/+/status", "ha/#", "$SYS/#", "offload/+/result", "offload/_cloud/+/status"}
	for _, f := range filters {
		if !a.CanRead(adm, f) {
			t.Fatalf("filter %q should be granted", f)
		}
		for _, tp := range topics {
			if matches(f, tp) && !a.CanRead(adm, tp) {
				t.Errorf("granted filter %q matches %q, which admin may not read", f, tp)
			}
		}
	}
}

func matches(filter, topic string) bool {
	fs, ts := splitLevels(filter), splitLevels(topic)
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) || (f != "+" && f != ts[i]) {
			return false
		}
	}
	return len(fs) == len(ts)
}

func splitLevels(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '/' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func BenchmarkACLCanRead(b *testing.B) {
	a := NewACL([]string{"capture", "hsv", "mask"}, "homeassistant")
	c1 := Identity{Name: "c1", Role: RoleCloud}
	b.ReportAllocs()
	for b.Loop() {
		if !a.CanRead(c1, "offload/pi1/mask") {
			b.Fatal("denied")
		}
	}
}
