package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The broker rows.
const (
	bGateway   = "gateway (mochi)"
	bMosquitto = "mosquitto"
	bTCP       = "raw TCP"
)

var brokerNames = []string{bGateway, bMosquitto, bTCP}

// loadSample is one broker load run.
type loadSample struct {
	msgs    int
	elapsed time.Duration
	cpu     time.Duration // the broker process's CPU time (none for raw TCP)
	hasCPU  bool
	clients time.Duration // the publisher's and subscriber's CPU time (this process)
}

func (s loadSample) msgsPerS() float64 { return float64(s.msgs) / s.elapsed.Seconds() }

type brokerResults struct {
	sizes     []int
	counts    map[int]int
	samples   map[string]map[int][]loadSample // broker → size → samples
	skipped   map[string]string               // broker → why it did not run
	mosquitto string                          // version line
	window    int
}

func runBrokers(ctx context.Context, o options, tmp string, gw *gateway) (*brokerResults, error) {
	res := &brokerResults{sizes: o.sizes, counts: map[int]int{}, samples: map[string]map[int][]loadSample{}, skipped: map[string]string{}, window: o.window}
	for _, b := range brokerNames {
		res.samples[b] = map[int][]loadSample{}
	}
	for _, size := range o.sizes {
		res.counts[size] = max(o.brokerMin, min(o.brokerMax, o.brokerBytes/size))
	}
	mq, version, err := startMosquitto(ctx, tmp, "mosquitto")
	if err != nil {
		res.skipped[bMosquitto] = err.Error()
		progress("mosquitto: %v", err)
	} else {
		defer mq.stop()
		res.mosquitto = version
	}
	for r := 1; r <= o.rounds; r++ {
		for _, size := range o.sizes {
			n := res.counts[size]
			for _, b := range brokerNames {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				var s loadSample
				var err error
				u0 := selfUsage()
				switch b {
				case bGateway:
					s, err = mqttLoad(ctx, gw.broker(), gw.gw.pid(), size, n, o.window)
				case bMosquitto:
					if mq == nil {
						continue
					}
					s, err = mqttLoad(ctx, mq.url, mq.p.pid(), size, n, o.window)
				case bTCP:
					s, err = tcpLoad(ctx, size, n)
				}
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %d bytes: %w", r, b, size, err)
				}
				s.clients = selfUsage().sub(u0).cpu
				res.samples[b][size] = append(res.samples[b][size], s)
				progress("round %d/%d %-16s %7d B × %5d  %9.0f msg/s %8.1f MB/s", r, o.rounds, b, size, n, s.msgsPerS(), s.msgsPerS()*float64(size)/1e6)
			}
		}
	}
	return res, nil
}

// mqttLoad publishes n messages of size bytes at QoS 1 with window
// publishes in flight (paho's tokens) to a fresh topic, and waits until
// one QoS 1 subscriber has received every one of them. brokerPID's CPU
// time is measured over the same interval.
func mqttLoad(ctx context.Context, url string, brokerPID, size, n, window int) (loadSample, error) {
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic := "bench/load/" + id
	var got, gotBytes atomic.Int64
	all := make(chan struct{})
	sub := paho.NewClient(clientOptions(url, "bench-sub-"+id))
	if err := await(sub.Connect()); err != nil {
		return loadSample{}, fmt.Errorf("subscriber connect: %w", err)
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		gotBytes.Add(int64(len(m.Payload())))
		if got.Add(1) == int64(n) {
			close(all)
		}
	})
	if err := await(tok); err != nil {
		return loadSample{}, fmt.Errorf("subscribe: %w", err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if q := st.Result()[topic]; q != 1 {
			return loadSample{}, fmt.Errorf("subscription granted QoS %d, want 1", q)
		}
	}
	pub := paho.NewClient(clientOptions(url, "bench-pub-"+id))
	if err := await(pub.Connect()); err != nil {
		return loadSample{}, fmt.Errorf("publisher connect: %w", err)
	}
	defer pub.Disconnect(100)
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	waitTok := func(t paho.Token) error {
		if !t.WaitTimeout(60 * time.Second) {
			return errors.New("no PUBACK within 60 s")
		}
		return t.Error()
	}
	u0, cerr := procUsage(brokerPID)
	start := time.Now()
	inflight := make([]paho.Token, 0, window) // a FIFO: PUBACKs come in order
	for i := 0; i < n; i++ {
		if len(inflight) == window {
			if err := waitTok(inflight[0]); err != nil {
				return loadSample{}, fmt.Errorf("publish: %w", err)
			}
			inflight = inflight[1:]
		}
		if len(inflight) == cap(inflight) { // slid to the end of its array
			inflight = append(make([]paho.Token, 0, window), inflight...)
		}
		inflight = append(inflight, pub.Publish(topic, 1, false, payload))
		if i%256 == 0 && ctx.Err() != nil {
			return loadSample{}, ctx.Err()
		}
	}
	for _, t := range inflight {
		if err := waitTok(t); err != nil {
			return loadSample{}, fmt.Errorf("publish: %w", err)
		}
	}
	timeout := 60*time.Second + time.Duration(n)*time.Millisecond
	select {
	case <-all:
	case <-time.After(timeout):
		return loadSample{}, fmt.Errorf("subscriber received %d of %d messages within %v", got.Load(), n, timeout)
	case <-ctx.Done():
		return loadSample{}, ctx.Err()
	}
	el := time.Since(start)
	u1, cerr2 := procUsage(brokerPID)
	if b := gotBytes.Load(); b != int64(n)*int64(size) {
		return loadSample{}, fmt.Errorf("subscriber received %d bytes, want %d", b, int64(n)*int64(size))
	}
	s := loadSample{msgs: n, elapsed: el}
	if cerr == nil && cerr2 == nil {
		s.cpu, s.hasCPU = u1.sub(u0).cpu, true
	}
	return s, nil
}

