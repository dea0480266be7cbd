package cli

// For the external tests.
type WireJSON = wireJSON

var (
	NewWireJSON      = newWireJSON
	ErrNotTranscoded = errNotTranscoded
	FlowVerdictText  = flowVerdictText
)
