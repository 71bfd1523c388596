package tasks

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/splitpoint/splitpoint/wire"
)

// Outcome tells the framework what to do after a stage.
type Outcome int

const (
	// Continue passes the state to the next stage.
	Continue Outcome = iota
	// Filtered ends the frame early: no later stage but the sink runs, and
	// the result says at which stage the frame was filtered.
	Filtered
)

// Stage is one step of a pipeline. Process reads the fields named by Reads
// and writes those named by Writes. It must be safe for concurrent use on
// different states: the cloud runs several frames at once.
type Stage interface {
	Name() string
	Reads() []string
	Writes() []string
	Process(ctx context.Context, s *State) (Outcome, error)
}

// Pipeline is an ordered list of stages built from one set of options.
type Pipeline struct {
	name   string
	stages []Stage
	opts   []byte
	needs  [][]string // needs[i]: fields to ship to stages[i] (and later)
}

// NewPipeline checks the stages (at least three, valid unique names, every
// read produced by an earlier stage or the source) and derives what each
// boundary ships. opts is the encoded options the pipeline was built from;
// it travels with every state so the cloud builds the same pipeline.
func NewPipeline(name string, opts []byte, stages ...Stage) (*Pipeline, error) {
	if err := wire.ValidateName(name); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	if len(stages) < 3 {
		return nil, fmt.Errorf("pipeline %s: needs at least 3 stages (first on the device, sink in the cloud), has %d", name, len(stages))
	}
	seen := map[string]bool{}
	written := map[string]bool{FieldSource: true}
	for _, st := range stages {
		if err := wire.ValidateName(st.Name()); err != nil {
			return nil, fmt.Errorf("pipeline %s: stage: %w", name, err)
		}
		if seen[st.Name()] {
			return nil, fmt.Errorf("pipeline %s: stage %q appears twice", name, st.Name())
		}
		seen[st.Name()] = true
		for _, r := range st.Reads() {
			if !written[r] {
				return nil, fmt.Errorf("pipeline %s: stage %s reads %q, which no earlier stage writes", name, st.Name(), r)
			}
		}
		for _, w := range st.Writes() {
			if err := wire.ValidateName(w); err != nil {
				return nil, fmt.Errorf("pipeline %s: stage %s field: %w", name, st.Name(), err)
			}
			written[w] = true
		}
	}
	p := &Pipeline{name: name, stages: stages, opts: opts}
	p.needs = make([][]string, len(stages))
	for i := range stages {
		// Fields read at stage i or later that exist before stage i runs.
		avail := map[string]bool{FieldSource: true}
		for _, st := range stages[:i] {
			for _, w := range st.Writes() {
				avail[w] = true
			}
		}
		need := map[string]bool{}
		for _, st := range stages[i:] {
			for _, r := range st.Reads() {
				if avail[r] {
					need[r] = true
				}
			}
		}
		p.needs[i] = sortedKeys(need)
	}
	return p, nil
}

// Name is the pipeline's registered name.
func (p *Pipeline) Name() string { return p.name }

// Options returns the encoded options the pipeline was built from.
func (p *Pipeline) Options() []byte { return p.opts }

// Len is the number of stages.
func (p *Pipeline) Len() int { return len(p.stages) }

// Stage returns the i-th stage (0-based).
func (p *Pipeline) Stage(i int) Stage { return p.stages[i] }

// StageNames lists the stage names in order.
func (p *Pipeline) StageNames() []string {
	out := make([]string, len(p.stages))
	for i, s := range p.stages {
		out[i] = s.Name()
	}
	return out
}

// Index returns the 0-based position of the named stage, or -1.
func (p *Pipeline) Index(stage string) int {
	for i, s := range p.stages {
		if s.Name() == stage {
			return i
		}
	}
	return -1
}

// MaxSplit is the largest split: every stage but the sink on the device.
func (p *Pipeline) MaxSplit() int { return len(p.stages) - 1 }

// CheckSplit reports whether k is a valid split (1 ≤ k ≤ MaxSplit).
func (p *Pipeline) CheckSplit(k int) error {
	if k < 1 || k > p.MaxSplit() {
		return fmt.Errorf("split %d out of range (allowed 1..%d for pipeline %s)", k, p.MaxSplit(), p.name)
	}
	return nil
}

// Needs lists the fields that must be shipped to stage i (0-based) so that
// it and every later stage find what they read.
func (p *Pipeline) Needs(i int) []string { return p.needs[i] }

// Wrap runs one stage's Process. Runners use it to time stages and to
// emulate slower hardware; nil runs the stage as is.
type Wrap func(stage string, run func() (Outcome, error)) (Outcome, error)

// ErrStage wraps an error a stage returned.
var ErrStage = errors.New("stage failed")

// Run runs stages from..to-1 (0-based, half-open) on s. It returns the name
// of the stage that filtered the frame, or "" when every stage continued.
// After a filter no further stage of the range runs.
func (p *Pipeline) Run(ctx context.Context, s *State, from, to int, wrap Wrap) (filteredAt string, err error) {
	for i := from; i < to; i++ {
		st := p.stages[i]
		if err := ctx.Err(); err != nil {
			return "", err
		}
		call := func() (Outcome, error) { return st.Process(ctx, s) }
		var out Outcome
		if wrap != nil {
			out, err = wrap(st.Name(), call)
		} else {
			out, err = call()
		}
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrStage, st.Name(), err)
		}
		if out == Filtered {
			return st.Name(), nil
		}
	}
	return "", nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
