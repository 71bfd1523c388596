package device

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/splitpoint/splitpoint/emulate"
	"github.com/splitpoint/splitpoint/tasks"
)

// The device's frame path with W workers:
//
//	source ─▶ capture loop ─jobs─▶ W workers ─sends─▶ publisher ─▶ paho
//	                                     └─profiles─▶ profiler
//
// The capture loop (the Run goroutine) takes a window slot, reads and
// decodes a frame, numbers it (seq) and fixes its split — both in capture
// order — and hands it to a worker. A worker runs the
// local stages and encodes the state, registers the frame in flight and
// hands it to the publisher, which gives it to paho (paho writes a message
// to the socket before its next Publish returns). So the capture of the
// next frames overlaps the stages, W frames go through the stages at once,
// and publishing overlaps both.
//
// A frame due for profiling is copied by its worker and the copy handed to
// the profiler, which runs it through every stage on its own goroutine:
// the frame itself goes on at once instead of waiting for the pass (all
// stages and an encoding at every boundary, several times a frame's own
// work), which competes for the CPU like any other work. A frame that
// finds the profiler busy is not copied; a later frame is profiled
// (profileDue asks again).
//
// Bounds: jobs holds at most W frames and sends at most window frames;
// profiles holds one copy and the profiler works on one;
// every frame from the moment its slot is taken (before the source is read)
// until its result is back or it is dropped holds a window slot, so at most
// window frames are between the source and their result, whatever W is.
// The capture loop never gives up a captured frame: the workers take every
// job until jobs is closed, and each either registers the frame in flight
// or counts it dropped, closing its native values with its state.

// job is one captured frame on its way to a worker.
type job struct {
	seq      uint64
	split    int // fixed by the capture loop, in seq order
	in       any // the source's input; the worker owns it
	captured time.Time
	profile  bool   // also profile this frame
	gen      uint64 // the profiling round
}

// profileJob is a copy of a frame's input for the profiler.
type profileJob struct {
	in  tasks.Array
	gen uint64
}

// startWorkers starts the workers and the publisher. The returned function
// is called once the capture loop has returned: it lets the workers finish
// every job, then the publisher every send, and waits for them.
func (d *device) startWorkers() (stop func()) {
	var workers, publisher, profiler sync.WaitGroup
	profiler.Add(1)
	go func() {
		defer profiler.Done()
		for p := range d.profiles {
			d.profile(p.in, p.gen)
		}
	}()
	publisher.Add(1)
	go func() {
		defer publisher.Done()
		for f := range d.sends {
			if d.win.holds(f) { // not evicted meanwhile (drop-oldest)
				d.send(f)
			}
		}
	}()
	for range d.workers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range d.jobs {
				d.process(j)
			}
		}()
	}
	return func() {
		close(d.jobs)
		workers.Wait()
		close(d.profiles)
		close(d.sends)
		publisher.Wait()
		profiler.Wait()
	}
}

// captureLoop captures frames and hands them to the workers until the
// count is reached, the source ends or ctx is done.
func (d *device) captureLoop(ctx context.Context, src tasks.Source) error {
	block := d.cfg.Policy == PolicyBlock
	for n := 0; d.cfg.Frames == 0 || n < d.cfg.Frames; n++ {
		if block {
			if err := d.acquireSendable(ctx, uint64(n)); err != nil {
				return err
			}
		} else {
			// Going offline first moves the frames in flight out of the
			// window, so that they are not evicted.
			_, spooling := d.sendable()
			d.spoolingNow(spooling, uint64(n))
			ev, err := d.win.acquireEvicting(ctx)
			if err != nil {
				return err
			}
			if ev != nil {
				d.stats.drop(DropWindowFull)
			}
		}
		in, err := src.Read(ctx)
		captured := time.Now()
		if err != nil {
			d.win.release()
			if errors.Is(err, io.EOF) {
				d.log.Info("source ended", "frames", n)
				return nil
			}
			return err
		}
		d.progress()
		d.stats.add(func(s *Summary) { s.Captured++ })
		ok, spooling := d.sendable()
		if !ok && !block {
			closeInput(in) // no stage work for a frame that cannot be sent
			d.win.release()
			d.stats.drop(DropNoCloud)
			continue
		}
		// (Under block a frame captured as the cloud went away is sent
		// anyway; it is resent once a cloudproc is back.)
		j := job{seq: uint64(n), split: d.splitAt(uint64(n)), in: in, captured: captured}
		if d.spoolingNow(spooling, j.seq) {
			// Only small states leave: every stage but the sink runs here.
			j.split = d.pipe.MaxSplit()
			d.stats.add(func(s *Summary) { s.Spooled++ })
		}
		j.gen, j.profile = d.perf.profileDue(d.cfg.ProfileFrames, d.cfg.ProfileInterval.D(), captured)
		d.jobs <- j // the workers take every job: this never loses a frame
	}
	return nil
}

