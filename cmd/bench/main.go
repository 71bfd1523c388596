// Command bench runs the balltrack pipeline all-local (in this process, no
// MQTT) and at every split over loopback (embedded gateway, cloudproc and
// device in this process), several rounds interleaved, and prints a table
// of medians: frames/s, its ratio to all-local, p50/p99 capture→result
// latency and the bytes each frame sends.
//
//	go run ./bench [-frames 300] [-rounds 3] [-slowdown 1] [-codec auto]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/splitpoint/splitpoint/cloudproc"
	"github.com/splitpoint/splitpoint/device"
	"github.com/splitpoint/splitpoint/emulate"
	"github.com/splitpoint/splitpoint/gateway"
	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"github.com/splitpoint/splitpoint/wire"
)

type sample struct {
	fps      float64
	p50, p99 time.Duration
	bytes    float64
}

func main() {
	frames := flag.Int("frames", 300, "frames per run")
	rounds := flag.Int("rounds", 3, "rounds (the table shows medians)")
	slowdown := flag.Float64("slowdown", 1, "device slowdown (the cloud runs at this machine's speed)")
	codec := flag.String("codec", "auto", "matrix codec: auto, raw, png, jpeg")
	flag.Parse()
	if err := run(*frames, *rounds, *slowdown, *codec); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(frames, rounds int, slowdown float64, codec string) error {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	gcfg := gateway.DefaultConfig()
	gcfg.Listen = "127.0.0.1:0"
	addr := make(chan string, 1)
	gcfg.Ready = func(a gateway.Addrs) { addr <- a.MQTT }
	go func() { _ = gateway.Run(ctx, gcfg, io.Discard, log) }()
	var broker string
	select {
	case a := <-addr:
		broker = "tcp://" + a
	case <-time.After(30 * time.Second):
		return fmt.Errorf("gateway did not start")
	}

	ccfg := cloudproc.DefaultConfig()
	ccfg.Broker = broker
	ready := make(chan struct{})
	ccfg.Ready = func() { close(ready) }
	go func() { _, _ = cloudproc.Run(ctx, ccfg, io.Discard, log) }()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("cloudproc did not come online")
	}

	modes := []string{"all-local"}
	for k := 1; k <= 6; k++ {
		modes = append(modes, fmt.Sprintf("split %d", k))
	}
	results := map[string][]sample{}
	for r := 0; r < rounds; r++ {
		for i, mode := range modes {
			var s sample
			var err error
			if i == 0 {
				s, err = allLocal(frames, slowdown)
			} else {
				s, err = overMQTT(ctx, broker, i, frames, slowdown, codec, log)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			results[mode] = append(results[mode], s)
			fmt.Fprintf(os.Stderr, "round %d %-9s %6.1f fps\n", r+1, mode, s.fps)
		}
	}
	base := median(results["all-local"], func(s sample) float64 { return s.fps })
	fmt.Printf("balltrack, %d frames × %d rounds, synthetic 640×480, device slowdown %g, codec %s; medians\n\n", frames, rounds, slowdown, codec)
	fmt.Printf("| %-9s | %8s | %11s | %9s | %9s | %12s |\n", "mode", "frames/s", "vs local", "p50", "p99", "bytes/frame")
	fmt.Printf("|%s|\n", strings.Repeat("-", 72))
	for _, mode := range modes {
		ss := results[mode]
		fps := median(ss, func(s sample) float64 { return s.fps })
		p50 := time.Duration(median(ss, func(s sample) float64 { return float64(s.p50) }))
		p99 := time.Duration(median(ss, func(s sample) float64 { return float64(s.p99) }))
		b := median(ss, func(s sample) float64 { return s.bytes })
		fmt.Printf("| %-9s | %8.1f | %10.2f× | %9s | %9s | %12.0f |\n", mode, fps, fps/base, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), b)
	}
	return nil
}

func allLocal(frames int, slowdown float64) (sample, error) {
	p, err := tasks.Build(balltrack.Name, balltrack.DefaultOptions())
	if err != nil {
		return sample{}, err
	}
	src := source.NewSynthetic(source.SyntheticOptions{Width: 640, Height: 480, Seed: 1, Frames: frames})
	defer src.Close()
	ctx := context.Background()
	wrap := func(_ string, run func() (tasks.Outcome, error)) (tasks.Outcome, error) {
		var out tasks.Outcome
		var err error
		emulate.Run(slowdown, func() { out, err = run() })
		return out, err
	}
	var lat []time.Duration
	start := time.Now()
	for {
		t0 := time.Now()
		f, err := src.Read(ctx)
		if err != nil {
			break
		}
		s := tasks.NewState("bench", 0)
		cvmat.Set(s, tasks.FieldSource, f)
		if _, err := p.Run(ctx, s, 0, p.Len()-1, wrap); err != nil {
			s.Close()
			return sample{}, err
		}
		if _, err := p.Run(ctx, s, p.Len()-1, p.Len(), nil); err != nil {
			s.Close()
			return sample{}, err
		}
		s.Close()
		lat = append(lat, time.Since(t0))
	}
	el := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return sample{fps: float64(len(lat)) / el.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}, nil
}

func overMQTT(ctx context.Context, broker string, k, frames int, slowdown float64, codec string, log *slog.Logger) (sample, error) {
	cfg := device.DefaultConfig()
	cfg.ID, cfg.Broker, cfg.Split, cfg.Mode, cfg.Frames = "bench", broker, k, wire.ModeManual, frames
	cfg.Source = "synthetic:?fps=0&seed=1"
	cfg.StatusInterval = 0
	cfg.MatCodec = codec
	cfg.Emulate.Slowdown = slowdown
	sum, err := device.Run(ctx, cfg, io.Discard, log)
	if err != nil {
		return sample{}, err
	}
	return sample{
		fps: float64(sum.Captured) / sum.Elapsed.Seconds(),
		p50: sum.LatencyP50, p99: sum.LatencyP99,
		bytes: float64(sum.BytesSent) / float64(sum.Sent),
	}, nil
}

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}
