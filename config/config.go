// Package config loads splitpoint's TOML configuration files strictly:
// unknown keys are errors, and every error is one line that names the file,
// the line, the field and what is allowed.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Error is a configuration error: where it is and what is wrong.
type Error struct {
	File  string // config file, or "" for a flag or a default
	Line  int    // 1-based line in File, or 0 when unknown
	Flag  string // the flag that set the value, if any
	Field string // dotted field name
	Msg   string // what is wrong and what is allowed
}

func (e *Error) Error() string {
	var where string
	switch {
	case e.Flag != "":
		where = "flag --" + e.Flag
	case e.File != "" && e.Line > 0:
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	case e.File != "":
		where = e.File
	default:
		where = "default config"
	}
	if e.Field == "" {
		return where + ": " + e.Msg
	}
	return where + ": " + e.Field + ": " + e.Msg
}

// FieldError is what a Validate method returns: which field, what is wrong.
// File.Locate turns it into an Error with a place.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Errorf builds a FieldError.
func Errorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Duration is a time.Duration written as a string ("2s", "150ms").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like \"2s\" or \"150ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// File is a loaded configuration file.
type File struct {
	Path  string
	text  []byte
	md    toml.MetaData
	flags map[string]string // field → flag that set it
}

// Load decodes the TOML file at path into v, a pointer to a struct already
// holding the defaults. Keys that v does not have are errors, except inside
// the tables named in open, which the caller decodes later with DecodeTable.
// An empty path returns a File that only carries flag overrides.
func Load(path string, v any, open ...string) (*File, error) {
	f := &File{Path: path, flags: map[string]string{}}
	if path == "" {
		return f, nil
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot read: " + unwrapPathErr(err)}
	}
	f.text = text
	md, err := toml.NewDecoder(bytes.NewReader(text)).Decode(v)
	if err != nil {
		return nil, f.decodeError(err)
	}
	f.md = md
	for _, k := range md.Undecoded() {
		if len(k) > 0 && slices.Contains(open, k[0]) {
			continue
		}
		return nil, &Error{File: path, Line: f.line(k.String()), Field: k.String(), Msg: unknownMsg(v, k, open)}
	}
	return f, nil
}

// unknownMsg says that key k is unknown and lists the keys allowed where
// it stands, from v's toml tags.
func unknownMsg(v any, k toml.Key, extra []string) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	where := ""
	for _, part := range k[:len(k)-1] {
		sf, ok := fieldByTag(t, part)
		if !ok || sf.Type.Kind() != reflect.Struct {
			return "unknown field"
		}
		t = sf.Type
		where = " in [" + strings.Join(k[:len(k)-1], ".") + "]"
	}
	var allowed []string
	for i := 0; i < t.NumField(); i++ {
		if tag := tagName(t.Field(i)); tag != "" {
			allowed = append(allowed, tag)
		}
	}
	if where == "" {
		for _, e := range extra {
			allowed = append(allowed, "["+e+"]")
		}
	}
	sort.Strings(allowed)
	return fmt.Sprintf("unknown field%s (allowed: %s)", where, strings.Join(allowed, ", "))
}

func tagName(sf reflect.StructField) string {
	tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
	if tag == "-" || !sf.IsExported() {
		return ""
	}
	return tag
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if tagName(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func unwrapPathErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// typeErr matches BurntSushi/toml's type mismatch errors.
var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)
var typeNames = regexp.MustCompile(`TOML value has type (\w+); destination has type (\w+)`)

func (f *File) decodeError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if msg == "" {
			msg = pe.Error()
		}
		return &Error{File: f.Path, Line: pe.Position.Line, Field: pe.LastKey, Msg: oneLine(msg)}
	}
	text := oneLine(err.Error())
	if m := typeErr.FindStringSubmatch(text); m != nil {
		line, _ := strconv.Atoi(m[1])
		msg := m[3]
		if t := typeNames.FindStringSubmatch(msg); t != nil {
			msg = fmt.Sprintf("must be %s (got %s)", article(tomlKind(t[2])), article(tomlKind(t[1])))
		}
		return &Error{File: f.Path, Line: line, Field: m[2], Msg: msg}
	}
	return &Error{File: f.Path, Msg: text}
}

func tomlKind(s string) string {
	switch s {
	case "int64", "integer", "int", "uint64", "uint":
		return "integer"
	case "float64", "float":
		return "float"
	case "bool", "boolean":
		return "boolean"
	case "struct", "map", "table":
		return "table"
	case "slice", "array":
		return "array"
	}
	return s
}

func article(s string) string {
	if s == "integer" || s == "array" {
		return "an " + s
	}
	return "a " + s
}

// DecodeTable decodes the table named table into v strictly. A file without
// that table leaves v as it is.
func (f *File) DecodeTable(table string, v any) error {
	if f.text == nil || !f.md.IsDefined(table) {
		return nil
	}
	var tables map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(f.text)).Decode(&tables)
	if err != nil {
		return f.decodeError(err)
	}
	if err := md.PrimitiveDecode(tables[table], v); err != nil {
		return f.decodeError(err)
	}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && k[0] == table {
			return &Error{File: f.Path, Line: f.line(k.String()), Field: k.String(), Msg: unknownMsg(v, k[1:], nil)}
		}
	}
	return nil
}

// SetByFlag records that a flag set field, so errors about it name the flag.
func (f *File) SetByFlag(field, flag string) { f.flags[field] = flag }

// Locate turns a validation error into an Error naming where the value came
// from: the flag that set it, or the file and line, or the defaults.
func (f *File) Locate(err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return &Error{File: f.Path, Msg: err.Error()}
	}
	e := &Error{Field: fe.Field, Msg: fe.Msg}
	if flag, ok := f.flags[fe.Field]; ok {
		e.Flag = flag
		return e
	}
	if f.text != nil && f.md.IsDefined(strings.Split(fe.Field, ".")...) {
		e.File, e.Line = f.Path, f.line(fe.Field)
		return e
	}
	if f.text != nil {
		e.File = f.Path
	}
	return e
}

// line finds the line that sets a dotted key, following [table] headers.
// It returns 0 when it cannot tell.
func (f *File) line(dotted string) int {
	sc := bufio.NewScanner(bytes.NewReader(f.text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	table := ""
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "[") {
			table = strings.Trim(l, "[] \t")
			if i := strings.Index(table, "#"); i >= 0 {
				table = strings.TrimSpace(table[:i])
			}
			if table == dotted {
				return n
			}
			continue
		}
		key, _, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		key = strings.Trim(strings.TrimSpace(key), `"`)
		full := key
		if table != "" {
			full = table + "." + key
		}
		if full == dotted {
			return n
		}
	}
	return 0
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
