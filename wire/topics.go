package wire

import (
	"fmt"
	"strings"
)

// Root is the first level of every splitpoint topic.
const Root = "offload"

// cloudLevel is the second topic level under which cloudproc instances live.
// It starts with an underscore, which no device name can.
const cloudLevel = "_cloud"

// DefaultShareGroup is the shared-subscription group cloudprocs join by default.
const DefaultShareGroup = "cloudproc"

// StageTopic is where a device publishes the state that stage consumes:
// offload/<device>/<stage>.
func StageTopic(device, stage string) string { return Root + "/" + device + "/" + stage }

// ResultTopic carries one JSON result per frame: offload/<device>/result.
func ResultTopic(device string) string { return Root + "/" + device + "/result" }

// ResultFilter matches every device's result topic.
const ResultFilter = Root + "/+/result"

// StatusTopic carries the device's retained availability (online/offline).
func StatusTopic(device string) string { return Root + "/" + device + "/status" }

// AnnotatedTopic carries rate-limited JPEG frames with the pipeline's drawing.
func AnnotatedTopic(device string) string { return Root + "/" + device + "/annotated" }

// TelemetryTopic carries the device's periodic telemetry JSON.
func TelemetryTopic(device string) string { return Root + "/" + device + "/telemetry" }

// TelemetryFilter matches every device's telemetry topic.
const TelemetryFilter = Root + "/+/telemetry"

// StateTopic carries the device's retained account of the decision it
// applied: offload/<device>/state.
func StateTopic(device string) string { return Root + "/" + device + "/state" }

// ProbeTopic takes the device's uplink probes; nobody subscribes.
func ProbeTopic(device string) string { return Root + "/" + device + "/probe" }

// ControlSplitTopic carries the gateway's retained split decision:
// offload/<device>/control/split.
func ControlSplitTopic(device string) string { return Root + "/" + device + "/control/split" }

// ControlSplitSetTopic takes split and mode commands (never retained).
func ControlSplitSetTopic(device string) string { return ControlSplitTopic(device) + "/set" }

// ControlTargetSetTopic takes target fps commands (never retained).
func ControlTargetSetTopic(device string) string {
	return Root + "/" + device + "/control/target_fps/set"
}

// ControlSlowdownSetTopic changes a device's emulated slowdown while it runs.
func ControlSlowdownSetTopic(device string) string {
	return Root + "/" + device + "/control/slowdown/set"
}

// ControlErrorTopic carries the gateway's answer to a refused command.
func ControlErrorTopic(device string) string { return Root + "/" + device + "/control/error" }

// Filters over every device, for the gateway.
const (
	StateFilter        = Root + "/+/state"
	StatusFilter       = Root + "/+/status"
	ControlSplitFilter = Root + "/+/control/split"
	SplitSetFilter     = Root + "/+/control/split/set"
	TargetSetFilter    = Root + "/+/control/target_fps/set"
)

// ParseControlTopic splits offload/<device>/control/<rest...> into the
// device and the rest ("split", "split/set", "target_fps/set", …).
func ParseControlTopic(topic string) (device, rest string, err error) {
	parts := strings.SplitN(topic, "/", 4)
	if len(parts) != 4 || parts[0] != Root || parts[2] != "control" {
		return "", "", fmt.Errorf("topic %q is not %s/<device>/control/…", topic, Root)
	}
	if err := ValidateName(parts[1]); err != nil {
		return "", "", fmt.Errorf("topic %q: device: %w", topic, err)
	}
	return parts[1], parts[3], nil
}

// CloudTelemetryTopic carries a cloudproc's telemetry.
func CloudTelemetryTopic(id string) string { return Root + "/" + cloudLevel + "/" + id + "/telemetry" }

// CloudTelemetryFilter matches every cloudproc's telemetry topic.
const CloudTelemetryFilter = Root + "/" + cloudLevel + "/+/telemetry"

// CloudStatusTopic carries a cloudproc's retained availability:
// offload/_cloud/<id>/status.
func CloudStatusTopic(id string) string { return Root + "/" + cloudLevel + "/" + id + "/status" }

// CloudStatusFilter matches every cloudproc's status topic.
const CloudStatusFilter = Root + "/" + cloudLevel + "/+/status"

// StageFilter matches the given stage's topic for every device, under
// prefix (a cloudproc's topic_prefix, "" on a LAN; "sites/+/" serves every
// site behind an upstream broker). With a non-empty group it is a shared
// subscription ($share/<group>/...), so that each message goes to one
// member of the group.
func StageFilter(group, prefix, stage string) string {
	f := prefix + Root + "/+/" + stage
	if group != "" {
		f = "$share/" + group + "/" + f
	}
	return f
}

// Online and Offline are the payloads of the status topics.
const (
	Online  = "online"
	Offline = "offline"
)

// ParseDeviceTopic splits offload/<device>/<leaf> into device and leaf. It
// rejects other shapes and device levels that are not valid names, such as
// the _cloud level.
func ParseDeviceTopic(topic string) (device, leaf string, err error) {
	parts := strings.Split(topic, "/")
	if len(parts) != 3 || parts[0] != Root {
		return "", "", fmt.Errorf("topic %q is not %s/<device>/<leaf>", topic, Root)
	}
	if err := ValidateName(parts[1]); err != nil {
		return "", "", fmt.Errorf("topic %q: device: %w", topic, err)
	}
	return parts[1], parts[2], nil
}

