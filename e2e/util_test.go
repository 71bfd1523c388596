package e2e

import (
	"context"
	"encoding/json"
	"regexp"

	"github.com/splitpoint/splitpoint/source"
	"gocv.io/x/gocv"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// writeVideo writes frames of the synthetic source as an MJPG AVI file.
func writeVideo(path string, frames int) error {
	src := source.NewSynthetic(source.SyntheticOptions{Width: 640, Height: 480, Seed: 9, Frames: frames})
	defer src.Close()
	w, err := gocv.VideoWriterFile(path, "MJPG", 30, 640, 480, true)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		f, err := src.Read(context.Background())
		if err != nil {
			return nil
		}
		err = w.Write(f)
		f.Close()
		if err != nil {
			return err
		}
	}
}
