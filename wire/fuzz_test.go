package wire_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/balltrack"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"github.com/splitpoint/splitpoint/wire"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from real states")

// boundaryStates encodes a real small frame's state at every boundary.
func boundaryStates(t testing.TB) [][]byte {
	o := balltrack.DefaultOptions()
	o.Width = 64
	p, err := tasks.Build(balltrack.Name, o)
	if err != nil {
		t.Fatal(err)
	}
	src := source.NewSynthetic(source.SyntheticOptions{Width: 96, Height: 72, Seed: 2})
	defer src.Close()
	var out [][]byte
	for k := 1; k <= p.MaxSplit(); k++ {
		frame, err := src.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s := tasks.NewState("pi1", uint64(k))
		cvmat.Set(s, tasks.FieldSource, frame)
		filtered, err := p.Run(context.Background(), s, 0, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		next := k
		if filtered != "" {
			next = p.Len() - 1
		}
		codec := "raw"
		if k%2 == 0 {
			codec = "png"
		}
		fields, err := tasks.EncodeFields(s, p.Needs(next), tasks.Encoding{Codec: codec})
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		b, err := wire.Encode(&wire.Envelope{Version: wire.Version, Pipeline: p.Name(), Opts: p.Options(), Device: "pi1", Run: "r",
			Seq: uint64(k), Split: k, Next: p.Stage(next).Name(), FilteredAt: filtered, Fields: fields,
			Timings: []wire.Timing{{Stage: "capture", Nanos: 5, Where: wire.OnDevice}}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestWriteSeedCorpus(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite the committed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, b := range boundaryStates(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("boundary-%d", i+1)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecode checks that no input makes the decoder panic or accept an
// envelope that fails validation, and that what it accepts re-encodes to
// an envelope that decodes the same.
func FuzzDecode(f *testing.F) {
	// The committed corpus in testdata/fuzz/FuzzDecode holds a real state
	// at every stage boundary (see TestWriteSeedCorpus).
	f.Add([]byte{})
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := wire.Decode(b, 1<<20)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an invalid envelope: %v", err)
		}
		again, err := wire.Encode(e)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		e2, err := wire.Decode(again, 1<<20)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		again2, _ := wire.Encode(e2)
		if !bytes.Equal(again, again2) {
			t.Fatal("encoding is not stable")
		}
	})
}
