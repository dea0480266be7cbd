// Package stream holds what the workload's stream command reports, shared
// by the command and the tests that read its output.
package stream

// Result is what `workload stream` prints as JSON: the held connection's
// round trips and whether it broke, and the new connections opened
// meanwhile.
type Result struct {
	HeldRoundTrips int      `json:"heldRoundTrips"`
	HeldError      string   `json:"heldError,omitempty"`
	NewOK          int      `json:"newOK"`
	NewFailed      int      `json:"newFailed"`
	NewErrors      []string `json:"newErrors,omitempty"`
	// Backends are the server pods that answered, in order of first answer.
	Backends []string `json:"backends"`
}
