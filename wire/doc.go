// Package wire owns everything that crosses the broker: the topic scheme, the
// names that may appear in topics, the binary task-state envelope that carries
// a frame between stages, and the JSON result a pipeline emits per frame.
//
// No other package formats or parses a topic string by hand; they call the
// functions here. The package does not depend on OpenCV: matrices travel as
// plain [Mat] values and the tasks package converts them.
package wire
