// Package metrics serves splitpoint's Prometheus metrics. Each process has
// its own registry (never the client library's global one, so that tests
// and in-process runs of several binaries do not collide) holding the Go
// runtime and process collectors and the binary's own collectors, which
// read the binary's existing counters at scrape time. An HTTP listener
// serves it on /metrics (client_golang's promhttp).
//
// Per-device series are bounded: Select keeps at most a configured number
// of devices and leaves out those offline and not heard from for a while.
// The collectors build their series anew at every scrape, so a device left
// out is simply absent from the next scrape (Prometheus marks its series
// stale); nothing is registered or deleted per device.
package metrics

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Defaults of the per-device bounds (metrics_max_devices,
// metrics_forget_after).
const (
	DefaultMaxDevices  = 1000
	DefaultForgetAfter = 10 * time.Minute
	// MaxMaxDevices bounds metrics_max_devices.
	MaxMaxDevices = 10000
)

// NewRegistry returns a registry with the Go runtime, process and build
// information collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return reg
}

// CheckListen checks a metrics_listen value: "" (off) or host:port, the
// host an IP address, "localhost" or empty (every interface), the port
// 0..65535 (0 picks a free one).
func CheckListen(s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:9464; \"\" turns metrics off)", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 || strings.TrimSpace(port) != port {
		return fmt.Errorf("%q: port %q is not 0..65535", s, port)
	}
	if host != "" && !strings.EqualFold(host, "localhost") && net.ParseIP(host) == nil {
		return fmt.Errorf("%q: host %q is not an IP address or localhost", s, host)
	}
	return nil
}

// CheckBounds checks metrics_max_devices and metrics_forget_after; it
// returns the offending key and why.
func CheckBounds(maxDevices int, forgetAfter time.Duration) (key string, err error) {
	switch {
	case maxDevices < 0 || maxDevices > MaxMaxDevices:
		return "metrics_max_devices", fmt.Errorf("must be 0..%d (got %d)", MaxMaxDevices, maxDevices)
	case forgetAfter < time.Second || forgetAfter > 8760*time.Hour:
		return "metrics_forget_after", fmt.Errorf("must be 1s..8760h (got %v)", forgetAfter)
	}
	return "", nil
}

// Server serves a registry on Path. A nil *Server (metrics off, or the
// address could not be bound) has no address and closes as a no-op.
type Server struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// Listen binds addr and serves reg on Path until Close.
func Listen(addr string, reg *prometheus.Registry) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:            reg, // counts its own errors (promhttp_metric_handler_errors_total)
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	}))
	s := &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	return s, nil
}

// Start is the binaries' common start-up: with addr "" it returns nil
// (metrics off); otherwise it binds addr, logs "metrics listening" with the
// bound address and calls ready with it. An address that cannot be bound is
// logged as an error and the process runs on without metrics (nil): the
// metrics must not take the broker or the frames down, and Prometheus shows
// the target as down.
func Start(addr string, reg *prometheus.Registry, log *slog.Logger, ready func(addr string)) *Server {
	if addr == "" {
		return nil
	}
	s, err := Listen(addr, reg)
	if err != nil {
		log.Error("metrics: cannot listen; running without metrics", "metrics_listen", addr, "error", err)
		return nil
	}
	log.Info("metrics listening", "addr", s.Addr(), "path", Path)
	if ready != nil {
		ready(s.Addr())
	}
	return s
}

// Addr is the bound host:port ("" for a nil Server).
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.addr
}

// Close stops serving, closes open connections and waits for the server's
// goroutine.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Heard is one device as Select sees it.
type Heard struct {
	// Key identifies the device (its id, or site and id).
	Key string
	// Online devices are always eligible.
	Online bool
	// At is when the device was last heard from.
	At time.Time
}

// Select returns the indexes of the devices that get series, in key order,
// and how many eligible devices were left out by maxDevices. A device is
// eligible while it is online or was heard from within forgetAfter; among
// the eligible ones, online devices come first, then the most recently
// heard (ties by key), up to maxDevices.
func Select(devs []Heard, now time.Time, maxDevices int, forgetAfter time.Duration) (keep []int, omitted int) {
	for i, d := range devs {
		if d.Online || now.Sub(d.At) <= forgetAfter {
			keep = append(keep, i)
		}
	}
	if len(keep) > maxDevices {
		slices.SortFunc(keep, func(a, b int) int {
			da, db := devs[a], devs[b]
			if da.Online != db.Online {
				if da.Online {
					return -1
				}
				return 1
			}
			if c := db.At.Compare(da.At); c != 0 {
				return c
			}
			return cmp.Compare(da.Key, db.Key)
		})
		omitted = len(keep) - maxDevices
		keep = keep[:maxDevices]
	}
	slices.SortFunc(keep, func(a, b int) int { return cmp.Compare(devs[a].Key, devs[b].Key) })
	return keep, omitted
}

// Bool is 1 for true and 0 for false.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Desc is a metric's description and value type, for collectors that build
// their series from a snapshot at every scrape.
type Desc struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

// NewCounter describes a counter with the given variable labels.
func NewCounter(name, help string, labels ...string) Desc {
	return Desc{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

// NewGauge describes a gauge with the given variable labels.
func NewGauge(name, help string, labels ...string) Desc {
	return Desc{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

// Emit sends one series of d with the label values, in the order of d's
// labels.
func (d Desc) Emit(ch chan<- prometheus.Metric, v float64, labelValues ...string) {
	ch <- prometheus.MustNewConstMetric(d.desc, d.typ, v, labelValues...)
}

// Set collects the Descs a collector makes, for its Describe.
type Set struct{ descs []Desc }

// Counter describes a counter and adds it to the set.
func (s *Set) Counter(name, help string, labels ...string) Desc {
	d := NewCounter(name, help, labels...)
	s.descs = append(s.descs, d)
	return d
}

// Gauge describes a gauge and adds it to the set.
func (s *Set) Gauge(name, help string, labels ...string) Desc {
	d := NewGauge(name, help, labels...)
	s.descs = append(s.descs, d)
	return d
}

// Describe sends the description of every Desc of the set.
func (s *Set) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.descs {
		ch <- d.desc
	}
}
