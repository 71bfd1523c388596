package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The round-trip section measures what splits 3–6 cannot avoid per frame:
// a small state published at QoS 1 to the broker and delivered to a
// subscriber, and a small result published back at QoS 1 — with nothing
// else (no OpenCV, no CBOR, no accounting), at the rate the goal
// asks for. Two processes of this binary play the device and the cloudproc
// (-rt-client and -rt-echo), so that each has its own Go runtime and its
// CPU can be read apart, as the real binaries'.
const (
	rtStateBytes  = 279 // balltrack's split-6 state (the pipeline table)
	rtResultBytes = 260 // a result JSON (README) with a ball
	rtWindow      = 8   // the device's default window
	rtGoal        = 1.3 // the goal for splits 3–6, × the baseline
	rtDefaultRate = 350 // round trips/s when no baseline was measured
)

// rtSample is one round-trip run through one broker.
type rtSample struct {
	n                    int
	elapsed              time.Duration
	client, echo, broker time.Duration // CPU time of each process over the run
}

func (s rtSample) rate() float64 { return float64(s.n) / s.elapsed.Seconds() }

type rtResults struct {
	rate     float64 // round trips/s asked
	rateFrom string  // where the rate comes from
	n        int     // round trips per run
	samples  map[string][]rtSample
	skipped  map[string]string
	// The arithmetic for the goal (from the AVI pipeline's medians; ok:
	// measured): the baseline's frames/s and the CPU per frame of one
	// plain loop per core (baseline ×cores).
	baseFPS, loopsCPU float64
	cores             int
	ok                bool
	// The gateway's and the cloudproc's CPU per frame at the largest split
	// of the same pipeline run (split: 0 when it did not run).
	split            int
	splitGW, splitCP float64
}

// rtBrokers are the round trip's brokers, in the order they run and print.
var rtBrokers = []string{bGateway, bMosquitto}