// clientOptions are the options of every paho client of the bench (the
// broker load's and the round trip's): QoS 1 sessions that start clean and
// do not reconnect.
func clientOptions(url, id string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(60 * time.Second).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(0)
}

// awaitTimeout bounds await's wait for a connection or a subscription.
const awaitTimeout = 15 * time.Second

// await waits up to awaitTimeout for t and returns its error, or one that
// says the wait timed out (paho's token has no error then).
func await(t paho.Token) error {
	if !t.WaitTimeout(awaitTimeout) {
		return fmt.Errorf("timed out after %v", awaitTimeout)
	}
	return t.Error()
}

// tcpLoad writes n messages of size bytes over one loopback TCP connection
// to a sink that reads and counts them (nothing is echoed); the time is
// until the sink has every byte.
func tcpLoad(ctx context.Context, size, n int) (loadSample, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadSample{}, err
	}
	defer ln.Close()
	want := int64(size) * int64(n)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		got, err := io.CopyN(io.Discard, c, want)
		if err == nil && got != want {
			err = fmt.Errorf("sink got %d of %d bytes", got, want)
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return loadSample{}, err
	}
	defer c.Close()
	payload := make([]byte, size)
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Write(payload); err != nil {
			return loadSample{}, err
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return loadSample{}, err
		}
	case <-ctx.Done():
		return loadSample{}, ctx.Err()
	}
	return loadSample{msgs: n, elapsed: time.Since(start)}, nil
}

type mosquitto struct {
	p   *proc
	url string
}

func (m *mosquitto) stop() { m.p.stop() }

// startMosquitto starts Debian's mosquitto on a free loopback port with a
// config file of its own (tmp/name.conf, with the extra lines), and waits
// until it accepts connections.
func startMosquitto(ctx context.Context, tmp, name string, extra ...string) (*mosquitto, string, error) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				path, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, "", errors.New("not installed (apt-get install mosquitto; make bench installs it)")
	}
	version := ""
	if out, _ := exec.Command(path, "-h").CombinedOutput(); len(out) > 0 {
		version, _, _ = strings.Cut(string(out), "\n")
		version = strings.TrimSpace(version)
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		last = nil
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		conf := filepath.Join(tmp, name+".conf")
		var b strings.Builder
		if os.Geteuid() == 0 {
			b.WriteString("user root\n") // else it drops to the mosquitto user
		}
		fmt.Fprintf(&b, "listener %d 127.0.0.1\n", port)
		b.WriteString("allow_anonymous true\npersistence false\n")
		// The load's subscriber may fall behind: queue everything.
		b.WriteString("max_queued_messages 10000000\nmax_queued_bytes 0\n")
		// Unlimited QoS 1 messages in flight to a client, as mochi for an
		// MQTT 3.1.1 client (the publisher's window bounds the load).
		b.WriteString("max_inflight_messages 0\n")
		b.WriteString("log_dest stderr\nlog_type error\nlog_type warning\n")
		for _, l := range extra {
			b.WriteString(l + "\n")
		}
		if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
			return nil, "", err
		}
		p, err := startProc("mosquitto", nil, nil, path, "-c", conf)
		if err != nil {
			return nil, "", err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-p.done:
				last = fmt.Errorf("mosquitto exited: %v %s", p.err, strings.TrimSpace(p.stderr()))
			default:
			}
			if last != nil {
				break
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return &mosquitto{p: p, url: "tcp://" + addr}, version, nil
			}
			if ctx.Err() != nil {
				p.stop()
				return nil, "", ctx.Err()
			}
			time.Sleep(20 * time.Millisecond)
		}
		p.stop()
		if last == nil {
			last = errors.New("mosquitto did not accept connections within 10 s")
		}
	}
	return nil, "", last
}
