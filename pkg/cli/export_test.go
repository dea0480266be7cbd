package cli

import "io"

// For the external tests.
type WireJSON = wireJSON

var (
	NewWireJSON      = newWireJSON
	ErrNotTranscoded = errNotTranscoded
	FlowVerdictText  = flowVerdictText
)

// PrintResponses writes raw GetFlowsResponses (their wire bytes, as the
// observer sends them) with observe's printer for format, as `sluice
// observe -o format` does.
func PrintResponses(format string, w io.Writer, raws ...[]byte) error {
	p, err := newFlowPrinter(format, w)
	if err != nil {
		return err
	}
	for _, raw := range raws {
		if err := p.write(raw); err != nil {
			return err
		}
	}
	return p.close()
}
