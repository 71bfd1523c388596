package web

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/wire"
)

// Bounds of the view model (Limits' defaults).
const (
	// DefaultMaxDevices bounds the devices the page shows; past it a new
	// device takes the place of the one not online that was heard from
	// least recently, or is ignored (counted) when every device is online.
	DefaultMaxDevices = 1000
	// DefaultHistory is the length of each device's history ring: one
	// point per telemetry report, 600 = 10 minutes at 1 s (20 at the
	// default telemetry_interval of 2 s).
	DefaultHistory = 600
	// DefaultExpiry: a device (or cloudproc) not heard from for this long
	// is forgotten (a device online reports every telemetry_interval).
	DefaultExpiry = time.Hour
	// DefaultMaxClouds bounds the cloudprocs shown (like devices).
	DefaultMaxClouds = 256
	// DefaultMaxFrameBytes bounds one annotated JPEG kept (larger ones
	// are ignored), DefaultMaxFramesBytes all of them together (past it
	// the frames updated least recently are dropped first).
	DefaultMaxFrameBytes  = 1 << 20
	DefaultMaxFramesBytes = 32 << 20
	// maxText bounds the strings kept from a message (a decision's reason,
	// a refused command's error).
	maxText = 600
)

// Limits bound the view model; zero fields take the defaults.
type Limits struct {
	MaxDevices     int
	History        int
	Expiry         time.Duration
	MaxClouds      int
	MaxFrameBytes  int
	MaxFramesBytes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxDevices <= 0 {
		l.MaxDevices = DefaultMaxDevices
	}
	if l.History <= 0 {
		l.History = DefaultHistory
	}
	if l.Expiry <= 0 {
		l.Expiry = DefaultExpiry
	}
	if l.MaxClouds <= 0 {
		l.MaxClouds = DefaultMaxClouds
	}
	if l.MaxFrameBytes <= 0 {
		l.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if l.MaxFramesBytes <= 0 {
		l.MaxFramesBytes = DefaultMaxFramesBytes
	}
	return l
}

// Point is one history sample of a device, taken when its telemetry
// arrived: the gateway's time (Unix milliseconds, strictly increasing per
// device), the measured fps, the split and the target. It is encoded as
// the JSON array [t, fps, split, target].
type Point struct {
	T      int64
	FPS    float64
	Split  int
	Target float64
}

// MarshalJSON encodes the point as [t, fps, split, target].
func (p Point) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 48)
	b = append(b, '[')
	b = strconv.AppendInt(b, p.T, 10)
	b = append(b, ',')
	b = appendFloat(b, p.FPS)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(p.Split), 10)
	b = append(b, ',')
	b = appendFloat(b, p.Target)
	return append(b, ']'), nil
}

// UnmarshalJSON decodes [t, fps, split, target].
func (p *Point) UnmarshalJSON(b []byte) error {
	var a [4]float64
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*p = Point{T: int64(a[0]), FPS: a[1], Split: int(a[2]), Target: a[3]}
	return nil
}

func appendFloat(b []byte, f float64) []byte {
	if f != f || f > 1e12 || f < -1e12 { // NaN or absurd: not JSON
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

// ring is a fixed-size ring of points, oldest first.
type ring struct {
	buf   []Point
	start int
	n     int
}

func (r *ring) push(p Point) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = p
		r.n++
		return
	}
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) last() (Point, bool) {
	if r.n == 0 {
		return Point{}, false
	}
	return r.buf[(r.start+r.n-1)%len(r.buf)], true
}

// after returns the points newer than t, oldest first.
func (r *ring) after(t int64) []Point {
	var out []Point
	for i := 0; i < r.n; i++ {
		if p := r.buf[(r.start+i)%len(r.buf)]; p.T > t {
			out = append(out, p)
		}
	}
	return out
}

// Decision is the gateway's last decision for a device, as shown.
type Decision struct {
	Split        int      `json:"split"`
	Mode         string   `json:"mode"`
	TargetFPS    float64  `json:"target_fps"`
	Reason       string   `json:"reason"`
	PredictedFPS *float64 `json:"predicted_fps"`
	Epoch        uint64   `json:"epoch"`
	CmdID        string   `json:"cmd_id,omitempty"`
	// At is when the gateway saw it (Unix ms).
	At int64 `json:"at"`
}

// CommandError is the last refused command of a device.
type CommandError struct {
	Topic    string `json:"topic"`
	Received string `json:"received"`
	Error    string `json:"error"`
	At       int64  `json:"at"`
}

