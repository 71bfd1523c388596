// Command cloudproc runs the cloud side of splitpoint's pipelines.
//
//	cloudproc [-c configs/cloud.toml] [--broker tcp://127.0.0.1:1883] [--id NAME] [--slowdown F]
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/splitpoint/splitpoint/cloudproc"
	"github.com/splitpoint/splitpoint/config"
	_ "github.com/splitpoint/splitpoint/pipelines"
)

func main() {
	cli := config.NewCLI("cloudproc", "cloudproc [-c configs/cloud.toml] [--broker tcp://127.0.0.1:1883] [--id NAME] [--slowdown F]")
	broker := cli.Flags.String("broker", "", "broker `URL` (tcp://host:port, or ssl://host:port for TLS)")
	id := cli.Flags.String("id", "", "cloudproc `name`")
	slowdown := cli.Flags.Float64("slowdown", 1, "emulate a cloud `F` times slower")
	if err := cli.Parse(os.Args[1:], os.Stdout); err != nil {
		config.Fail(err)
	}
	cfg, f, err := cloudproc.LoadConfig(cli.Config)
	if err != nil {
		config.Fail(err)
	}
	cli.Override(f, map[string]config.Setter{
		"broker":   {Field: "broker", Apply: func() { cfg.Broker = *broker }},
		"id":       {Field: "id", Apply: func() { cfg.ID = *id }},
		"slowdown": {Field: "emulate.slowdown", Apply: func() { cfg.Emulate.Slowdown = *slowdown }},
	})
	if err := cfg.Validate(); err != nil {
		config.Fail(f.Locate(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := config.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat, "cloudproc")
	if _, err := cloudproc.Run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "cloudproc:", err)
		os.Exit(1)
	}
}
