package e2e

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/splitpoint/splitpoint/cloudproc"
	"github.com/splitpoint/splitpoint/device"
	"github.com/splitpoint/splitpoint/gateway"
	"github.com/splitpoint/splitpoint/internal/matcheck"
	"github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/wire"
	"go.uber.org/goleak"
)

// TestRunEntryPointsLeakNothing runs gateway, cloudproc and device through
// their Run functions in this process, with annotation on, and checks that
// afterwards no goroutine is left and no gocv Mat is open.
func TestRunEntryPointsLeakNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mats := matcheck.Open()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Stop in order: cloudproc first, then the gateway it is connected to.
	gwCtx, stopGateway := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(gwCtx)
	var wg, gwWG sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		stopGateway()
		gwWG.Wait()
		matcheck.Assert(t, mats)
	}()

	gcfg := gateway.DefaultConfig()
	gcfg.Listen = "127.0.0.1:0"
	addr := make(chan string, 1)
	gcfg.Ready = func(a gateway.Addrs) { addr <- a.MQTT }
	gwWG.Add(1)
	go func() {
		defer gwWG.Done()
		if err := gateway.Run(gwCtx, gcfg, io.Discard, log); err != nil {
			t.Error(err)
		}
	}()
	var broker string
	select {
	case a := <-addr:
		broker = "tcp://" + a
	case <-time.After(10 * time.Second):
		t.Fatal("gateway not ready")
	}

	ccfg := cloudproc.DefaultConfig()
	ccfg.Broker = broker
	online := make(chan struct{})
	ccfg.Ready = func() { close(online) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := cloudproc.Run(ctx, ccfg, io.Discard, log); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-online:
	case <-time.After(10 * time.Second):
		t.Fatal("cloudproc not ready")
	}

	var annotated sync.Map
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("e2e-annotated"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if tok := sub.Subscribe(wire.AnnotatedTopic("mem"), 0, func(_ paho.Client, m paho.Message) {
		annotated.Store(len(m.Payload()), m.Payload()[:2])
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)

	dcfg := device.DefaultConfig()
	dcfg.ID, dcfg.Broker, dcfg.Source, dcfg.Frames, dcfg.Split = "mem", broker, "synthetic:?fps=0", 40, 2
	dcfg.StatusInterval = 0
	opts := balltrack.DefaultOptions()
	opts.Annotate = true
	opts.AnnotatedRate = 100
	dcfg.Options = opts
	sum, err := device.Run(ctx, dcfg, io.Discard, log)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Captured != 40 || sum.Results != 40 || sum.DroppedTotal() != 0 {
		t.Fatalf("summary: %s", sum)
	}
	n := 0
	waitFor(t, 10*time.Second, "annotated frames", func() bool {
		n = 0
		annotated.Range(func(_, v any) bool {
			if b := v.([]byte); b[0] == 0xFF && b[1] == 0xD8 {
				n++
			}
			return true
		})
		return n > 0
	})
}
