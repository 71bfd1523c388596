// Package gateway runs splitpoint's gateway: the embedded MQTT broker that
// devices and cloudprocs connect to.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/splitpoint/splitpoint/broker"
)

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
	b, err := broker.Start(broker.Config{
		Listen:           cfg.Listen,
		AllowAnonymous:   cfg.AllowAnonymous,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		Sessions:         cfg.SessionLimits(),
		MaxRetained:      cfg.MaxRetainedMessages,
		MaxRetainedBytes: cfg.MaxRetainedBytes,
	}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	pl := newPlane(cfg, b.Server(), log)
	if err := pl.subscribe(); err != nil {
		return err
	}
	planeCtx, stopPlane := context.WithCancel(ctx)
	planeDone := make(chan struct{})
	go func() { defer close(planeDone); pl.loop(planeCtx) }()
	defer func() { stopPlane(); <-planeDone }()
	fmt.Fprintf(out, "gateway listening on %s\n", b.Addr())
	if cfg.Ready != nil {
		cfg.Ready(b.Addr())
	}
	lim := b.Limits()
	log.Info("gateway started", "listen", b.Addr(), "max_message_bytes", cfg.MaxMessageBytes,
		"session_expiry", lim.Expiry, "max_queued_messages", lim.MaxMessages, "max_queued_bytes", lim.MaxBytes,
		"max_queued_bytes_total", lim.MaxBytesTotal, "max_offline_sessions", lim.MaxOfflineSessions,
		"max_retained_messages", cfg.MaxRetainedMessages, "max_retained_bytes", cfg.MaxRetainedBytes)

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
		case <-tick:
			i, st, rt := b.Info(), b.SessionStats(), b.RetainedStats()
			d := st.Discarded
			log.Info("broker", "clients", i.ClientsConnected, "inflight", i.Inflight,
				"received", i.MessagesReceived, "sent", i.MessagesSent,
				"dropped", i.MessagesDropped, "inflight_dropped", i.InflightDropped,
				"offline_sessions", st.OfflineSessions, "queued", st.QueuedMessages, "queued_bytes", st.QueuedBytes,
				slog.Group("discarded", "count_cap", d.CountCap, "byte_cap", d.ByteCap, "total_cap", d.TotalCap,
					"expired", d.Expired, "session_cap", d.SessionCap, "bytes", st.DiscardedBytes),
				"sessions_expired", st.SessionsExpired, "sessions_evicted", st.SessionsEvicted, "takeovers", st.Takeovers,
				slog.Group("retained", "messages", rt.Messages, "bytes", rt.Bytes, "refused", rt.Refused),
				"malformed", pl.malformedCounts(), "events_dropped", pl.dropped.Load(), "decisions_repaired", pl.repaired.Load())
		}
	}
}
