package gateway

import (
	"log/slog"
	"time"

	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/splitpoint/splitpoint/bridge"
	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/controller"
	"github.com/splitpoint/splitpoint/internal/metrics"
	"github.com/splitpoint/splitpoint/wire"
)

// The gateway's Prometheus metrics (metrics_listen). Three collectors read
// what the gateway already keeps, at scrape time: the broker's counters
// (brokerCollector), the control plane's devices (planeCollector, from a
// copy the plane's goroutine makes on request) and, with a bridge, the
// bridge's state (bridgeCollector). Nothing on the message path is touched.

// viewTimeout bounds a scrape's wait for the plane's goroutine.
const viewTimeout = 5 * time.Second

// startMetrics serves the gateway's metrics on cfg.MetricsListen (nil when
// off or when the address cannot be bound; see metrics.Start);
// bridgeStats is nil without a bridge.
func startMetrics(cfg Config, b *broker.Broker, pl *plane, bridgeStats func() bridge.Stats, log *slog.Logger) *metrics.Server {
	if cfg.MetricsListen == "" {
		return nil
	}
	reg := metrics.NewRegistry()
	reg.MustRegister(newBrokerCollector(brokerSource{
		info: b.Info, sessions: b.SessionStats, retained: b.RetainedStats, security: b.SecurityStats,
		malformed: pl.malformedCounts, eventsDropped: pl.dropped.Load, repaired: pl.repaired.Load,
	}))
	reg.MustRegister(newPlaneCollector(func() (planeView, bool) { return pl.requestView(viewTimeout) }, time.Now,
		cfg.MetricsMaxDevices, cfg.MetricsForgetAfter.D()))
	if bridgeStats != nil {
		reg.MustRegister(newBridgeCollector(bridgeStats))
	}
	return metrics.Start(cfg.MetricsListen, reg, log, nil)
}

// brokerSource is what brokerCollector reads.
type brokerSource struct {
	info      func() *system.Info
	sessions  func() broker.SessionStats
	retained  func() broker.RetainedStats
	security  func() broker.SecurityStats
	malformed func() map[string]int64
	// eventsDropped and repaired are the plane's counters.
	eventsDropped, repaired func() int64
}

// Label values of splitpoint_gateway_messages_dropped_total beyond the
// session discards' (count_cap, byte_cap, total_cap, expired, session_cap).
const (
	droppedSlowSubscriber = "slow_subscriber" // mochi: the client's write queue was full
	droppedInflight       = "inflight"        // mochi: the client's inflight quota
)

// denyReasons are the values of splitpoint_gateway_denied_total's reason.
var denyReasons = []string{broker.DenyNoCredentials, broker.DenyBadCredentials, broker.DenyRateLimited, broker.DenyCertMismatch,
	broker.DenyIdentity, broker.DenyClientID, broker.DenyWill, broker.DenyPublish, broker.DenyRead, broker.DenyRetain}

type brokerCollector struct {
	src brokerSource
	set metrics.Set

	clients, subscriptions, inflight             metrics.Desc
	msgsIn, msgsOut, bytesIn, bytesOut, dropped  metrics.Desc
	discardedBytes, offline, queued, queuedBytes metrics.Desc
	expired, evicted, takeovers                  metrics.Desc
	retained, retainedBytes, retainedRefused     metrics.Desc
	denied, logins, users, reloads, reloadErrors metrics.Desc
	accepted, open, preauthClosed, preauthMax    metrics.Desc
	malformed, eventsDropped, repaired           metrics.Desc
}

