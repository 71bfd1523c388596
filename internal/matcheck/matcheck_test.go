package matcheck

import (
	"testing"

	"gocv.io/x/gocv"
)

func TestOpenCountsMats(t *testing.T) {
	if !Enabled {
		t.Skip("needs -tags matprofile")
	}
	before := Open()
	m := gocv.NewMat()
	if Open() != before+1 {
		t.Errorf("Open() = %d after NewMat, want %d", Open(), before+1)
	}
	m.Close()
	if Open() != before {
		t.Errorf("Open() = %d after Close, want %d", Open(), before)
	}
}
