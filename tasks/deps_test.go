package tasks_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The core is application-free: tasks and wire build without OpenCV, so a
// pipeline that is not vision needs none of it. Vision pipelines reach
// OpenCV through tasks/cvmat.
func TestCoreDoesNotDependOnOpenCV(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/splitpoint/splitpoint/tasks", "github.com/splitpoint/splitpoint/wire").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "gocv.io/") {
			t.Errorf("tasks or wire depends on %s", pkg)
		}
	}
}