func newBrokerCollector(src brokerSource) *brokerCollector {
	c := &brokerCollector{src: src}
	s := &c.set
	const p = "splitpoint_gateway_"
	c.clients = s.Gauge(p+"clients_connected", "MQTT clients connected now (the gateway's own inline client not counted).")
	c.subscriptions = s.Gauge(p+"subscriptions", "Subscriptions the broker holds now.")
	c.inflight = s.Gauge(p+"inflight_messages", "QoS 1 messages sent to clients and not yet acknowledged, now.")
	c.msgsIn = s.Counter(p+"messages_received_total", "PUBLISH packets received from clients.")
	c.msgsOut = s.Counter(p+"messages_sent_total", "PUBLISH packets sent to clients.")
	c.bytesIn = s.Counter(p+"received_bytes_total", "Bytes received from clients.")
	c.bytesOut = s.Counter(p+"sent_bytes_total", "Bytes sent to clients.")
	c.dropped = s.Counter(p+"messages_dropped_total", "Messages the broker dropped, by reason: slow_subscriber (a client's write queue was full), inflight (a client's inflight quota), and the offline-session bounds count_cap (max_queued_messages), byte_cap (max_queued_bytes), total_cap (max_queued_bytes_total), expired (session_expiry), session_cap (max_offline_sessions).", "reason")
	c.discardedBytes = s.Counter(p+"session_discarded_bytes_total", "Bytes of the messages discarded from offline sessions.")
	c.offline = s.Gauge(p+"offline_sessions", "Persistent sessions whose client is gone, kept now.")
	c.queued = s.Gauge(p+"offline_queued_messages", "Messages kept for offline sessions now.")
	c.queuedBytes = s.Gauge(p+"offline_queued_bytes", "Bytes kept for offline sessions now (topic, payload and 1 KiB per message).")
	c.expired = s.Counter(p+"sessions_expired_total", "Offline sessions deleted after session_expiry.")
	c.evicted = s.Counter(p+"sessions_evicted_total", "Offline sessions deleted because of max_offline_sessions.")
	c.takeovers = s.Counter(p+"takeovers_total", "Connections closed because a newer connection took over their client id.")
	c.retained = s.Gauge(p+"retained_messages", "Retained messages kept now (the broker's own $SYS topics not counted).")
	c.retainedBytes = s.Gauge(p+"retained_bytes", "Topic and payload bytes of the retained messages kept now.")
	c.retainedRefused = s.Counter(p+"retained_refused_total", "Retained publishes delivered but not kept because max_retained_messages or max_retained_bytes was reached.")
	c.denied = s.Counter(p+"denied_total", "Refusals of the authentication and the ACL, by reason (no_credentials, bad_credentials, rate_limited, cert_mismatch, bad_identity, client_id, will, publish, read, retain).", "reason")
	c.logins = s.Counter(p+"logins_total", "Successful logins.")
	c.users = s.Gauge(p+"users", "Users in the password file (0 without [auth]).")
	c.reloads = s.Counter(p+"password_reloads_total", "Password file reloads (SIGHUP).")
	c.reloadErrors = s.Counter(p+"password_reload_errors_total", "Password file reloads that failed (the old file stays in force).")
	c.accepted = s.Counter(p+"connections_accepted_total", "Connections accepted, by listener (tcp, tls).", "listener")
	c.open = s.Gauge(p+"connections_open", "Connections open now, by listener.", "listener")
	c.preauthClosed = s.Counter(p+"preauth_closed_total", "Connections closed before login by the pre-authentication guard, by listener and reason: max_connections, max_connections_per_address, connect_timeout, not_connect, oversized (CONNECT above max_connect_bytes), tls_failed.", "listener", "reason")
	c.preauthMax = s.Gauge(p+"preauth_read_max_bytes", "The most bytes any connection delivered to the broker before it logged in, by listener.", "listener")
	c.malformed = s.Counter(p+"malformed_messages_total", "Messages the control plane could not use, by reason (topic, state, telemetry, cloud_telemetry).", "reason")
	c.eventsDropped = s.Counter(p+"control_events_dropped_total", "Messages dropped because the control plane's event queue (4096) was full.")
	c.repaired = s.Counter(p+"decisions_repaired_total", "Decisions republished because the retained one was cleared or overwritten or the device disagreed.")
	return c
}

