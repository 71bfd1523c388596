package wire

import "time"

// Sources of a telemetry figure.
const (
	Measured  = "measured"  // from the frames the device is processing now
	Estimated = "estimated" // from a profile, scaled to the device's current speed
)

// StageFigure is one stage's time on the device.
type StageFigure struct {
	Name string `json:"name"`
	// DeviceMS is the time per frame on the device, emulated slowdown
	// included; CPUMS is this CPU's own time (without slowdown).
	DeviceMS float64 `json:"device_ms"`
	CPUMS    float64 `json:"cpu_ms"`
	Source   string  `json:"source"`
	AgeS     float64 `json:"age_s"`
}

// BoundaryFigure is the size of the state shipped at one split.
type BoundaryFigure struct {
	Split int     `json:"split"`
	Next  string  `json:"next"` // the stage that receives it
	Bytes float64 `json:"bytes"`
	// EncodeMS is the device's time to encode this state (ms per frame,
	// from profiling; 0: not profiled yet). The device's overhead at its
	// current split includes that split's.
	EncodeMS float64 `json:"encode_ms,omitempty"`
	Source   string  `json:"source"`
	AgeS     float64 `json:"age_s"`
}

// Uplink is the evidence about the device's link to the broker.
type Uplink struct {
	// AckMSP50 is the median publish→PUBACK time of recent states.
	AckMSP50 *float64 `json:"ack_ms_p50"`
	// BytesPerS is what the device sent over the last period.
	BytesPerS float64 `json:"bytes_per_s"`
	// CapacityBps estimates the link's capacity from large publishes (states
	// or probes); null until one was timed.
	CapacityBps *float64 `json:"capacity_bps"`
	CapacityAge *float64 `json:"capacity_age_s"`
}

// Counters are the device's counts since it started.
type Counters struct {
	Captured      int            `json:"captured"`
	FilteredLocal int            `json:"filtered_local"`
	Sent          int            `json:"sent"`
	Resent        int            `json:"resent"`
	Results       int            `json:"results"`
	Duplicates    int            `json:"duplicates"`
	BadResults    int            `json:"bad_results"`
	Profiled      int            `json:"profiled"`
	Dropped       map[string]int `json:"dropped"`
	// SourceReopens counts reopens of a live source after it dropped.
	SourceReopens int64 `json:"source_reopens"`
	// SourceErrors counts frames the source could not read or decode
	// (skipped).
	SourceErrors int64 `json:"source_errors"`
}

// Host are figures of the machine the device runs on; null where unknown.
type Host struct {
	CPUPercent   *float64 `json:"cpu_percent"`
	MemPercent   *float64 `json:"mem_percent"`
	Load1        *float64 `json:"load1"`
	TemperatureC *float64 `json:"temperature_c"`
}

// Telemetry is a device's periodic report (offload/<device>/telemetry).
type Telemetry struct {
	TS          time.Time        `json:"ts"`
	Device      string           `json:"device"`
	Run         string           `json:"run"`
	Pipeline    string           `json:"pipeline"`
	FPS         float64          `json:"fps"`
	ResultsPerS float64          `json:"results_per_s"`
	TargetFPS   float64          `json:"target_fps"`
	Split       int              `json:"split"`
	Mode        string           `json:"mode"`
	Epoch       uint64           `json:"epoch"`
	Slowdown    float64          `json:"slowdown"`
	SourceFPS   float64          `json:"source_fps"` // 0: unpaced or unknown
	Workers     int              `json:"workers"`    // frames in the local stages at once (0: unknown, taken as 1)
	Stages      []StageFigure    `json:"stages"`
	OverheadMS  float64          `json:"overhead_ms"`
	Boundaries  []BoundaryFigure `json:"boundaries"`
	Uplink      Uplink           `json:"uplink"`
	LatencyMS   struct {
		P50 *float64 `json:"p50"`
		P99 *float64 `json:"p99"`
	} `json:"latency_ms"`
	Window struct {
		InFlight int `json:"in_flight"` // spooled frames included
		Size     int `json:"size"`
		// Spooled frames were sent while no cloudproc was reachable
		// (offline = "spool") and await their results outside the window;
		// SpooledBytes are their state bytes (≤ offline_max_bytes).
		Spooled      int `json:"spooled"`
		SpooledBytes int `json:"spooled_bytes"`
	} `json:"window"`
	Counters    Counters `json:"counters"`
	Host        Host     `json:"host"`
	CloudOnline bool     `json:"cloud_online"`
}

// CloudDevice is what one cloudproc measured for one device.
type CloudDevice struct {
	// StagesMS is the smoothed CPU time per frame of each stage run here.
	StagesMS map[string]float64 `json:"stages_ms"`
	// FPS is the rate of results for the device over the last period.
	FPS float64 `json:"fps"`
}

// CloudTelemetry is a cloudproc's periodic report
// (offload/_cloud/<id>/telemetry).
type CloudTelemetry struct {
	TS      time.Time `json:"ts"`
	ID      string    `json:"id"`
	Workers int       `json:"workers"`
	// Utilisation is the workers' busy fraction over the last period.
	Utilisation float64 `json:"utilisation"`
	Queued      int     `json:"queued"`
	Slowdown    float64 `json:"slowdown"`
	// Devices are keyed by device id; under a topic_prefix (behind an
	// upstream broker) by the site's prefix and the id, sites/<site>/<id>.
	Devices    map[string]CloudDevice `json:"devices"`
	Received   int64                  `json:"received"`
	Results    int64                  `json:"results"`
	Duplicates int64                  `json:"duplicates"`
	// Replayed counts remembered results published again for resent
	// frames.
	Replayed int64            `json:"replayed"`
	Rejected map[string]int64 `json:"rejected"`
}
