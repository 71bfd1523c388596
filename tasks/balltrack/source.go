package balltrack

import (
	"context"

	"github.com/splitpoint/splitpoint/source"
	"github.com/splitpoint/splitpoint/tasks"
	"github.com/splitpoint/splitpoint/tasks/cvmat"
)

// visionSource gives the pipeline's frames from a video source (package
// source: file, camera:N, rtsp/http(s) streams, synthetic) as native
// matrices.
type visionSource struct{ src source.Source }

// openSource opens a video source URI (see source.Open).
func openSource(ctx context.Context, uri string, _ tasks.Options, so tasks.SourceOptions) (tasks.Source, error) {
	src, err := source.OpenWithContext(ctx, uri, source.Options{
		ReopenBackoffMax: so.ReopenBackoffMax, ReopenGiveUp: so.ReopenGiveUp, MaxBadFrames: so.MaxBadFrames, Log: so.Log,
	})
	if err != nil {
		return nil, err
	}
	return visionSource{src}, nil
}

// Read returns the next frame, an 8-bit BGR matrix (cvmat.Mat).
func (v visionSource) Read(ctx context.Context) (any, error) {
	m, err := v.src.Read(ctx)
	if err != nil {
		return nil, err
	}
	return cvmat.Mat{Mat: m}, nil
}

// Close implements tasks.Source.
func (v visionSource) Close() error { return v.src.Close() }

// Counters implements tasks.SourceStats.
func (v visionSource) Counters() (reopens, errors int64) {
	st := v.src.Stats()
	return st.Reopens, st.Errors
}

// FPS implements tasks.SourceRate for live sources and paced synthetic ones.
func (v visionSource) FPS() float64 {
	if f, ok := v.src.(interface{ FPS() float64 }); ok {
		return f.FPS()
	}
	return 0
}