// Describe implements prometheus.Collector.
func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	i, st, rt, sec := c.src.info(), c.src.sessions(), c.src.retained(), c.src.security()
	c.clients.Emit(ch, float64(i.ClientsConnected))
	c.subscriptions.Emit(ch, float64(i.Subscriptions))
	c.inflight.Emit(ch, float64(i.Inflight))
	c.msgsIn.Emit(ch, float64(i.MessagesReceived))
	c.msgsOut.Emit(ch, float64(i.MessagesSent))
	c.bytesIn.Emit(ch, float64(i.BytesReceived))
	c.bytesOut.Emit(ch, float64(i.BytesSent))
	d := st.Discarded
	for _, r := range []struct {
		reason string
		n      int64
	}{{droppedSlowSubscriber, i.MessagesDropped}, {droppedInflight, i.InflightDropped}, {"count_cap", d.CountCap},
		{"byte_cap", d.ByteCap}, {"total_cap", d.TotalCap}, {"expired", d.Expired}, {"session_cap", d.SessionCap}} {
		c.dropped.Emit(ch, float64(r.n), r.reason)
	}
	c.discardedBytes.Emit(ch, float64(st.DiscardedBytes))
	c.offline.Emit(ch, float64(st.OfflineSessions))
	c.queued.Emit(ch, float64(st.QueuedMessages))
	c.queuedBytes.Emit(ch, float64(st.QueuedBytes))
	c.expired.Emit(ch, float64(st.SessionsExpired))
	c.evicted.Emit(ch, float64(st.SessionsEvicted))
	c.takeovers.Emit(ch, float64(st.Takeovers))
	c.retained.Emit(ch, float64(rt.Messages))
	c.retainedBytes.Emit(ch, float64(rt.Bytes))
	c.retainedRefused.Emit(ch, float64(rt.Refused))
	for _, r := range denyReasons {
		c.denied.Emit(ch, float64(sec.Denied[r]), r)
	}
	c.logins.Emit(ch, float64(sec.Logins))
	c.users.Emit(ch, float64(sec.Users))
	c.reloads.Emit(ch, float64(sec.Reloads))
	c.reloadErrors.Emit(ch, float64(sec.ReloadErrors))
	for l, g := range sec.Listeners {
		c.accepted.Emit(ch, float64(g.Accepted), l)
		c.open.Emit(ch, float64(g.Open), l)
		for _, r := range []struct {
			reason string
			n      int64
		}{{"max_connections", g.RefusedLimit}, {"max_connections_per_address", g.RefusedPerAddress}, {"connect_timeout", g.TimedOut},
			{"not_connect", g.NotConnect}, {"oversized", g.Oversized}, {"tls_failed", g.TLSFailed}} {
			c.preauthClosed.Emit(ch, float64(r.n), l, r.reason)
		}
		c.preauthMax.Emit(ch, float64(g.PreAuthMaxBytes), l)
	}
	for kind, n := range c.src.malformed() {
		c.malformed.Emit(ch, float64(n), kind)
	}
	c.eventsDropped.Emit(ch, float64(c.src.eventsDropped()))
	c.repaired.Emit(ch, float64(c.src.repaired()))
}

// deviceView is what the metrics show of one device: a copy made on the
// plane's goroutine.
type deviceView struct {
	ID        string
	Online    bool
	Heard     time.Time // last state, status or telemetry from the device
	Split     int
	Mode      string
	TargetFPS float64
	Decisions uint64 // decisions published for it by this gateway process
	// MeasuredFPS is the frame rate of its last telemetry (nil: none yet).
	MeasuredFPS *float64
	// Bottleneck and PredictedFPS are the controller's at its last step,
	// in automatic mode only ("" / nil otherwise).
	Bottleneck   string
	PredictedFPS *float64
}

// planeView is the plane's state for the metrics.
type planeView struct {
	Devices      []deviceView
	CloudsOnline int
	// CloudWorkers sums the workers the online cloudprocs report.
	CloudWorkers int
}

// view copies what the metrics show; it runs on the plane's goroutine.
func (p *plane) view() planeView {
	v := planeView{Devices: make([]deviceView, 0, len(p.devs))}
	for _, c := range p.clouds {
		if c.online {
			v.CloudsOnline++
			if c.tele != nil {
				v.CloudWorkers += c.tele.Workers
			}
		}
	}
	for _, d := range p.devs {
		dv := deviceView{ID: d.id, Online: d.online, Heard: d.heard, Split: d.split, Mode: d.mode, TargetFPS: d.target, Decisions: d.epoch}
		if d.tele != nil {
			fps := d.tele.FPS
			dv.MeasuredFPS = &fps
		}
		if d.mode == wire.ModeAuto && d.bottleneck != "" {
			pred := d.predicted
			dv.Bottleneck, dv.PredictedFPS = d.bottleneck, &pred
		}
		v.Devices = append(v.Devices, dv)
	}
	return v
}

// requestView asks the plane's goroutine for a view; false when it does not
// answer within timeout (it is not running, or stopping).
func (p *plane) requestView(timeout time.Duration) (planeView, bool) {
	reply := make(chan planeView, 1) // the loop never blocks on it
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case p.viewReq <- reply:
	case <-t.C:
		return planeView{}, false
	}
	select {
	case v := <-reply:
		return v, true
	case <-t.C:
		return planeView{}, false
	}
}

