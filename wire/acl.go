package wire

// Access rules: what each kind of identity may publish, retain and read on
// a gateway with authentication on (see broker.ACL, which enforces them
// deny-by-default). The rules are topic patterns in MQTT filter syntax
// ("+" one level, "#" the rest) plus two placeholders that stand for one
// whole topic level.
const (
	// SelfLevel stands for the identity's own name: a device's id, a
	// cloudproc's id.
	SelfLevel = "{self}"
	// StageLevel stands for any stage name of a registered pipeline.
	StageLevel = "{stage}"
)

// ShareLevel is the first level of an MQTT 5 / EMQX / mosquitto shared
// subscription filter: $share/<group>/<filter>.
const ShareLevel = "$share"

// AccessRules are one role's rules. A publish is allowed when its topic
// matches a Publish pattern; its retain flag is kept only when the topic
// also matches a Retain pattern. A subscription filter is granted only when
// one Subscribe pattern covers every topic the filter can match (for a
// $share/<group>/<filter> subscription: a Shared pattern), and a message is
// delivered only when its topic matches a Subscribe pattern.
type AccessRules struct {
	Publish   []string
	Retain    []string
	Subscribe []string
	Shared    []string
}

// DeviceClientID is the MQTT client id of device id: splitpoint-device-<id>.
// With authentication on it is the only client id that identity may use.
func DeviceClientID(id string) string { return "splitpoint-device-" + id }

// CloudClientID is the MQTT client id of cloudproc id:
// splitpoint-cloud-<id>.
func CloudClientID(id string) string { return "splitpoint-cloud-" + id }

// ReservedClientIDPrefix starts every client id that belongs to a device or
// cloudproc identity; no other identity may use such a client id.
const ReservedClientIDPrefix = "splitpoint-"

// DeviceRules are the rules of a device identity: its own stage states,
// telemetry, state, status, probes, command errors and the start-up
// commands it sends for itself; it reads its results, its split decisions,
// its emulated-slowdown command, every cloudproc's status and the bridge's
// (an offline = "spool" device spools only behind a bridge).
func DeviceRules() AccessRules {
	self := SelfLevel
	return AccessRules{
		Publish: []string{
			StageTopic(self, StageLevel), TelemetryTopic(self), StateTopic(self), StatusTopic(self),
			ProbeTopic(self), ControlErrorTopic(self), ControlSplitSetTopic(self), ControlTargetSetTopic(self),
		},
		Retain: []string{StatusTopic(self), StateTopic(self)},
		Subscribe: []string{
			ResultTopic(self), ControlSplitTopic(self), ControlSlowdownSetTopic(self), CloudStatusFilter, BridgeStatusTopic,
		},
	}
}

// CloudRules are the rules of a cloudproc identity: it reads every
// device's stage states (as a plain or a shared subscription), publishes
// results and annotated frames for any device, and its own status and
// telemetry. Only a cloud identity can tell devices a cloud is online.
func CloudRules() AccessRules {
	self := SelfLevel
	stages := StageTopic("+", StageLevel)
	return AccessRules{
		Publish:   []string{ResultFilter, Root + "/+/annotated", CloudStatusTopic(self), CloudTelemetryTopic(self)},
		Retain:    []string{CloudStatusTopic(self)},
		Subscribe: []string{stages},
		Shared:    []string{stages},
	}
}

// AdminRules are the rules of an admin identity (Home Assistant, an
// operator): it reads everything but the stage states (they carry camera
// frames and sensor windows) and probes, including Home Assistant
// discovery under haPrefix and $SYS; it publishes only the …/set commands
// and Home Assistant's birth message, never retained.
func AdminRules(haPrefix string) AccessRules {
	return AccessRules{
		Publish: []string{SplitSetFilter, TargetSetFilter, ControlSlowdownSetTopic("+"), HAStatusTopic(haPrefix)},
		Subscribe: []string{
			StatusFilter, TelemetryFilter, StateFilter, ResultFilter, Root + "/+/annotated",
			ControlSplitFilter, ControlErrorTopic("+"), Root + "/+/control/+/set",
			CloudStatusFilter, CloudTelemetryFilter, BridgeStatusTopic, haPrefix + "/#", "$SYS/#",
		},
	}
}
