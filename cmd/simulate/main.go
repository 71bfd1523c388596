// Command simulate prints the split controller's report: for each fixed
// scenario, our controller, the original framework's policy, the per-phase
// oracle and every static split, on a virtual clock.
package main

import (
	"os"

	"github.com/splitpoint/splitpoint/controller"
	"github.com/splitpoint/splitpoint/sim"
)

func main() {
	sim.Report(os.Stdout, controller.Params{})
}
