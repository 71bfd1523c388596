package tasks_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	_ "github.com/splitpoint/splitpoint/pipelines"
	"github.com/splitpoint/splitpoint/tasks"
)

// The core is application-free: tasks and wire — and the device, cloudproc
// and gateway packages themselves — build without OpenCV, so a pipeline
// that is not vision needs none of it. Vision pipelines reach OpenCV
// through tasks/cvmat; the binaries get it through the pipelines they
// register.
func TestCoreDoesNotDependOnOpenCV(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/splitpoint/splitpoint/tasks", "github.com/splitpoint/splitpoint/wire",
		"github.com/splitpoint/splitpoint/device", "github.com/splitpoint/splitpoint/cloudproc", "github.com/splitpoint/splitpoint/gateway").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "gocv.io/") {
			t.Errorf("the core depends on %s", pkg)
		}
	}
}

// The README's rows for the pipelines' options are the ones generated from
// the options types (toml key, doc tag, default): documentation, defaults
// and validation come from one description.
func TestREADMEDocumentsEveryPipelineOption(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range tasks.Names() {
		rows, err := tasks.OptionsMarkdown(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range strings.Split(strings.TrimSpace(rows), "\n") {
			if !strings.Contains(string(readme), row+"\n") {
				t.Errorf("README.md lacks the generated row\n%s", row)
			}
		}
	}
}
