// Command gateway runs splitpoint's gateway: the embedded MQTT broker.
//
//	gateway [-c configs/gateway.toml] [--listen 127.0.0.1:1883]
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/splitpoint/splitpoint/config"
	"github.com/splitpoint/splitpoint/gateway"
	_ "github.com/splitpoint/splitpoint/pipelines"
)

func main() {
	cli := config.NewCLI("gateway", "gateway [-c configs/gateway.toml] [--listen 127.0.0.1:1883]")
	listen := cli.Flags.String("listen", "", "broker `host:port`; port 0 picks a free port and prints it")
	if err := cli.Parse(os.Args[1:], os.Stdout); err != nil {
		config.Fail(err)
	}
	cfg := gateway.DefaultConfig()
	f, err := config.Load(cli.Config, &cfg)
	if err != nil {
		config.Fail(err)
	}
	cli.Override(f, map[string]config.Setter{
		"listen": {Field: "listen", Apply: func() { cfg.Listen = *listen }},
	})
	if err := cfg.Validate(); err != nil {
		config.Fail(f.Locate(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := config.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat, "gateway")
	if err := gateway.Run(ctx, cfg, os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