// lastStep is what the metrics keep of a controller step: the bottleneck
// the model predicts at the split it chose ("link" for the uplink when a
// bridge's link is the devices' uplink) and the predicted rate.
func lastStep(s controller.Snapshot, dec controller.Decision, bridged bool) (bottleneck string, predicted float64) {
	b := controller.Predict(s, dec.Split).Bottleneck
	if bridged && b == "uplink" {
		b = "link"
	}
	return b, dec.PredictedFPS
}

type planeCollector struct {
	view        func() (planeView, bool)
	now         func() time.Time
	maxDevices  int
	forgetAfter time.Duration
	set         metrics.Set

	devices, online, clouds, workers, omitted, up                  metrics.Desc
	devOnline, split, mode, target, measured, predicted, decisions metrics.Desc
	bottleneck, heard                                              metrics.Desc
}

func newPlaneCollector(view func() (planeView, bool), now func() time.Time, maxDevices int, forgetAfter time.Duration) *planeCollector {
	c := &planeCollector{view: view, now: now, maxDevices: maxDevices, forgetAfter: forgetAfter}
	s := &c.set
	const p = "splitpoint_gateway_"
	c.up = s.Gauge(p+"control_plane_up", "1 when the control plane answered this scrape (the per-device series below are then present), 0 when it did not within 5 s.")
	c.devices = s.Gauge(p+"devices", "Devices the control plane tracks (at most 10000).")
	c.online = s.Gauge(p+"devices_online", "Tracked devices whose status is online.")
	c.clouds = s.Gauge(p+"cloudprocs_online", "cloudprocs whose status is online.")
	c.workers = s.Gauge(p+"cloud_workers", "Workers of the online cloudprocs, from their telemetry.")
	c.omitted = s.Gauge(p+"metrics_omitted_devices", "Devices online or heard from within metrics_forget_after that have no per-device series because of metrics_max_devices.")
	c.devOnline = s.Gauge(p+"device_online", "1 while the device's status is online.", "device")
	c.split = s.Gauge(p+"device_split", "The split decided for the device: stages it runs itself.", "device")
	c.mode = s.Gauge(p+"device_mode", "1 for the device's split mode (auto or manual).", "device", "mode")
	c.target = s.Gauge(p+"device_target_fps", "The device's target frame rate, frames per second.", "device")
	c.measured = s.Gauge(p+"device_measured_fps", "The frame rate of the device's last telemetry, frames per second.", "device")
	c.predicted = s.Gauge(p+"device_predicted_fps", "The frame rate the controller predicted at its last step for the split it chose (automatic mode), frames per second.", "device")
	c.decisions = s.Counter(p+"device_decisions_total", "Decisions published for the device by this gateway process (its epoch).", "device")
	c.bottleneck = s.Gauge(p+"device_bottleneck", "1 for the bottleneck the controller predicted at its last step (automatic mode): device, uplink, link (a bridge's), cloud or source.", "device", "bottleneck")
	c.heard = s.Gauge(p+"device_last_heard_timestamp_seconds", "When the gateway last received the device's state, status or telemetry, Unix time.", "device")
	return c
}

