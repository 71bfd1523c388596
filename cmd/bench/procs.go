package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const modPath = "github.com/splitpoint/splitpoint"

// buildBinaries builds gateway, device and cloudproc into dir, with extra
// go build arguments (the profile overlay).
func buildBinaries(ctx context.Context, dir string, extra []string) error {
	args := append([]string{"build", "-o", dir + "/"}, extra...)
	args = append(args, modPath+"/cmd/gateway", modPath+"/cmd/device", modPath+"/cmd/cloudproc")
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

// proc is a started process. Its stdout and stderr are kept; lines of
// either can be watched as they come.
type proc struct {
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   bytes.Buffer // stdout
	errb  bytes.Buffer // stderr
	watch []func(stderr bool, line string)
	done  chan struct{}
	err   error
	// exited is when Wait returned.
	exited time.Time
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// killAll kills every process the bench started that is still running
// (only those: by their pid).
func killAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for p := range procs {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
		}
	}
}

// startProc starts a process; watch (may be nil) sees every line of its
// stdout and stderr.
func startProc(name string, env []string, watch func(stderr bool, line string), path string, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	if watch != nil {
		p.watch = append(p.watch, watch)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go p.copy(&wg, stdout, &p.out, false)
	go p.copy(&wg, stderr, &p.errb, true)
	go func() {
		wg.Wait() // Wait closes the pipes: read them to the end first
		p.err = p.cmd.Wait()
		p.exited = time.Now()
		procsMu.Lock()
		delete(procs, p)
		procsMu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) copy(wg *sync.WaitGroup, r io.Reader, buf *bytes.Buffer, isErr bool) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		buf.WriteString(line)
		buf.WriteByte('\n')
		watch := p.watch
		p.mu.Unlock()
		for _, w := range watch {
			w(isErr, line)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (p *proc) stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errb.String()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop interrupts the process and waits for it; it is killed after 30 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the process to exit, or kills it after timeout or when
// ctx ends.
func (p *proc) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return ctx.Err()
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s still running after %v: killed", p.name, timeout)
	}
}

// usage is a process's CPU time (user + system) and minor page faults.
type usage struct {
	cpu    time.Duration
	faults int64
}

func (u usage) sub(v usage) usage { return usage{u.cpu - v.cpu, u.faults - v.faults} }

// procUsage reads a running process's usage from /proc/PID/stat (CPU in
// clock ticks of 10 ms).
func procUsage(pid int) (usage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return usage{}, err
	}
	// The command may contain spaces and parentheses: fields start after
	// the last ')'. Field 3 (state) is f[0]; minflt is field 10, utime and
	// stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return usage{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return usage{}, errors.New("malformed /proc stat")
	}
	flt, err0 := strconv.ParseInt(f[7], 10, 64)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err0 != nil || err1 != nil || err2 != nil {
		return usage{}, errors.New("malformed /proc stat")
	}
	return usage{cpu: time.Duration(ut+st) * time.Second / clockTicks, faults: flt}, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// exitedUsage is the usage of an exited child (rusage: exact CPU time).
func (p *proc) exitedUsage() usage {
	ps := p.cmd.ProcessState
	if ps == nil {
		return usage{}
	}
	u := usage{cpu: ps.UserTime() + ps.SystemTime()}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		u.faults = ru.Minflt
	}
	return u
}

// selfUsage is this process's usage (every thread, OpenCV's included).
func selfUsage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), faults: ru.Minflt}
}

// gateway is the running gateway (and cloudproc, for the pipeline runs).
type gateway struct {
	addr    string // host:port
	gw, cp  *proc
	stopped bool
}

// startStack starts the gateway on a free loopback port and, if withCloud,
// a cloudproc c1, and waits until it is online.
func startStack(ctx context.Context, bin string, withCloud bool) (*gateway, error) {
	return startStackEnv(ctx, bin, withCloud, nil, nil)
}

func startStackEnv(ctx context.Context, bin string, withCloud bool, gwEnv, cpEnv []string) (*gateway, error) {
	g := &gateway{}
	addr := make(chan string, 1)
	var once sync.Once
	gw, err := startProc("gateway", gwEnv, func(isErr bool, line string) {
		if a, ok := strings.CutPrefix(line, "gateway listening on "); ok && !isErr {
			once.Do(func() { addr <- strings.TrimSpace(a) })
		}
	}, filepath.Join(bin, "gateway"), "--listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.gw = gw
	select {
	case g.addr = <-addr:
	case <-gw.done:
		return nil, fmt.Errorf("gateway exited: %v\n%s", gw.err, tail(gw.stderr()))
	case <-time.After(60 * time.Second):
		g.stop()
		return nil, errors.New("gateway did not print its address within 60 s")
	case <-ctx.Done():
		g.stop()
		return nil, ctx.Err()
	}
	if !withCloud {
		return g, nil
	}
	online := make(chan struct{})
	var once2 sync.Once
	cp, err := startProc("cloudproc", cpEnv, func(isErr bool, line string) {
		if !isErr && strings.Contains(line, "online") {
			once2.Do(func() { close(online) })
		}
	}, filepath.Join(bin, "cloudproc"), "--broker", g.broker(), "--id", "c1")
	if err != nil {
		g.stop()
		return nil, err
	}
	g.cp = cp
	select {
	case <-online:
	case <-cp.done:
		g.stop()
		return nil, fmt.Errorf("cloudproc exited: %v\n%s", cp.err, tail(cp.stderr()))
	case <-time.After(60 * time.Second):
		g.stop()
		return nil, errors.New("cloudproc did not come online within 60 s")
	case <-ctx.Done():
		g.stop()
		return nil, ctx.Err()
	}
	return g, nil
}

func (g *gateway) broker() string { return "tcp://" + g.addr }

// stop stops the cloudproc, then the gateway.
func (g *gateway) stop() {
	if g.stopped {
		return
	}
	g.stopped = true
	if g.cp != nil {
		g.cp.stop()
	}
	g.gw.stop()
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}
