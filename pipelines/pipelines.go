// Package pipelines registers every pipeline splitpoint ships. Every binary
// imports it, so that device, cloudproc and gateway know the same registry
// (the gateway needs it to know which stage topics exist); nothing else
// imports a pipeline for its registration.
package pipelines

import (
	// Register the pipelines.
	_ "github.com/splitpoint/splitpoint/tasks/balltrack"
	_ "github.com/splitpoint/splitpoint/tasks/vibration"
)
