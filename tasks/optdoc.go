package tasks

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// OptionDoc documents one option of a pipeline. It is read from the options
// type itself — the field's `toml` key and `doc` tag, and the default that
// Spec.NewOptions returns — so that the defaults, the validation (the
// type's Validate) and the documentation come from one description, the way
// Benthos/Redpanda Connect's ConfigSpec does it.
type OptionDoc struct {
	Key     string // the key in the pipeline's table of the device config
	Default string // the default, written as TOML
	Doc     string // what it means, with units and what is allowed
}

// DescribeOptions documents every option of a registered pipeline, in the
// order of the options type's fields. A field with a toml key and no doc
// tag is an error.
func DescribeOptions(pipeline string) ([]OptionDoc, error) {
	spec, ok := Lookup(pipeline)
	if !ok {
		return nil, fmt.Errorf("unknown pipeline %q", pipeline)
	}
	v := reflect.ValueOf(spec.NewOptions())
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, fmt.Errorf("pipeline %s: options are a %s, not a struct", pipeline, v.Kind())
	}
	var out []OptionDoc
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if key == "" || key == "-" {
			continue
		}
		doc := f.Tag.Get("doc")
		if doc == "" {
			return nil, fmt.Errorf("pipeline %s: option %s has no doc tag", pipeline, key)
		}
		var b bytes.Buffer
		if err := toml.NewEncoder(&b).Encode(map[string]any{key: v.Field(i).Interface()}); err != nil {
			return nil, fmt.Errorf("pipeline %s: option %s: %w", pipeline, key, err)
		}
		_, def, _ := strings.Cut(strings.TrimSpace(b.String()), " = ")
		out = append(out, OptionDoc{Key: key, Default: def, Doc: doc})
	}
	return out, nil
}

// OptionsMarkdown renders a pipeline's options as rows of the README's
// configuration table: | `[pipeline] key` | `default` | doc |.
func OptionsMarkdown(pipeline string) (string, error) {
	docs, err := DescribeOptions(pipeline)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, d := range docs {
		fmt.Fprintf(&b, "| `[%s] %s` | `%s` | %s |\n", pipeline, d.Key, d.Default, d.Doc)
	}
	return b.String(), nil
}
