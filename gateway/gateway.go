// Package gateway runs splitpoint's gateway: the embedded MQTT broker that
// devices and cloudprocs connect to.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/splitpoint/splitpoint/bridge"
	"github.com/splitpoint/splitpoint/broker"
	"github.com/splitpoint/splitpoint/internal/gctune"
	"github.com/splitpoint/splitpoint/tasks"
)

// GCPercent is the GOGC the gateway sets unless GOGC is set (with a soft
// memory limit of half the physical memory: internal/gctune). With Go's
// default GOGC=100 a device at split 1 (600 frames of 421 KB) made the
// gateway collect 168 times and spend 2.1–2.4 s of CPU; with GOGC=200 80
// times and 1.7–1.8 s; with 400 36 times and 1.4–1.6 s — but 400 also let
// the heap of a gateway whose offline sessions hold their 32 MiB of
// frames grow by 160 MiB more (e2e TestStaleSubscriberIsBounded, race
// build; 11 MiB at 200).
const GCPercent = 200

// Run starts the broker, writes "gateway listening on ADDR" as the first
// line of out, and serves until ctx is done. Every stats_interval it logs a
// "broker" line with mochi's counters and the session counters
// (broker.SessionStats: offline sessions, queued messages and bytes,
// discards by limit, expired and evicted sessions, takeovers); the broker
// also publishes the session counters as JSON on broker.SysSessionsTopic.
//
// Run itself keeps no map or queue; the broker's and the control plane's
// are bounded where they are declared (package broker; plane.go).
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	log.Info("go garbage collector", "settings", gctune.Apply(GCPercent))
	b, err := broker.Start(cfg.brokerConfig(), log)
	if err != nil {
		return err
	}
	defer b.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	pl := newPlane(cfg, b.Server(), log)
	if err := pl.subscribe(); err != nil {
		return err
	}
	var bridgeStats func() bridge.Stats // for the metrics; nil without a bridge
	if cfg.Bridge.URL != "" {
		br, err := bridge.Start(ctx, cfg.bridgeConfig(), b.Server(), log)
		if err != nil {
			return err
		}
		defer br.Close()
		pl.link = func() bridge.Link { return br.Stats().Link }
		bridgeStats = br.Stats
	}
	planeCtx, stopPlane := context.WithCancel(ctx)
	planeDone := make(chan struct{})
	go func() { defer close(planeDone); pl.loop(planeCtx) }()
	defer func() { stopPlane(); <-planeDone }()
	ms := startMetrics(cfg, b, pl, bridgeStats, log) // nil when off (metrics.go)
	defer ms.Close()
	ws, err := cfg.startWeb(b, log) // the live view (package web); off when "" or not bound
	if err != nil {
		return err
	}
	defer ws.Close()
	fmt.Fprintf(out, "gateway listening on %s\n", b.Addr())
	if b.TLSAddr() != "" {
		fmt.Fprintf(out, "gateway listening for TLS on %s\n", b.TLSAddr())
	}
	if ws.URL() != "" {
		fmt.Fprintf(out, "gateway live view on %s\n", ws.URL())
	}
	if cfg.Ready != nil {
		cfg.Ready(Addrs{MQTT: b.Addr(), TLS: b.TLSAddr(), Metrics: ms.Addr(), HTTP: ws.Addr()})
	}
	lim := b.Limits()
	log.Info("gateway started", "listen", b.Addr(), "max_message_bytes", cfg.MaxMessageBytes,
		"session_expiry", lim.Expiry, "max_queued_messages", lim.MaxMessages, "max_queued_bytes", lim.MaxBytes,
		"max_queued_bytes_total", lim.MaxBytesTotal, "max_offline_sessions", lim.MaxOfflineSessions,
		"max_retained_messages", cfg.MaxRetainedMessages, "max_retained_bytes", cfg.MaxRetainedBytes,
		"tls_listen", b.TLSAddr(), "auth", cfg.AuthOn(), "users", b.SecurityStats().Users)

	var tick <-chan time.Time
	if cfg.StatsInterval > 0 {
		t := time.NewTicker(cfg.StatsInterval.D())
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("gateway stopping")
			return nil
		case <-hup:
			if err := b.Reload(); err != nil {
				log.Error("reload (SIGHUP) failed; the old password file and certificate stay in force", "error", err)
			} else {
				log.Info("reloaded the password file and certificate (SIGHUP)", "users", b.SecurityStats().Users)
			}
		case <-tick:
			i, st, rt, sec := b.Info(), b.SessionStats(), b.RetainedStats(), b.SecurityStats()
			d := st.Discarded
			log.Info("broker", "clients", i.ClientsConnected, "inflight", i.Inflight,
				"received", i.MessagesReceived, "sent", i.MessagesSent,
				"dropped", i.MessagesDropped, "inflight_dropped", i.InflightDropped,
				"offline_sessions", st.OfflineSessions, "queued", st.QueuedMessages, "queued_bytes", st.QueuedBytes,
				slog.Group("discarded", "count_cap", d.CountCap, "byte_cap", d.ByteCap, "total_cap", d.TotalCap,
					"expired", d.Expired, "session_cap", d.SessionCap, "bytes", st.DiscardedBytes),
				"sessions_expired", st.SessionsExpired, "sessions_evicted", st.SessionsEvicted, "takeovers", st.Takeovers,
				slog.Group("retained", "messages", rt.Messages, "bytes", rt.Bytes, "refused", rt.Refused),
				"denied", sec.Denied, "logins", sec.Logins, "preauth", preauthSummary(sec),
				"malformed", pl.malformedCounts(), "events_dropped", pl.dropped.Load(), "decisions_repaired", pl.repaired.Load())
		}
	}
}

