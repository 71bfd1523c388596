package device

import (
	"math"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/controller"
	"github.com/splitpoint/splitpoint/wire"
)

// alpha smooths live measurements (exponentially weighted moving average).
const alpha = 0.2

type fig struct {
	dev, cpu float64 // ms
	at       time.Time
	ok       bool
}

func (f *fig) observe(dev, cpu float64, now time.Time, a float64) {
	if !f.ok {
		f.dev, f.cpu = dev, cpu
	} else {
		f.dev += a * (dev - f.dev)
		f.cpu += a * (cpu - f.cpu)
	}
	f.at, f.ok = now, true
}

// perf keeps what the device knows about the cost of each stage and the
// size of each boundary's state: live figures from the frames it processes
// and a profile of every stage, which it takes at start-up, when its speed
// changes and every profile_interval.
type perf struct {
	mu        sync.Mutex
	names     []string
	live      []fig // per stage
	prof      []fig // per stage
	liveBytes []fig // per split k (dev holds the bytes)
	profBytes []fig
	profEnc   []fig // per split k: the time to encode its state (dev)
	overhead  fig

	round     int // complete profiles in the current round
	attempts  int
	pending   int       // profile passes handed out in this round and not reported yet
	gen       uint64    // the round; passes of an earlier round are ignored
	profileAt time.Time // when the last round completed
	wanted    bool      // a round is due
}

func newPerf(names []string) *perf {
	n := len(names)
	return &perf{names: names, live: make([]fig, n), prof: make([]fig, n), liveBytes: make([]fig, n), profBytes: make([]fig, n), profEnc: make([]fig, n), wanted: true}
}

func (p *perf) stage(i int, dev, cpu time.Duration, now time.Time) {
	p.mu.Lock()
	p.live[i].observe(ms(dev), ms(cpu), now, alpha)
	p.mu.Unlock()
}

func (p *perf) bytes(k, n int, now time.Time) {
	p.mu.Lock()
	p.liveBytes[k].observe(float64(n), 0, now, alpha)
	p.mu.Unlock()
}

func (p *perf) overheadMS(d time.Duration, now time.Time) {
	p.mu.Lock()
	p.overhead.observe(ms(d), 0, now, alpha)
	p.mu.Unlock()
}

// requestProfile asks for a new profiling round (the speed changed).
func (p *perf) requestProfile() {
	p.mu.Lock()
	p.newRound()
	p.mu.Unlock()
}

func (p *perf) newRound() {
	p.wanted, p.round, p.attempts, p.pending = true, 0, 0, 0
	p.gen++
}

// profileDue reports whether the next frame should also be profiled, and
// the round the pass belongs to. Frames are profiled on several workers at
// once, so it hands out no more passes than the round still needs: a pass
// handed out counts until profiled reports it.
func (p *perf) profileDue(frames int, every time.Duration, now time.Time) (gen uint64, due bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if frames == 0 {
		return p.gen, false
	}
	if !p.wanted && every > 0 && now.Sub(p.profileAt) >= every {
		p.newRound()
	}
	if !p.wanted || p.round+p.pending >= frames || p.attempts+p.pending >= 10*frames {
		return p.gen, false
	}
	p.pending++
	return p.gen, true
}

// profiled records one profiling pass of round gen: per-stage times and
// boundary bytes and encoding times, as far as the frame went (a filtered
// frame ends the pass early). A pass of an earlier round (the speed changed
// meanwhile) is ignored.
func (p *perf) profiled(gen uint64, dev, cpu []time.Duration, bytes []int, enc []time.Duration, complete bool, frames int, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.gen {
		return
	}
	p.pending--
	if !p.wanted {
		return
	}
	a := 1.0 / float64(p.round+1) // a running mean within the round
	for i := range dev {
		p.prof[i].observe(ms(dev[i]), ms(cpu[i]), now, a)
	}
	for k, b := range bytes {
		if b > 0 {
			p.profBytes[k].observe(float64(b), 0, now, a)
			if k < len(enc) {
				p.profEnc[k].observe(ms(enc[k]), 0, now, a)
			}
		}
	}
	p.attempts++
	if complete {
		p.round++
	}
	if p.round >= frames || p.attempts >= 10*frames {
		p.wanted, p.profileAt = false, now
	}
}

// unclaim hands back a pass of round gen that profileDue granted but that
// was not run (the profiler was busy): unlike a pass that failed, it does
// not count against the round's attempts, so a later frame is profiled.
func (p *perf) unclaim(gen uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen == p.gen {
		p.pending--
	}
}

// figures returns the telemetry's stage and boundary figures. Stages the
// device ran within fresh are measured; the others are estimated from the
// profile, scaled by how the measured stages compare with their profile.
func (p *perf) figures(split int, fresh time.Duration, now time.Time, next func(k int) string) ([]wire.StageFigure, []wire.BoundaryFigure, float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.names)
	older := make([]float64, n)
	live := make([]float64, n)
	olderCPU := make([]float64, n)
	liveCPU := make([]float64, n)
	for i := range p.names {
		older[i], olderCPU[i] = p.prof[i].dev, p.prof[i].cpu
		live[i], liveCPU[i] = math.NaN(), math.NaN()
		if f := p.live[i]; f.ok && now.Sub(f.at) <= fresh && i < split {
			live[i], liveCPU[i] = f.dev, f.cpu
			if !p.prof[i].ok { // no profile: the live figure is the best guess
				older[i], olderCPU[i] = f.dev, f.cpu
			}
		}
	}
	dev, _ := controller.StageTimes(older, live)
	cpu, _ := controller.StageTimes(olderCPU, liveCPU)
	stages := make([]wire.StageFigure, 0, n-1)
	for i := 0; i < n-1; i++ { // the sink never runs on the device
		f := wire.StageFigure{Name: p.names[i], DeviceMS: round3(dev[i]), CPUMS: round3(cpu[i]), Source: wire.Estimated}
		if !math.IsNaN(live[i]) {
			f.Source, f.AgeS = wire.Measured, age(now, p.live[i].at)
		} else {
			f.AgeS = age(now, p.prof[i].at)
			if !p.prof[i].ok {
				f.AgeS = -1
			}
		}
		stages = append(stages, f)
	}
	var bounds []wire.BoundaryFigure
	for k := 1; k < n; k++ {
		b := wire.BoundaryFigure{Split: k, Next: next(k), Source: wire.Estimated, AgeS: -1}
		if f := p.liveBytes[k]; f.ok && now.Sub(f.at) <= fresh {
			b.Bytes, b.Source, b.AgeS = math.Round(f.dev), wire.Measured, age(now, f.at)
		} else if f := p.profBytes[k]; f.ok {
			b.Bytes, b.AgeS = math.Round(f.dev), age(now, f.at)
		} else if f := p.liveBytes[k]; f.ok {
			b.Bytes, b.AgeS = math.Round(f.dev), age(now, f.at)
		}
		if f := p.profEnc[k]; f.ok {
			b.EncodeMS = round3(f.dev)
		}
		bounds = append(bounds, b)
	}
	return stages, bounds, round3(p.overhead.dev)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func age(now, at time.Time) float64 { return math.Round(now.Sub(at).Seconds()*10) / 10 }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