// Describe implements prometheus.Collector.
func (c *planeCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect implements prometheus.Collector. Devices offline and not heard
// from for forgetAfter have no series, and at most maxDevices have.
func (c *planeCollector) Collect(ch chan<- prometheus.Metric) {
	v, ok := c.view()
	c.up.Emit(ch, metrics.Bool(ok))
	if !ok {
		return
	}
	heard := make([]metrics.Heard, len(v.Devices))
	online := 0
	for i, d := range v.Devices {
		heard[i] = metrics.Heard{Key: d.ID, Online: d.Online, At: d.Heard}
		if d.Online {
			online++
		}
	}
	keep, omitted := metrics.Select(heard, c.now(), c.maxDevices, c.forgetAfter)
	c.devices.Emit(ch, float64(len(v.Devices)))
	c.online.Emit(ch, float64(online))
	c.clouds.Emit(ch, float64(v.CloudsOnline))
	c.workers.Emit(ch, float64(v.CloudWorkers))
	c.omitted.Emit(ch, float64(omitted))
	for _, i := range keep {
		d := v.Devices[i]
		c.devOnline.Emit(ch, metrics.Bool(d.Online), d.ID)
		c.split.Emit(ch, float64(d.Split), d.ID)
		c.mode.Emit(ch, 1, d.ID, d.Mode)
		c.target.Emit(ch, d.TargetFPS, d.ID)
		c.decisions.Emit(ch, float64(d.Decisions), d.ID)
		if d.MeasuredFPS != nil {
			c.measured.Emit(ch, *d.MeasuredFPS, d.ID)
		}
		if d.PredictedFPS != nil {
			c.predicted.Emit(ch, *d.PredictedFPS, d.ID)
		}
		if d.Bottleneck != "" {
			c.bottleneck.Emit(ch, 1, d.ID, d.Bottleneck)
		}
		if !d.Heard.IsZero() {
			c.heard.Emit(ch, float64(d.Heard.UnixNano())/1e9, d.ID)
		}
	}
}

type bridgeCollector struct {
	stats func() bridge.Stats
	set   metrics.Set

	connected, forwarded, acked, inflight, spooled, down, teleDropped metrics.Desc
	spoolMsgs, spoolBytes, spoolMax, spoolDiscarded, spoolDiscBytes   metrics.Desc
	capacity, ackedRate, rtt                                          metrics.Desc
}

func newBridgeCollector(stats func() bridge.Stats) *bridgeCollector {
	c := &bridgeCollector{stats: stats}
	s := &c.set
	const p = "splitpoint_gateway_bridge_"
	c.connected = s.Gauge(p+"connected", "1 while the bridge is connected to the upstream broker.")
	c.forwarded = s.Counter(p+"messages_forwarded_total", "QoS 1 messages published upstream (resends of the spool included).")
	c.acked = s.Counter(p+"messages_acknowledged_total", "QoS 1 messages the upstream acknowledged.")
	c.inflight = s.Gauge(p+"inflight_messages", "Messages published upstream and not yet acknowledged (at most max_inflight).")
	c.spooled = s.Counter(p+"messages_spooled_total", "Messages appended to the disk spool.")
	c.down = s.Counter(p+"messages_down_total", "Messages brought down from the upstream to the local broker.")
	c.teleDropped = s.Counter(p+"telemetry_dropped_total", "QoS 0 telemetry messages dropped while the link was down.")
	c.spoolMsgs = s.Gauge(p+"spool_messages", "Messages waiting in the disk spool.")
	c.spoolBytes = s.Gauge(p+"spool_bytes", "Bytes waiting in the disk spool.")
	c.spoolMax = s.Gauge(p+"spool_max_bytes", "The spool's bound (spool_max_bytes).")
	c.spoolDiscarded = s.Counter(p+"spool_discarded_total", "Messages discarded from the spool, oldest first, to stay within spool_max_bytes.")
	c.spoolDiscBytes = s.Counter(p+"spool_discarded_bytes_total", "Bytes of the messages discarded from the spool.")
	c.capacity = s.Gauge(p+"link_capacity_bytes_per_second", "The link's estimated capacity (absent until measured).")
	c.ackedRate = s.Gauge(p+"link_acknowledged_bytes_per_second", "Bytes the upstream acknowledged per second over the last few seconds.")
	c.rtt = s.Gauge(p+"rtt_seconds", "Median PUBACK time of small publishes (absent until measured).")
	return c
}

// Describe implements prometheus.Collector.
func (c *bridgeCollector) Describe(ch chan<- *prometheus.Desc) { c.set.Describe(ch) }

// Collect implements prometheus.Collector.
func (c *bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	c.connected.Emit(ch, metrics.Bool(st.Connected))
	c.forwarded.Emit(ch, float64(st.Forwarded))
	c.acked.Emit(ch, float64(st.Acknowledged))
	c.inflight.Emit(ch, float64(st.Inflight))
	c.spooled.Emit(ch, float64(st.Spooled))
	c.down.Emit(ch, float64(st.Down))
	c.teleDropped.Emit(ch, float64(st.TelemetryDropped))
	c.spoolMsgs.Emit(ch, float64(st.Spool.Messages))
	c.spoolBytes.Emit(ch, float64(st.Spool.Bytes))
	c.spoolMax.Emit(ch, float64(st.Spool.MaxBytes))
	c.spoolDiscarded.Emit(ch, float64(st.Spool.Discarded))
	c.spoolDiscBytes.Emit(ch, float64(st.Spool.DiscardedBytes))
	if st.Link.CapacityBps > 0 {
		c.capacity.Emit(ch, st.Link.CapacityBps)
	}
	c.ackedRate.Emit(ch, st.Link.AckedBps)
	if st.Link.RTTms > 0 {
		c.rtt.Emit(ch, st.Link.RTTms/1000)
	}
}
