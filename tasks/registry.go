package tasks

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/splitpoint/splitpoint/wire"
)

// Options is a pipeline's configuration: a pointer to a struct whose fields
// carry toml tags (the device's config file) and cbor tags (the wire).
type Options interface {
	// Validate reports the first invalid option as "field: what is allowed".
	Validate() error
}

// Spec describes a pipeline to the registry.
type Spec struct {
	// Name is what configs write in pipeline = "...".
	Name string
	// Summary is one line for --help and the README.
	Summary string
	// NewOptions returns fresh options filled with the documented defaults.
	NewOptions func() Options
	// Stages builds the stages from validated options.
	Stages func(opts Options) ([]Stage, error)
	// CheckSource validates a source URI's form without opening it
	// (config validation), with a message naming the kinds allowed.
	CheckSource func(uri string) error
	// OpenSource opens a source of the kinds the pipeline supports; its
	// inputs are what the first stage reads under FieldSource.
	OpenSource func(ctx context.Context, uri string, opts Options, so SourceOptions) (Source, error)
	// HomeAssistant is what the gateway announces for the pipeline's
	// devices besides the framework's own sensors and controls.
	HomeAssistant HomeAssistant
}

// HomeAssistant describes what a pipeline offers Home Assistant.
type HomeAssistant struct {
	// Frames: the pipeline publishes annotated images (a camera entity).
	Frames bool
	// Sensors read from the device's results (…/result).
	Sensors []HASensor
}

// HASensor is a Home Assistant sensor on a field of the pipeline's result.
type HASensor struct {
	Key         string // unique per pipeline: [a-z0-9_]+
	Name        string // shown in Home Assistant
	Template    string // value_template over the result JSON, e.g. {{ value_json.score }}
	Unit        string // unit_of_measurement, or "" for none
	DeviceClass string // Home Assistant device class, or ""
	Icon        string // mdi:…, or ""
}

var (
	regMu    sync.RWMutex
	registry = map[string]Spec{}
)

// Register adds a pipeline. It panics on an invalid or duplicate name, as
// http.Handle does: registration happens in init functions.
func Register(s Spec) {
	if err := wire.ValidateName(s.Name); err != nil {
		panic(fmt.Sprintf("tasks.Register: %v", err))
	}
	if s.NewOptions == nil || s.Stages == nil || s.CheckSource == nil || s.OpenSource == nil {
		panic("tasks.Register: NewOptions, Stages, CheckSource and OpenSource are required")
	}
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[s.Name]; dup {
		panic("tasks.Register: pipeline registered twice: " + s.Name)
	}
	registry[s.Name] = s
}

// Lookup returns the registered pipeline spec.
func Lookup(name string) (Spec, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	s, ok := registry[name]
	return s, ok
}

// Names lists the registered pipelines, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for k := range registry {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var (
	optEnc, _ = cbor.CoreDetEncOptions().EncMode()
	optDec, _ = cbor.DecOptions{
		MaxNestedLevels:   4,
		MaxArrayElements:  256,
		MaxMapPairs:       64,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
)

// Build validates opts and builds the named pipeline; nil opts means the
// defaults (Spec.NewOptions).
func Build(name string, opts Options) (*Pipeline, error) {
	spec, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown pipeline %q (registered: %v)", name, Names())
	}
	if opts == nil {
		opts = spec.NewOptions()
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	enc, err := optEnc.Marshal(opts)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s: encode options: %w", name, err)
	}
	if len(enc) > wire.MaxOptsBytes {
		return nil, fmt.Errorf("pipeline %s: options encode to %d bytes (max %d)", name, len(enc), wire.MaxOptsBytes)
	}
	stages, err := spec.Stages(opts)
	if err != nil {
		return nil, err
	}
	return NewPipeline(name, enc, stages...)
}

// BuildEncoded builds the named pipeline from options as a state carries
// them. Absent options mean the defaults.
func BuildEncoded(name string, enc []byte) (*Pipeline, error) {
	spec, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown pipeline %q (registered: %v)", name, Names())
	}
	opts := spec.NewOptions()
	if len(enc) > 0 {
		if err := optDec.Unmarshal(enc, opts); err != nil {
			return nil, fmt.Errorf("pipeline %s: options: %w", name, err)
		}
	}
	return Build(name, opts)
}

// StageNames returns the stage names of every registered pipeline (built
// with its default options), sorted and without repeats: the stage topics
// a gateway lets devices publish.
func StageNames() []string {
	seen := map[string]bool{}
	for _, name := range Names() {
		spec, _ := Lookup(name)
		stages, err := spec.Stages(spec.NewOptions())
		if err != nil {
			continue // a pipeline whose defaults do not build has no devices either
		}
		for _, s := range stages {
			seen[s.Name()] = true
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
