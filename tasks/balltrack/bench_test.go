package balltrack

import (
	"fmt"
	"testing"

	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
	"github.com/splitpoint/splitpoint/wire"
)

// stateBefore returns the state as stage i (0-based) receives it.
func stateBefore(b *testing.B, p *tasks.Pipeline, i int) *tasks.State {
	src := source.NewSynthetic(source.SyntheticOptions{Width: 640, Height: 480, Seed: 1})
	defer src.Close()
	f, err := src.Read(ctx)
	if err != nil {
		b.Fatal(err)
	}
	s := tasks.NewState("bench", 0)
	cvmat.Set(s, tasks.FieldSource, f)
	if _, err := p.Run(ctx, s, 0, i, nil); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkStage times each stage on a 640×480 synthetic frame.
func BenchmarkStage(b *testing.B) {
	for _, annotate := range []bool{false, true} {
		o := DefaultOptions()
		o.Annotate = annotate
		p, err := tasks.Build(Name, o)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < p.Len(); i++ {
			if annotate && i < 5 { // annotate changes only draw and sink
				continue
			}
			name := p.Stage(i).Name()
			if annotate {
				name += "-annotate"
			}
			b.Run(name, func(b *testing.B) {
				for n := 0; n < b.N; n++ {
					b.StopTimer()
					s := stateBefore(b, p, i)
					b.StartTimer()
					if _, err := p.Stage(i).Process(ctx, s); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					s.Close()
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkCodec times encoding and decoding the state shipped at every
// boundary (split k ships the input of stage k+1) and reports its size.
func BenchmarkCodec(b *testing.B) {
	p, err := tasks.Build(Name, DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	for k := 1; k <= p.MaxSplit(); k++ {
		for _, codec := range []string{"raw", "auto", "png", "jpeg"} {
			enc := tasks.Encoding{Codec: codec, Quality: 90}
			s := stateBefore(b, p, k)
			needs := p.Needs(k)
			encode := func() []byte {
				fields, err := tasks.EncodeFields(s, needs, enc)
				if err != nil {
					b.Fatal(err)
				}
				out, err := wire.Encode(&wire.Envelope{Version: wire.Version, Pipeline: Name, Device: "bench", Run: "r", Split: k,
					Next: p.Stage(k).Name(), Fields: fields})
				if err != nil {
					b.Fatal(err)
				}
				return out
			}
			payload := encode()
			b.Run(fmt.Sprintf("encode/split%d/%s", k, codec), func(b *testing.B) {
				for n := 0; n < b.N; n++ {
					encode()
				}
				b.ReportMetric(float64(len(payload)), "B/frame")
			})
			b.Run(fmt.Sprintf("decode/split%d/%s", k, codec), func(b *testing.B) {
				for n := 0; n < b.N; n++ {
					e, err := wire.Decode(payload, wire.DefaultMaxMessageBytes)
					if err != nil {
						b.Fatal(err)
					}
					r := tasks.NewState("bench", 0)
					if err := tasks.DecodeFields(r, e.Fields); err != nil {
						b.Fatal(err)
					}
					r.Close()
				}
				b.ReportMetric(float64(len(payload)), "B/frame")
			})
			s.Close()
		}
	}
}
