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
// line of out, and serves until ctx is done.
func Run(ctx context.Context, cfg Config, out io.Writer, log *slog.Logger) error {
	b, err := broker.Start(broker.Config{
		Listen:          cfg.Listen,
		AllowAnonymous:  cfg.AllowAnonymous,
		MaxMessageBytes: cfg.MaxMessageBytes,
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
	log.Info("gateway started", "listen", b.Addr(), "max_message_bytes", cfg.MaxMessageBytes)

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
			i := b.Info()
			log.Info("broker", "clients", i.ClientsConnected, "inflight", i.Inflight,
				"received", i.MessagesReceived, "sent", i.MessagesSent,
				"dropped", i.MessagesDropped, "inflight_dropped", i.InflightDropped,
				"malformed", pl.malformedCounts(), "events_dropped", pl.dropped.Load())
		}
	}
}