// sendable reports whether a frame captured now can be sent: a cloudproc
// is online, or (offline = "spool") the gateway announced a bridge, whose
// spool keeps the states until the link is back, and the states sent
// offline and not yet answered fit offline_max_bytes; spooling tells the
// latter case.
func (d *device) sendable() (ok, spooling bool) {
	if d.clouds.any() {
		return true, false
	}
	if d.cfg.Offline != OfflineSpool || !d.clouds.bridged() {
		return false, false
	}
	_, bytes := d.win.spooledSize()
	return bytes < d.cfg.OfflineMaxBytes, true
}

// acquireSendable waits until a frame captured now can be sent (sendable)
// and takes a window slot for it. Going offline moves the frames in flight
// out of the window first, so a window full of frames whose results
// cannot come yet does not hold a spooling device; a change of the cloud's
// presence while it waits for a slot makes it look again.
func (d *device) acquireSendable(ctx context.Context, seq uint64) error {
	for {
		pc, wc := d.clouds.changedC(), d.win.changedC()
		ok, spooling := d.sendable()
		if !ok {
			select {
			case <-pc:
			case <-wc:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		d.spoolingNow(spooling, seq)
		got, err := d.win.acquireUnless(ctx, pc)
		if err != nil || got {
			return err
		}
	}
}

// spoolingNow switches the window to or from spooling when the capture
// loop's view changes (called in seq order) and returns spooling.
func (d *device) spoolingNow(spooling bool, seq uint64) bool {
	if spooling == d.spooling {
		return spooling
	}
	d.spooling = spooling
	moved := d.win.setOffline(spooling)
	if spooling {
		d.log.Warn("no cloudproc reachable: spooling through the gateway's bridge; every stage but the sink runs here",
			"seq", seq, "split", d.pipe.MaxSplit(), "in_flight_moved", moved, "offline_max_bytes", d.cfg.OfflineMaxBytes)
	} else {
		frames, bytes := d.win.spooledSize()
		d.log.Info("a cloudproc is reachable again; spooled frames await their results", "seq", seq, "spooled_frames", frames, "spooled_bytes", bytes)
	}
	return spooling
}

// splitAt fixes the split of frame seq: the split in force now. The capture
// loop calls it in seq order, so a split change applies to every frame
// from the first one captured after it.
func (d *device) splitAt(seq uint64) int {
	k := int(d.split.Load())
	if k != d.lastSplit && seq > 0 {
		d.log.Info("split changed at a frame", "split", k, "previous", d.lastSplit, "seq", seq)
	}
	d.lastSplit = k
	return k
}

// closeInput closes a source's input that no state took.
func closeInput(in any) {
	if n, ok := in.(tasks.Native); ok {
		_ = n.Close()
	}
}

// wrap runs a stage with the emulated slowdown and reports its times. The
// slowdown spins on the calling worker's own thread CPU clock, so W
// workers emulate W slower cores.
func (d *device) wrap(report func(stage string, cpu, emulated time.Duration)) tasks.Wrap {
	slow := floatFrom(d.slowdown.Load())
	return func(stage string, run func() (tasks.Outcome, error)) (tasks.Outcome, error) {
		var out tasks.Outcome
		var err error
		cpu, emu := emulate.Run(slow, func() { out, err = run() })
		report(stage, cpu, emu)
		return out, err
	}
}

// queueProfile hands a copy of a frame's input to the profiler for
// profiling round gen. When the profiler's slot is taken it makes no copy
// and hands the pass back (unclaim: a later frame is profiled); an input
// that cannot be copied counts as a failed pass.
func (d *device) queueProfile(in any, gen uint64) {
	if len(d.profiles) == cap(d.profiles) { // busy (only workers send: a race costs one copy)
		d.perf.unclaim(gen)
		return
	}
	// A copy (an array is never changed in place): the input itself is
	// processed as usual.
	a, ok := in.(tasks.Array)
	if n, native := in.(tasks.Native); native {
		var err error
		if a, err = n.Array(); err != nil {
			d.log.Warn("cannot copy the input to profile it", "error", err)
			ok = false
		} else {
			ok = true
		}
	}
	if !ok {
		d.perf.profiled(gen, nil, nil, nil, nil, false, d.cfg.ProfileFrames, time.Now()) // a failed pass
		return
	}
	select {
	case d.profiles <- profileJob{in: a, gen: gen}:
	default: // another worker took the slot meanwhile
		d.perf.unclaim(gen)
	}
}

// profile runs a copy of a frame's input through every stage but the
// sink, timing each and sizing the state at every boundary, for profiling
// round gen.
func (d *device) profile(a tasks.Array, gen uint64) {
	n := d.pipe.Len()
	dev := make([]time.Duration, 0, n-1)
	cpu := make([]time.Duration, 0, n-1)
	bytes := make([]int, n)
	enc := make([]time.Duration, n)
	complete := false
	defer func() {
		d.stats.add(func(s *Summary) { s.Profiled++ })
		d.perf.profiled(gen, dev, cpu, bytes, enc, complete, d.cfg.ProfileFrames, time.Now())
	}()
	st := tasks.NewState(d.cfg.ID, 0)
	defer st.Close()
	st.SetArray(tasks.FieldSource, a)
	for i := 0; i < n-1; i++ {
		filtered, err := d.pipe.Run(context.Background(), st, i, i+1, d.wrap(func(_ string, c, e time.Duration) {
			cpu, dev = append(cpu, c), append(dev, e)
		}))
		if err != nil || filtered != "" {
			return
		}
		t0 := time.Now()
		if b, err := d.pipe.Envelope(st, tasks.Frame{Device: d.cfg.ID, Run: d.run, Captured: t0}, i+1, i+1, "", nil, d.enc); err == nil {
			bytes[i+1], enc[i+1] = len(b), time.Since(t0)
		}
	}
	complete = true
}

// process runs the local stages on one frame at its split and hands its
// state to the publisher. It always either registers the frame in flight
// or counts it dropped, and closes the frame's native values.
func (d *device) process(j job) {
	if j.profile {
		d.queueProfile(j.in, j.gen)
	}
	start := time.Now()
	st := tasks.NewState(d.cfg.ID, j.seq)
	defer st.Close()
	if err := st.SetInput(tasks.FieldSource, j.in); err != nil {
		d.win.release()
		d.stats.drop(DropStageError)
		d.log.Error("source gave an input of the wrong kind; frame dropped", "seq", j.seq, "error", err)
		return
	}
	var stagesTime time.Duration
	i := 0
	frame := tasks.Frame{Device: d.cfg.ID, Run: d.run, Seq: j.seq, Captured: j.captured}
	// Stages are not cancelled: a frame captured is processed and sent.
	out, err := d.pipe.Offload(context.Background(), st, frame, j.split, d.enc, d.wrap(func(_ string, cpu, emu time.Duration) {
		d.perf.stage(i, emu, cpu, time.Now())
		stagesTime += emu
		i++
	}))
	switch {
	case errors.Is(err, tasks.ErrEncode):
		d.win.release()
		d.stats.drop(DropEncodeError)
		d.log.Error("cannot encode state; frame dropped", "seq", j.seq, "error", err)
		return
	case err != nil:
		d.win.release()
		d.stats.drop(DropStageError)
		d.log.Error("local stage failed; frame dropped", "seq", j.seq, "error", err)
		return
	}
	if out.FilteredAt != "" {
		d.stats.add(func(s *Summary) { s.FilteredLocal++ })
	}
	size := len(out.Payload)
	if size > d.cfg.MaxMessageBytes {
		d.win.release()
		d.stats.drop(DropTooLarge)
		d.log.Warn("state larger than max_message_bytes; frame dropped", "seq", j.seq, "bytes", size, "max", d.cfg.MaxMessageBytes)
		return
	}
	now := time.Now()
	if out.FilteredAt == "" {
		d.perf.bytes(j.split, size, now)
	}
	f := &flight{seq: j.seq, topic: d.topics[out.Next], payload: out.Payload, captured: j.captured, sent: now}
	d.win.register(f)
	d.stats.add(func(s *Summary) { s.Sent++; s.BytesSent += int64(size) })
	d.perf.overheadMS(time.Since(start)-stagesTime, time.Now())
	d.sends <- f
}
