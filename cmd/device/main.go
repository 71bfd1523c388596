// Command device runs a splitpoint device: capture, the first k stages,
// and the state for the rest published to the cloud.
//
//	device [-c configs/pi.toml] [--broker URL] [--id NAME] [--source URI] [--split K] [--frames N] [--slowdown F]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/device"
	_ "github.com/splitpoint/splitpoint/pipelines"
)

func main() {
	cli := config.NewCLI("device", "device [-c configs/pi.toml] [--broker URL] [--id NAME] [--source URI] [--split K] [--target-fps F] [--frames N] [--slowdown F]")
	broker := cli.Flags.String("broker", "", "broker `URL` (tcp://host:port, or ssl://host:port for TLS)")
	id := cli.Flags.String("id", "", "device `name` ([a-z0-9][a-z0-9_-]*)")
	src := cli.Flags.String("source", "", "frame source `URI`: file path, file:PATH, camera:N, rtsp://…, http(s)://…, synthetic:?size=WxH&fps=F&seed=S&frames=N")
	split := cli.Flags.Int("split", 0, "manual split `K` from the first frame: stages run on the device (1..stages-1); without it the gateway decides (auto)")
	target := cli.Flags.Float64("target-fps", 0, "target `F` frames per second, sent to the gateway at start-up")
	frames := cli.Flags.Int("frames", 0, "capture `N` frames, wait for every result, print a summary and exit")
	slowdown := cli.Flags.Float64("slowdown", 1, "emulate a device `F` times slower (busy-spins (F-1)× each local stage's CPU time)")
	if err := cli.Parse(os.Args[1:], os.Stdout); err != nil {
		config.Fail(err)
	}
	cfg, f, err := device.LoadConfig(cli.Config)
	if err != nil {
		config.Fail(err)
	}
	cli.Override(f, map[string]config.Setter{
		"broker":     {Field: "broker", Apply: func() { cfg.Broker = *broker }},
		"id":         {Field: "id", Apply: func() { cfg.ID = *id }},
		"source":     {Field: "source", Apply: func() { cfg.Source = *src }},
		"split":      {Field: "split", Apply: func() { cfg.Split, cfg.Mode = *split, "manual" }},
		"target-fps": {Field: "target_fps", Apply: func() { cfg.TargetFPS = *target }},
		"frames":     {Field: "frames", Apply: func() { cfg.Frames = *frames }},
		"slowdown":   {Field: "emulate.slowdown", Apply: func() { cfg.Emulate.Slowdown = *slowdown }},
	})
	if err := cfg.Validate(); err != nil {
		config.Fail(f.Locate(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := config.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat, "device")
	sum, err := device.Run(ctx, cfg, os.Stdout, log)
	if sum.Run != "" {
		fmt.Println(sum.String())
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "device:", err)
		os.Exit(1)
	}
}