// Device is one device as the page shows it. Times are the gateway's, in
// Unix milliseconds.
type Device struct {
	ID string `json:"id"`
	// Status is "online", "offline", or "" before the status is known.
	Status   string `json:"status"`
	Pipeline string `json:"pipeline"`
	// Stages is the pipeline's stage count: splits are 1..Stages-1.
	Stages int `json:"stages"`
	// Split, Mode and TargetFPS are what the device applied (its state).
	Split     int     `json:"split"`
	Mode      string  `json:"mode"`
	TargetFPS float64 `json:"target_fps"`
	Slowdown  float64 `json:"slowdown"`
	// From the last telemetry report.
	FPS         float64  `json:"fps"`
	ResultsPerS float64  `json:"results_per_s"`
	LatencyP50  *float64 `json:"latency_p50_ms"`
	LatencyP99  *float64 `json:"latency_p99_ms"`
	CPUPercent  *float64 `json:"cpu_percent"`
	InFlight    int      `json:"in_flight"`
	Window      int      `json:"window"`
	CloudOnline bool     `json:"cloud_online"`
	TelemetryAt int64    `json:"telemetry_at"`
	// Decision is the gateway's last decision (its reason included).
	Decision *Decision `json:"decision"`
	// Error is the last command refused for this device.
	Error *CommandError `json:"error"`
	// Frame numbers the latest annotated JPEG (GET /frame/<id>); 0: none.
	Frame uint64 `json:"frame"`
	// History: in a snapshot every point kept, in an update the points
	// added since the previous update.
	History []Point `json:"history"`
}

// Cloud is one cloudproc as the page shows it.
type Cloud struct {
	ID          string  `json:"id"`
	Online      bool    `json:"online"`
	Workers     int     `json:"workers"`
	Utilisation float64 `json:"utilisation"`
	Queued      int     `json:"queued"`
}

// View is what the page receives: a snapshot (every device with its whole
// history) or an update (the devices changed since the previous update,
// with their new points, and the ids of devices forgotten).
type View struct {
	// Now is the gateway's clock (Unix ms), for "seconds ago" and the chart.
	Now     int64    `json:"now"`
	Devices []Device `json:"devices"`
	Removed []string `json:"removed,omitempty"`
	// Clouds is every cloudproc, in a snapshot and in an update where one
	// changed (nil otherwise).
	Clouds []Cloud `json:"clouds,omitempty"`
	// Ignored counts devices not shown because the model was full.
	Ignored int64 `json:"ignored"`
	// Reset: this view holds everything (each device's whole history);
	// the page replaces what it has. Snapshots, and an update after more
	// devices were forgotten at once than the model holds, are resets.
	Reset bool `json:"reset,omitempty"`
}

type device struct {
	v        Device
	hist     ring
	sentT    int64 // the newest point already sent in an update
	frame    []byte
	frameAt  time.Time
	lastSeen time.Time
}

type cloud struct {
	v        Cloud
	lastSeen time.Time
}

// model is the bounded view model (see Limits). Its methods are safe for
// concurrent use.
type model struct {
	lim Limits

	mu          sync.Mutex
	devs        map[string]*device
	clouds      map[string]*cloud
	frameBytes  int
	dirty       map[string]bool // devices changed since the last update (≤ MaxDevices)
	removed     map[string]bool // devices forgotten since the last update (≤ MaxDevices)
	cloudsDirty bool
	resync      bool // the next update is a snapshot
	ignored     int64
}

func newModel(lim Limits) *model {
	return &model{lim: lim.withDefaults(), devs: map[string]*device{}, clouds: map[string]*cloud{},
		dirty: map[string]bool{}, removed: map[string]bool{}}
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxText {
		s = strings.ToValidUTF8(s[:maxText], "") + "…"
	}
	return s
}

// apply updates the model with one message; unknown or malformed
// messages are ignored.
func (m *model) apply(topic string, payload []byte, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, err := wire.ParseCloudStatusTopic(topic); err == nil {
		if c := m.cloud(id, now, string(payload) == wire.Online); c != nil {
			c.v.Online = string(payload) == wire.Online
			c.lastSeen = now
		}
		return
	}
	if id, err := wire.ParseCloudTelemetryTopic(topic); err == nil {
		var t wire.CloudTelemetry
		if json.Unmarshal(payload, &t) != nil {
			return
		}
		if c := m.cloud(id, now, true); c != nil {
			c.v.Workers, c.v.Utilisation, c.v.Queued = t.Workers, t.Utilisation, t.Queued
			c.lastSeen = now
		}
		return
	}
	if id, rest, err := wire.ParseControlTopic(topic); err == nil {
		switch rest {
		case "split":
			m.onDecision(id, payload, now)
		case "error":
			m.onError(id, payload, now)
		}
		return
	}
	id, leaf, err := wire.ParseDeviceTopic(topic)
	if err != nil {
		return
	}
	switch leaf {
	case "status":
		online := string(payload) == wire.Online
		if !online && string(payload) != wire.Offline {
			return
		}
		if d := m.device(id, now, online); d != nil {
			d.v.Status = string(payload)
			m.touch(id, d, now)
		}
	case "state":
		st, err := wire.ParseDeviceState(payload)
		if err != nil {
			return
		}
		if d := m.device(id, now, true); d != nil {
			d.v.Pipeline, d.v.Stages, d.v.Split, d.v.Mode = clip(st.Pipeline), st.Stages, st.Split, st.Mode
			d.v.TargetFPS, d.v.Slowdown = st.TargetFPS, st.Slowdown
			m.touch(id, d, now)
		}
	case "telemetry":
		m.onTelemetry(id, payload, now)
	case "annotated":
		m.onFrame(id, payload, now)
	}
}