// runRoundTrips runs -rounds interleaved round-trip runs through the gateway
// and through a mosquitto with TCP_NODELAY, at rate round trips/s (0: the
// goal's rate from the pipeline's baseline, else rtDefaultRate).
func runRoundTrips(ctx context.Context, o options, tmp string, gw *gateway, pl *pipelineResults) (*rtResults, error) {
	res := &rtResults{rate: o.rtRate, rateFrom: "-rt-rate", samples: map[string][]rtSample{}, skipped: map[string]string{}, cores: runtime.NumCPU()}
	if pl != nil {
		if ss := pl.samples[inputAVI]; ss != nil {
			var loops []sample // "baseline ×N"
			for _, m := range pl.modes {
				if m.loops > 1 {
					loops = ss[m.name]
				}
			}
			if base := ss["baseline"]; len(base) > 0 && len(loops) > 0 && loops[0].frames > 0 {
				res.baseFPS = median(base, func(s sample) float64 { return s.fps })
				res.loopsCPU = median(loops, func(s sample) float64 { return s.cpuTotalPerFrame() })
				res.ok = res.cores > 1
			}
			for _, m := range pl.modes {
				if d := ss[m.name]; m.split > res.split && len(d) > 0 {
					res.split = m.split
					res.splitGW = median(d, func(s sample) float64 { return s.cpuPerFrame(pGW) })
					res.splitCP = median(d, func(s sample) float64 { return s.cpuPerFrame(pCloud) })
				}
			}
		}
	}
	if res.rate <= 0 {
		if res.ok {
			res.rate = rtGoal * res.baseFPS
			res.rateFrom = fmt.Sprintf("%.1f × the AVI baseline's %.1f frames/s", rtGoal, res.baseFPS)
		} else {
			res.rate = rtDefaultRate
			res.rateFrom = "no AVI baseline in this run: the default"
		}
	}
	res.n = max(20, int(res.rate*o.rtSeconds))
	// Go's net package sets TCP_NODELAY on every connection (the gateway's
	// and paho's); mosquitto does only with set_tcp_nodelay, and without it
	// a small publish waits for the peer's delayed ACK (~40 ms): through a
	// default mosquitto this load made 150 of 240 round trips/s.
	mq, _, err := startMosquitto(ctx, tmp, "mosquitto-nodelay", "set_tcp_nodelay true")
	if err != nil {
		res.skipped[bMosquitto] = err.Error()
	} else {
		defer mq.stop()
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for r := 1; r <= o.rounds; r++ {
		for _, b := range rtBrokers {
			var url string
			var pid int
			switch b {
			case bGateway:
				url, pid = gw.broker(), gw.gw.pid()
			case bMosquitto:
				if mq == nil {
					continue
				}
				url, pid = mq.url, mq.p.pid()
			}
			s, err := roundTripRun(ctx, exe, url, pid, res.rate, res.n, fmt.Sprintf("%d-%d", r, len(res.samples[b])))
			if err != nil {
				return nil, fmt.Errorf("round trip, round %d, %s: %w", r, b, err)
			}
			res.samples[b] = append(res.samples[b], s)
			progress("round %d/%d round trip %-16s %6.0f/s  broker %4.0f µs  echo %4.0f µs  client %4.0f µs", r, o.rounds, b, s.rate(),
				perRT(s.broker, s.n), perRT(s.echo, s.n), perRT(s.client, s.n))
		}
	}
	return res, nil
}

func perRT(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

// roundTripRun starts an echo process, then a client process that makes n
// round trips at rate through url, and reads the CPU time of the broker
// (pid) and of the echo over the client's run.
func roundTripRun(ctx context.Context, exe, url string, brokerPID int, rate float64, n int, id string) (rtSample, error) {
	topic := "bench/rt/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + id
	ready := make(chan struct{})
	var once sync.Once
	echo, err := startProc("rt-echo", nil, func(isErr bool, line string) {
		if !isErr && line == "ready" {
			once.Do(func() { close(ready) })
		}
	}, exe, "-rt-echo", url, "-rt-topic", topic)
	if err != nil {
		return rtSample{}, err
	}
	defer echo.stop()
	select {
	case <-ready:
	case <-echo.done:
		return rtSample{}, fmt.Errorf("echo exited: %v %s", echo.err, strings.TrimSpace(echo.stderr()))
	case <-time.After(60 * time.Second): // the echo gives up after 2 × awaitTimeout
		return rtSample{}, errors.New("echo not subscribed within 60 s")
	case <-ctx.Done():
		return rtSample{}, ctx.Err()
	}
	// The broker's and the echo's CPU time are read when the client says
	// it starts (connected and subscribed) and when it has its last result
	// (before it disconnects): the window of its own figure.
	var mu sync.Mutex
	var at [2][2]usage // [start, end][broker, echo]
	var atErr error
	read := func(i int) {
		b, err := procUsage(brokerPID)
		var e usage
		if err == nil {
			e, err = procUsage(echo.pid())
		}
		mu.Lock()
		at[i], atErr = [2]usage{b, e}, cmp.Or(atErr, err)
		mu.Unlock()
	}
	client, err := startProc("rt-client", nil, func(isErr bool, line string) {
		switch {
		case isErr:
		case line == "start":
			read(0)
		case strings.HasPrefix(line, "round_trips="):
			read(1)
		}
	}, exe, "-rt-client", url, "-rt-topic", topic, "-rt-n", strconv.Itoa(n), "-rt-rate", strconv.FormatFloat(rate, 'f', 3, 64))
	if err != nil {
		return rtSample{}, err
	}
	// The client gives up after 2 × awaitTimeout (connect, subscribe) and 60 s
	// without its last result: kill it only well after that.
	if err := client.wait(ctx, time.Duration(float64(n)/rate*float64(time.Second))+150*time.Second); err != nil {
		return rtSample{}, fmt.Errorf("client: %v %s", err, strings.TrimSpace(client.stderr()))
	}
	mu.Lock()
	defer mu.Unlock()
	if atErr != nil {
		return rtSample{}, atErr
	}
	b0, e0, b1, e1 := at[0][0], at[0][1], at[1][0], at[1][1]
	var got, elapsedNS, cpuNS int64
	out := client.stdout()
	if i := strings.LastIndex(out, "round_trips="); i >= 0 {
		out = out[i:]
	}
	if _, err := fmt.Sscanf(out, "round_trips=%d elapsed_ns=%d cpu_ns=%d", &got, &elapsedNS, &cpuNS); err != nil {
		return rtSample{}, fmt.Errorf("client printed %q: %v", client.stdout(), err)
	}
	if got != int64(n) {
		return rtSample{}, fmt.Errorf("client made %d of %d round trips", got, n)
	}
	return rtSample{n: n, elapsed: time.Duration(elapsedNS), client: time.Duration(cpuNS),
		echo: e1.sub(e0).cpu, broker: b1.sub(b0).cpu}, nil
}

// rtEcho is the -rt-echo process: it answers every state on topic/state
// with a result on topic/result (QoS 1 both), prints "ready" once
// subscribed, and runs until SIGINT or SIGTERM. It returns the exit code.
func rtEcho(url, topic string) int {
	c := paho.NewClient(clientOptions(url, "bench-rt-echo-"+strconv.Itoa(os.Getpid())))
	if err := await(c.Connect()); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	result := make([]byte, rtResultBytes)
	if err := await(c.Subscribe(topic+"/state", 1, func(c paho.Client, _ paho.Message) {
		c.Publish(topic+"/result", 1, false, result)
	})); err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		return 1
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Disconnect(100)
	return 0
}

// rtClient is the -rt-client process: n states on topic/state at rate per
// second (a ticker), at most rtWindow without their result. It prints
// "start" once connected and subscribed, then "round_trips=N elapsed_ns=…
// cpu_ns=…" (its own CPU time from there to the last result) before it
// disconnects, and returns the exit code.
func rtClient(w io.Writer, url, topic string, n int, rate float64) int {
	if n < 1 || !(rate > 0 && rate <= 100000) {
		fmt.Fprintf(os.Stderr, "-rt-n %d and -rt-rate %g: -rt-n must be positive and -rt-rate in (0, 100000]\n", n, rate)
		return 2
	}
	c := paho.NewClient(clientOptions(url, "bench-rt-client-"+strconv.Itoa(os.Getpid())))
	if err := await(c.Connect()); err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	defer c.Disconnect(100)
	slots := make(chan struct{}, rtWindow)
	all := make(chan struct{})
	var got atomic.Int64
	sub := c.Subscribe(topic+"/result", 1, func(paho.Client, paho.Message) {
		select {
		case <-slots:
		default: // more results than states in flight (a redelivery): not a round trip
			return
		}
		if got.Add(1) == int64(n) {
			close(all)
		}
	})
	if err := await(sub); err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		return 1
	}
	state := make([]byte, rtStateBytes)
	fmt.Fprintln(w, "start")
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	u0 := selfUsage()
	start := time.Now()
	for i := 0; i < n; i++ {
		<-tick.C
		slots <- struct{}{}
		c.Publish(topic+"/state", 1, false, state)
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		fmt.Fprintf(os.Stderr, "%d of %d results within 60 s of the last state\n", got.Load(), n)
		return 1
	}
	el := time.Since(start)
	fmt.Fprintf(w, "round_trips=%d elapsed_ns=%d cpu_ns=%d\n", got.Load(), el.Nanoseconds(), selfUsage().sub(u0).cpu.Nanoseconds())
	return 0
}

func (r *report) printRoundTrip(w io.Writer) {
	t := r.roundTrip
	fmt.Fprintf(w, "\n## A frame's round trip alone — the two QoS 1 messages of every split, at %.0f/s\n\n", t.rate)
	fmt.Fprintf(w, "| broker | round trips/s | broker CPU | echo client CPU | paced client CPU | broker + 2 × echo |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|\n")
	floors := map[string]float64{}
	for _, b := range rtBrokers {
		ss := t.samples[b]
		if len(ss) == 0 {
			why := t.skipped[b]
			if why == "" {
				why = "not run"
			}
			fmt.Fprintf(w, "| %s | skipped: %s | | | | |\n", b, why)
			continue
		}
		per := func(f func(rtSample) time.Duration) float64 {
			return median(ss, func(s rtSample) float64 { return f(s).Seconds() / float64(s.n) })
		}
		br, ec, cl := per(func(s rtSample) time.Duration { return s.broker }), per(func(s rtSample) time.Duration { return s.echo }), per(func(s rtSample) time.Duration { return s.client })
		floors[b] = br + 2*ec
		fmt.Fprintf(w, "| %s | %.0f | %.0f µs | %.0f µs | %.0f µs | %s |\n", b, median(ss, rtSample.rate), 1e6*br, 1e6*ec, 1e6*cl, ms(floors[b]))
	}
	fmt.Fprintf(w, "\nPer round trip, medians of %d round(s) of %d round trips each (rate: %s). Two processes of the bench play the device and the cloudproc with paho and nothing else: the paced client publishes a %d-byte state at QoS 1 on a ticker (at most %d without their result, the device's window) and counts the results; the echo client answers each state with a %d-byte result at QoS 1. CPU from /proc/PID/stat (10 ms ticks) and the paced client's own rusage, all three from the paced client's start (connected and subscribed) to its last result (its ticker included). Measured alone, on otherwise idle cores: every message wakes sleeping threads, which a loaded machine partly saves (see the pipeline's gateway and cloudproc figures). mosquitto here runs with set_tcp_nodelay true (Go sets TCP_NODELAY on every connection; without it a small publish waits for a delayed ACK). \"broker + 2 × echo\" (the sum of the medians) counts the echo client for both ends: each end makes one publish and receives one message per round trip, and the echo has no timer.\n",
		len(t.samples[bGateway]), t.n, t.rateFrom, rtStateBytes, rtWindow, rtResultBytes)
	if !t.ok {
		return
	}
	budget := float64(t.cores) / (rtGoal * t.baseFPS)
	left := budget - t.loopsCPU
	fmt.Fprintf(w, "\nThe goal for splits 3–6 (%.1f× the baseline, %.1f frames/s) leaves %d cores ÷ %.1f frames/s = %s of CPU per frame for the three processes; %d plain loops (baseline ×%d) spend %s per frame on the OpenCV calls alone, which leaves **%s** for everything else.", rtGoal, rtGoal*t.baseFPS, t.cores, rtGoal*t.baseFPS, ms(budget), t.cores, t.cores, ms(t.loopsCPU), ms(left))
	if t.split > 0 {
		fmt.Fprintf(w, " In the AVI pipeline above, at split %d, the gateway and the cloudproc spent %s + %s = %s per frame (under load, the device beside them), before the device's own publishing and results.", t.split, ms(t.splitGW), ms(t.splitCP), ms(t.splitGW+t.splitCP))
	}
	for _, b := range rtBrokers {
		f, ok := floors[b]
		if !ok {
			continue
		}
		verdict := fmt.Sprintf("more than what is left by %s", ms(f-left))
		if f <= left {
			verdict = fmt.Sprintf("%s less than what is left", ms(left-f))
		}
		fmt.Fprintf(w, " Through %s the round trip alone costs %s: %s.", b, ms(f), verdict)
	}
	fmt.Fprintln(w)
}
