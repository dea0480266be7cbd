package benchkit

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The verifier lines among go test's other output, as BenchmarkLB and
// BenchmarkPolicy print them (both, in `make bench`: the second copy is
// dropped), with lines that only look like them.
func TestParseVerifier(t *testing.T) {
	lines := []string{
		"goos: linux",
		"verifier: sl_from_ep (endpoint): 13628 instructions, 344249 processed, 34.4% of the 1000000 limit",
		"verifier: sl_sock_connect6 (sock): 558 instructions, 992 processed, 0.1% of the 1000000 limit",
		"verifier: sl_from_ep: 5805 instructions, 249247 verified instructions", // the old format: no object
		"    lbbench_test.go:259: verifier: sl_to_ep (endpoint): 1 instructions, 2 processed",
		"verifier: sl_from_ep (endpoint): 1 instructions, 1 processed, 0.0% of the 1000000 limit",
	}
	got := ParseVerifier(lines)
	require.Equal(t, []VerifierCount{
		{Program: "sl_from_ep", Object: "endpoint", Instructions: 13628, Processed: 344249},
		{Program: "sl_sock_connect6", Object: "sock", Instructions: 558, Processed: 992},
	}, got)
	assert.InDelta(t, 34.4249, got[0].Share(), 1e-9)
}

func TestPrintVerifier(t *testing.T) {
	var b strings.Builder
	PrintVerifier(&b, "   ", []VerifierCount{
		{Program: "sl_from_ep", Object: "endpoint", Instructions: 13628, Processed: 344249},
		{Program: "sl_sock_recvmsg6", Object: "sock", Instructions: 90, Processed: 0},
	})
	out := b.String()
	assert.Contains(t, out, "limit of 1000000 per program")
	row := func(prefix string) []string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == prefix {
				return f
			}
		}
		t.Fatalf("no row %s in:\n%s", prefix, out)
		return nil
	}
	assert.Equal(t, []string{"sl_from_ep", "endpoint", "13628", "344249", "34.4%", "2.9x"}, row("sl_from_ep"))
	assert.Equal(t, []string{"sl_sock_recvmsg6", "sock", "90", "0", "0.0%", "-"}, row("sl_sock_recvmsg6"))
}
