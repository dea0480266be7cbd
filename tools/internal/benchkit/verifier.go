package benchkit

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// VerifierLimit is the kernel's limit on the instructions the verifier
// walks for one program (BPF_COMPLEXITY_LIMIT_INSNS): a program over it is
// refused at load.
const VerifierLimit = 1_000_000

// VerifierCount is one program's verifier figures, as pkg/datapath's
// benchmarks print them (logVerifierCounts).
type VerifierCount struct {
	Program string `json:"program"`
	// Object is the BPF object the program is in: endpoint, host, sock.
	Object string `json:"object"`
	// Instructions is the program's length; Processed the instructions
	// the verifier walked to accept it, the figure the limit applies to.
	Instructions int `json:"instructions"`
	Processed    int `json:"processed"`
}

// Share is Processed as a percentage of VerifierLimit.
func (c VerifierCount) Share() float64 { return 100 * float64(c.Processed) / VerifierLimit }

// verifierLine is a line logVerifierCounts prints:
//
//	verifier: sl_from_ep (endpoint): 13628 instructions, 344249 processed, 34.4% of the 1000000 limit
var verifierLine = regexp.MustCompile(`^verifier: (\S+) \((\S+)\): (\d+) instructions, (\d+) processed`)

// ParseVerifier picks the verifier lines out of a benchmark's other output
// lines (GoTest.Run's second result), in their order; a program listed
// twice (two benchmarks printed them) is kept once.
func ParseVerifier(lines []string) []VerifierCount {
	var out []VerifierCount
	seen := map[string]bool{}
	for _, l := range lines {
		m := verifierLine.FindStringSubmatch(l)
		if m == nil || seen[m[1]] {
			continue
		}
		insns, err1 := strconv.Atoi(m[3])
		processed, err2 := strconv.Atoi(m[4])
		if err1 != nil || err2 != nil {
			continue
		}
		seen[m[1]] = true
		out = append(out, VerifierCount{Program: m[1], Object: m[2], Instructions: insns, Processed: processed})
	}
	return out
}

// PrintVerifier tabulates counts: each program's length, the instructions
// its verification walked, their share of the kernel's limit and the
// headroom, how many times over the program could be as expensive before
// the limit refuses it. indent starts every line.
func PrintVerifier(w io.Writer, indent string, counts []VerifierCount) {
	fmt.Fprintf(w, "%sVerifier: instructions walked to accept each program (the same whatever the map contents), against the\n", indent)
	fmt.Fprintf(w, "%skernel's limit of %d per program; headroom: limit / processed (the newest verifier prunes most:\n", indent, VerifierLimit)
	fmt.Fprintf(w, "%solder kernels walk more for the same program).\n", indent)
	tw := NewTable(w)
	fmt.Fprintf(tw, "%sprogram\tobject\tinstructions\tprocessed\t%% of limit\theadroom\t\n", indent)
	for _, c := range counts {
		headroom := "-"
		if c.Processed > 0 {
			headroom = fmt.Sprintf("%.1fx", float64(VerifierLimit)/float64(c.Processed))
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%d\t%d\t%.1f%%\t%s\t\n", indent, c.Program, c.Object, c.Instructions, c.Processed, c.Share(), headroom)
	}
	tw.Flush()
}
