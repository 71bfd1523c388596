// Package tasks is splitpoint's processing model: a Stage processes a State,
// stages form a Pipeline, and pipelines are registered by name so that a
// configuration can choose one.
//
// The framework knows nothing about any application. A pipeline is a list of
// stages whose first stage always runs on the device (it turns a captured
// frame into the pipeline's input) and whose last stage, the sink, always
// runs in the cloud and produces the per-frame result. Everything between
// can run on either side; the split point k is the number of stages run on
// the device.
//
// Every stage declares the fields it reads and writes. From that the pipeline
// derives, for each boundary, the fields that a later stage still needs, and
// only those are shipped.
package tasks