func (m *model) onTelemetry(id string, payload []byte, now time.Time) {
	var t wire.Telemetry
	if json.Unmarshal(payload, &t) != nil || t.Split < 1 {
		return
	}
	d := m.device(id, now, true)
	if d == nil {
		return
	}
	v := &d.v
	v.FPS, v.ResultsPerS, v.LatencyP50, v.LatencyP99 = t.FPS, t.ResultsPerS, t.LatencyMS.P50, t.LatencyMS.P99
	v.CPUPercent, v.InFlight, v.Window, v.CloudOnline = t.Host.CPUPercent, t.Window.InFlight, t.Window.Size, t.CloudOnline
	if v.Split == 0 { // no state yet
		v.Split, v.Mode, v.TargetFPS = t.Split, t.Mode, t.TargetFPS
	}
	if v.Pipeline == "" {
		v.Pipeline = clip(t.Pipeline)
	}
	if v.Status == "" {
		v.Status = wire.Online // it reports, so it is online
	}
	p := Point{T: ms(now), FPS: t.FPS, Split: t.Split, Target: t.TargetFPS}
	if last, ok := d.hist.last(); ok && p.T <= last.T {
		p.T = last.T + 1
	}
	d.hist.push(p)
	v.TelemetryAt = p.T
	m.touch(id, d, now)
}

func (m *model) onDecision(id string, payload []byte, now time.Time) {
	if len(payload) == 0 {
		return // cleared; the gateway republishes it
	}
	dec, err := wire.ParseDecision(payload)
	if err != nil {
		return
	}
	d := m.device(id, now, true)
	if d == nil {
		return
	}
	d.v.Decision = &Decision{Split: dec.Split, Mode: dec.Mode, TargetFPS: dec.TargetFPS, Reason: clip(dec.Reason),
		PredictedFPS: dec.PredictedFPS, Epoch: dec.Epoch, CmdID: clip(dec.CmdID), At: ms(now)}
	m.touch(id, d, now)
}

func (m *model) onError(id string, payload []byte, now time.Time) {
	var e wire.ControlError
	if json.Unmarshal(payload, &e) != nil {
		return
	}
	d := m.devs[id] // errors alone do not make a device
	if d == nil {
		return
	}
	d.v.Error = &CommandError{Topic: clip(e.Topic), Received: clip(e.Received), Error: clip(e.Error), At: ms(now)}
	m.touch(id, d, now)
}

func (m *model) onFrame(id string, payload []byte, now time.Time) {
	d := m.devs[id] // frames alone do not make a device
	if d == nil || !isJPEG(payload) || len(payload) > m.lim.MaxFrameBytes {
		return
	}
	m.frameBytes += len(payload) - len(d.frame)
	d.frame, d.frameAt = payload, now
	d.v.Frame++
	for m.frameBytes > m.lim.MaxFramesBytes {
		var oldest *device
		for _, o := range m.devs {
			if o.frame != nil && o != d && (oldest == nil || o.frameAt.Before(oldest.frameAt)) {
				oldest = o
			}
		}
		if oldest == nil {
			break
		}
		m.frameBytes -= len(oldest.frame)
		oldest.frame = nil
	}
	m.touch(id, d, now)
}

func isJPEG(b []byte) bool { return len(b) > 3 && b[0] == 0xFF && b[1] == 0xD8 }

func (m *model) touch(id string, d *device, now time.Time) {
	d.lastSeen = now
	m.dirty[id] = true
}