// brokerConfig is the broker's configuration: the listeners, the
// pre-authentication guard, [auth] with every registered pipeline's stage
// names, [tls], and the session and retained-message bounds.
func (cfg *Config) brokerConfig() broker.Config {
	bc := broker.Config{
		Listen:           cfg.Listen,
		AllowAnonymous:   cfg.AllowAnonymous,
		Insecure:         cfg.Insecure,
		MaxConnectBytes:  cfg.MaxConnectBytes,
		ConnectTimeout:   cfg.ConnectTimeout.D(),
		MaxConnections:   cfg.MaxConnections,
		MaxPerAddress:    cfg.MaxConnectionsPerAddress,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		Sessions:         cfg.SessionLimits(),
		MaxRetained:      cfg.MaxRetainedMessages,
		MaxRetainedBytes: cfg.MaxRetainedBytes,
	}
	if cfg.AuthOn() {
		bc.Auth = &broker.Auth{PasswordFile: cfg.Auth.PasswordFile, Cloud: cfg.Auth.Cloud, Admin: cfg.Auth.Admin,
			Stages: tasks.StageNames(), HAPrefix: cfg.HomeAssistant.Prefix}
	}
	if t := cfg.TLS; t.Listen != "" {
		bc.TLS = &broker.TLSListener{Listen: t.Listen, CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile}
	}
	return bc
}

// preauthSummary sums the listeners' pre-authentication refusals.
func preauthSummary(st broker.SecurityStats) map[string]int64 {
	sum := map[string]int64{}
	for _, g := range st.Listeners {
		sum["refused_limit"] += g.RefusedLimit + g.RefusedPerAddress
		sum["timed_out"] += g.TimedOut
		sum["not_connect"] += g.NotConnect
		sum["oversized"] += g.Oversized
		sum["tls_failed"] += g.TLSFailed
		sum["open"] += g.Open
		sum["max_preauth_bytes"] = max(sum["max_preauth_bytes"], g.PreAuthMaxBytes)
	}
	return sum
}

// bridgeConfig is the bridge's configuration from [bridge].
func (cfg *Config) bridgeConfig() bridge.Config {
	b := cfg.Bridge
	return bridge.Config{
		URL: b.URL, ClientID: b.ClientID, Credentials: b.Credentials, Site: b.Site, RemotePrefix: b.RemotePrefix,
		SpoolDir: b.SpoolDir, SpoolMaxBytes: b.SpoolMaxBytes, MaxInflight: b.MaxInflight,
		ProbeInterval: b.ProbeInterval.D(), ProbeBytes: b.ProbeBytes, Stages: tasks.StageNames(),
	}
}