// ParseCloudStatusTopic returns the cloudproc id of offload/_cloud/<id>/status.
func ParseCloudStatusTopic(topic string) (string, error) { return parseCloudTopic(topic, "status") }

// ParseCloudTelemetryTopic returns the cloudproc id of
// offload/_cloud/<id>/telemetry.
func ParseCloudTelemetryTopic(topic string) (string, error) {
	return parseCloudTopic(topic, "telemetry")
}

func parseCloudTopic(topic, leaf string) (string, error) {
	parts := strings.Split(topic, "/")
	if len(parts) != 4 || parts[0] != Root || parts[1] != cloudLevel || parts[3] != leaf {
		return "", fmt.Errorf("topic %q is not %s/%s/<id>/%s", topic, Root, cloudLevel, leaf)
	}
	if err := ValidateName(parts[2]); err != nil {
		return "", fmt.Errorf("topic %q: cloudproc id: %w", topic, err)
	}
	return parts[2], nil
}

// HADiscoveryTopic is where a device is announced to Home Assistant
// (device-based discovery): <prefix>/device/splitpoint_<device>/config.
func HADiscoveryTopic(prefix, device string) string {
	return prefix + "/device/splitpoint_" + device + "/config"
}

// HAStatusTopic is Home Assistant's birth and last-will topic,
// <prefix>/status ("online" when Home Assistant starts).
func HAStatusTopic(prefix string) string { return prefix + "/status" }

// SysSessionsTopic is where the gateway's broker publishes its offline
// session counters (retained JSON).
const SysSessionsTopic = "$SYS/broker/splitpoint/sessions"

// SysSecurityTopic is where the gateway's broker publishes its
// authentication and authorisation counters (retained JSON).
const SysSecurityTopic = "$SYS/broker/splitpoint/security"

// bridgeLevel is the second topic level of the gateway's bridge topics; it
// starts with an underscore, which no device name can.
const bridgeLevel = "_bridge"

// BridgeStatusTopic is where the gateway publishes its bridge's health
// (retained JSON): offload/_bridge/status.
const BridgeStatusTopic = Root + "/" + bridgeLevel + "/status"

// BridgeProbeTopic is where a bridge sends its link probes on the upstream
// broker, under its site prefix (no one subscribes; the broker
// acknowledges): <prefix>offload/_bridge/probe.
func BridgeProbeTopic(prefix string) string { return prefix + Root + "/" + bridgeLevel + "/probe" }

// SitePrefix is the default remote prefix of a site's topics on an
// upstream broker: sites/<site>/.
func SitePrefix(site string) string { return "sites/" + site + "/" }

// SiteFilterPrefix is the cloudproc topic_prefix that serves every site
// behind an upstream broker: sites/+/.
const SiteFilterPrefix = "sites/+/"

// BridgeUpFilters are the local topics a gateway's bridge sends up (under
// its remote prefix): every stage's state, and the devices' status, state
// and telemetry (small; for a cloud dashboard). They are disjoint from
// BridgeDownFilters: no message can loop.
func BridgeUpFilters(stages []string) []string {
	f := make([]string, 0, len(stages)+3)
	for _, s := range stages {
		f = append(f, StageTopic("+", s))
	}
	return append(f, StatusFilter, StateFilter, TelemetryFilter)
}

// BridgeDownFilters are the upstream topics a bridge brings down: the
// site's results and annotated frames (under prefix, which is stripped),
// and every cloudproc's status and telemetry (not prefixed: one cloudproc
// pool serves every site).
func BridgeDownFilters(prefix string) []string {
	return []string{prefix + ResultFilter, prefix + Root + "/+/annotated", CloudStatusFilter, CloudTelemetryFilter}
}

// CutTopicPrefix matches the first levels of topic against prefix, a topic
// prefix that ends with "/" and may hold "+" levels ("sites/+/"), and
// returns the levels it matched (the site's actual prefix,
// "sites/home/") and the rest. An empty prefix matches every topic.
func CutTopicPrefix(prefix, topic string) (actual, rest string, ok bool) {
	if prefix == "" {
		return "", topic, true
	}
	pl := strings.Split(strings.TrimSuffix(prefix, "/"), "/")
	n := 0
	for _, level := range pl {
		i := strings.IndexByte(topic[n:], '/')
		if i < 0 {
			return "", "", false
		}
		got := topic[n : n+i]
		if (level != "+" && got != level) || got == "" {
			return "", "", false
		}
		n += i + 1
	}
	return topic[:n], topic[n:], true
}

// ValidateTopicPrefix checks a topic prefix: "" or levels ending with "/",
// each a name or "+", no "#", not starting with "$" or "/".
func ValidateTopicPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !strings.HasSuffix(prefix, "/") || strings.HasPrefix(prefix, "/") || strings.HasPrefix(prefix, "$") || strings.Contains(prefix, "#") {
		return fmt.Errorf("topic prefix %q must end with /, and not start with / or $ or hold #", prefix)
	}
	for _, l := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if l == "" || (l != "+" && strings.Contains(l, "+")) {
			return fmt.Errorf("topic prefix %q: every level must be a name or +", prefix)
		}
	}
	return nil
}
