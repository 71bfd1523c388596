package device

import (
	"context"
	"sort"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/splitpoint/splitpoint/internal/tick"
)

// largeMessage is the size from which a publish's PUBACK time measures the
// link's capacity rather than its round trip.
const largeMessage = 64 << 10

type pendingAck struct {
	tok   paho.Token
	start time.Time
	bytes int
}

// uplink collects publish→PUBACK times and estimates the link's capacity.
type uplink struct {
	mu       sync.Mutex
	acks     [64]float64 // ms, ring
	n        int
	capacity float64 // bytes/s, smoothed
	capAt    time.Time
}

func (u *uplink) observe(bytes int, took time.Duration, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.acks[u.n%len(u.acks)] = ms(took)
	u.n++
	if bytes >= largeMessage && took > 0 {
		c := float64(bytes) / took.Seconds()
		if u.capAt.IsZero() {
			u.capacity = c
		} else {
			u.capacity += 0.3 * (c - u.capacity)
		}
		u.capAt = now
	}
}

// snapshot returns the median ack time, the capacity and its age.
func (u *uplink) snapshot(now time.Time) (ackP50, capacity, capAge *float64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n := min(u.n, len(u.acks)); n > 0 {
		v := append([]float64(nil), u.acks[:n]...)
		sort.Float64s(v)
		m := round3(v[n/2])
		ackP50 = &m
	}
	if !u.capAt.IsZero() {
		c, a := float64(int64(u.capacity)), age(now, u.capAt)
		capacity, capAge = &c, &a
	}
	return
}

func (u *uplink) capacityAge(now time.Time) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.capAt.IsZero() {
		return time.Duration(1 << 62)
	}
	return now.Sub(u.capAt)
}

// watchAcks times every publish handed to it.
func (d *device) watchAcks(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-d.acks:
			select {
			case <-p.tok.Done():
				if err := p.tok.Error(); err != nil {
					d.log.Warn("publish failed; the frame is resent after resend_after", "error", err)
					continue
				}
				d.up.observe(p.bytes, time.Since(p.start), time.Now())
			case <-ctx.Done():
				return
			}
		}
	}
}

// probeLoop measures the uplink's capacity when the states are too small to
// show it: every probe_interval without a large publish it sends probe_bytes
// to offload/<device>/probe (no one subscribes; the broker acknowledges).
func (d *device) probeLoop(ctx context.Context) {
	period := d.cfg.ProbeInterval.D()
	if period <= 0 {
		return
	}
	payload := make([]byte, d.cfg.ProbeBytes)
	tick.Every(ctx, period/2, func(now time.Time) bool {
		if d.up.capacityAge(now) >= period && d.client.IsConnectionOpen() {
			d.track(d.client.Publish(d.probeTopic, 1, false, payload), len(payload))
		}
		return true
	})
}

// track hands a publish token to the ack watcher.
func (d *device) track(tok paho.Token, bytes int) {
	select {
	case d.acks <- pendingAck{tok: tok, start: time.Now(), bytes: bytes}:
	default: // the watcher is behind; this publish is not timed
	}
}