// device returns the device, creating it when create is set and there is
// room (evicting the device not online heard from least recently), or nil.
func (m *model) device(id string, now time.Time, create bool) *device {
	if d, ok := m.devs[id]; ok {
		return d
	}
	if !create {
		return nil
	}
	if len(m.devs) >= m.lim.MaxDevices {
		var victim string
		var oldest time.Time
		for vid, d := range m.devs {
			if d.v.Status != wire.Online && (victim == "" || d.lastSeen.Before(oldest)) {
				victim, oldest = vid, d.lastSeen
			}
		}
		if victim == "" {
			m.ignored++
			return nil
		}
		m.forget(victim)
	}
	d := &device{v: Device{ID: id}, hist: ring{buf: make([]Point, m.lim.History)}, lastSeen: now}
	m.devs[id] = d
	delete(m.removed, id)
	return d
}

func (m *model) forget(id string) {
	d := m.devs[id]
	if d == nil {
		return
	}
	m.frameBytes -= len(d.frame)
	delete(m.devs, id)
	delete(m.dirty, id)
	if len(m.removed) < m.lim.MaxDevices {
		m.removed[id] = true
	} else {
		m.resync = true // the next update is a reset
	}
}

func (m *model) cloud(id string, now time.Time, create bool) *cloud {
	if c, ok := m.clouds[id]; ok {
		m.cloudsDirty = true
		return c
	}
	if !create || len(m.clouds) >= m.lim.MaxClouds {
		return nil
	}
	c := &cloud{v: Cloud{ID: id}, lastSeen: now}
	m.clouds[id] = c
	m.cloudsDirty = true
	return c
}

// sweep forgets the devices and cloudprocs not heard from for
// Limits.Expiry (offline ones, or online ones whose last will never came).
func (m *model) sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, d := range m.devs {
		if now.Sub(d.lastSeen) > m.lim.Expiry {
			m.forget(id)
		}
	}
	for id, c := range m.clouds {
		if now.Sub(c.lastSeen) > m.lim.Expiry {
			delete(m.clouds, id)
			m.cloudsDirty = true
		}
	}
}

func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}

func (m *model) cloudList() []Cloud {
	out := make([]Cloud, 0, len(m.clouds))
	for _, c := range m.clouds {
		out = append(out, c.v)
	}
	sortBy(out, func(c Cloud) string { return c.ID })
	return out
}

// snapshot is every device with its whole history. Call with m.mu held.
func (m *model) snapshotLocked(now time.Time) View {
	v := View{Now: ms(now), Devices: make([]Device, 0, len(m.devs)), Clouds: m.cloudList(), Ignored: m.ignored, Reset: true}
	for _, d := range m.devs {
		dv := d.v
		dv.History = d.hist.after(math.MinInt64)
		v.Devices = append(v.Devices, dv)
	}
	sortBy(v.Devices, func(d Device) string { return d.ID })
	return v
}

// snapshot is every device with its whole history.
func (m *model) snapshot(now time.Time) View {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked(now)
}

// update takes the changes since the previous update: the devices changed
// with their new points, the devices forgotten, the cloudprocs if one
// changed. ok is false when nothing changed.
func (m *model) update(now time.Time) (v View, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.dirty) == 0 && len(m.removed) == 0 && !m.cloudsDirty && !m.resync {
		return View{}, false
	}
	if m.resync {
		v = m.snapshotLocked(now)
		for _, d := range m.devs {
			if p, ok := d.hist.last(); ok {
				d.sentT = p.T
			}
		}
		clear(m.dirty)
		clear(m.removed)
		m.cloudsDirty, m.resync = false, false
		return v, true
	}
	v = View{Now: ms(now), Devices: make([]Device, 0, len(m.dirty)), Ignored: m.ignored}
	for id := range m.dirty {
		d := m.devs[id]
		dv := d.v
		dv.History = d.hist.after(d.sentT)
		if len(dv.History) > 0 {
			d.sentT = dv.History[len(dv.History)-1].T
		}
		v.Devices = append(v.Devices, dv)
	}
	sortBy(v.Devices, func(d Device) string { return d.ID })
	for id := range m.removed {
		v.Removed = append(v.Removed, id)
	}
	sortBy(v.Removed, func(s string) string { return s })
	if m.cloudsDirty {
		v.Clouds = m.cloudList()
	}
	clear(m.dirty)
	clear(m.removed)
	m.cloudsDirty = false
	return v, true
}

// frame returns the latest annotated JPEG of a device (never modified
// afterwards) and its number.
func (m *model) frame(id string) ([]byte, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devs[id]
	if d == nil || d.frame == nil {
		return nil, 0
	}
	return d.frame, d.v.Frame
}

// stages returns the stage count of a known device (0: no state yet) and
// whether the device is known.
func (m *model) stages(id string) (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.devs[id]
	if d == nil {
		return 0, false
	}
	return d.v.Stages, true
}
