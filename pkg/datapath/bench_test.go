package datapath

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// BenchmarkPrograms measures the endpoint programs in the kernel through
// BPF_PROG_TEST_RUN's repeat loop, and a pass-through program measured the
// same way in the same run as the baseline: the ratio is what to compare
// across machines and runs (timing here is noisy, ±20-30%). It prints the
// verifier's figures of every program too (logVerifierCounts).
//
//	make bench
func BenchmarkPrograms(b *testing.B) {
	logVerifierCounts(b)
	root := testRoot(b)
	dp, err := Load(Config{BPFRoot: root}, nil)
	require.NoError(b, err)
	defer dp.Close()
	require.NoError(b, dp.Maps().PutEndpoint(EndpointEntry{IfIndex: loIfindex, ID: 7, IPv4: podIP}))
	base, err := ebpf.NewProgram(passThroughSpec())
	require.NoError(b, err)
	defer base.Close()

	cases := []struct {
		name string
		prog *ebpf.Program
		pkt  []byte
	}{
		{"tcp-established-egress", dp.objs.SlFromEp, tcpPkt(b, podIP, peerIP, 40000, 80, flags{ack: true})},
		{"tcp-established-ingress-reply", dp.objs.SlToEp, tcpPkt(b, peerIP, podIP, 80, 40000, flags{ack: true})},
		{"udp-egress", dp.objs.SlFromEp, udpPkt(b, podIP, peerIP, 5000, 53)},
		{"arp-passthrough", dp.objs.SlFromEp, arpPkt(b)},
	}
	measure := func(p *ebpf.Program, pkt []byte, n int) time.Duration {
		_, d, err := p.Benchmark(pkt, n, nil)
		require.NoError(b, err)
		return d
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			measure(c.prog, c.pkt, 1) // create the CT entry: measure the steady state
			baseline := measure(base, c.pkt, b.N)
			d := measure(c.prog, c.pkt, b.N)
			b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
			b.ReportMetric(float64(baseline.Nanoseconds()), "baseline-ns/pkt")
			if baseline > 0 {
				b.ReportMetric(float64(d)/float64(baseline), "x-baseline")
			}
		})
	}
}

// TestVerifierInstructions keeps every program far from the verifier's
// limit (see verifierCounts) and logs its figures.
func TestVerifierInstructions(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range verifierCounts(t) {
		t.Logf("%-22s %6d instructions, %7d verified (%.1f%% of the 1M limit)", c.program, c.insns, c.processed, c.share())
		// sl_from_ep walks ~365k on 6.18 (service translation, policy,
		// revocation, host routing, the proxy's hand-over, for IPv4 and
		// IPv6, each family's path verified on its own): the rest of
		// the budget is for older, less precise verifiers.
		require.Less(t, c.processed, 500_000, "%s is getting expensive to verify", c.program)
	}
}

// verifierLimit is the kernel's BPF_COMPLEXITY_LIMIT_INSNS: a program
// whose verification walks more instructions is refused.
const verifierLimit = 1_000_000

// verifierCount is one program's size and what its verification cost.
type verifierCount struct {
	object, program string
	// insns is the program's length, processed the instructions the
	// verifier walked: the figure that must stay under verifierLimit.
	insns, processed int
}

// share is processed as a percentage of the limit.
func (c verifierCount) share() float64 { return 100 * float64(c.processed) / verifierLimit }

// verifierCounts loads every program of the endpoint, host and sock
// objects, configured as the agent configures them by default, and
// returns how many instructions the verifier walked for each (a
// deterministic complexity figure, independent of map contents). The
// figure is the verifier's own statistics line ("processed N insns"),
// which every kernel prints, so 5.10 (whose program info lacks
// verified_insns, 5.16+) reports it too; where the program info has it,
// the two must agree.
func verifierCounts(tb testing.TB) []verifierCount {
	cfg := (&Config{}).withDefaults()
	root := testRoot(tb)
	processed := regexp.MustCompile(`processed (\d+) insns`)
	var out []verifierCount
	for _, obj := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{{"endpoint", bpfobj.LoadEndpoint}, {"host", bpfobj.LoadHost}, {"sock", bpfobj.LoadSock}} {
		spec, err := obj.load()
		require.NoError(tb, err)
		require.NoError(tb, configureSpec(spec, cfg))
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			Maps: ebpf.MapOptions{PinPath: root}, Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
		require.NoError(tb, err, "load the %s object", obj.name)
		for _, name := range slices.Sorted(maps.Keys(coll.Programs)) {
			p := coll.Programs[name]
			m := processed.FindStringSubmatch(p.VerifierLog)
			require.NotNil(tb, m, "%s: no statistics in the verifier log: %q", name, p.VerifierLog)
			n, err := strconv.Atoi(m[1])
			require.NoError(tb, err)
			info, err := p.Info()
			require.NoError(tb, err)
			insns, err := info.Instructions()
			require.NoError(tb, err)
			if v, ok := info.VerifiedInstructions(); ok {
				require.EqualValues(tb, v, n, "%s: the program info and the verifier log disagree", name)
			}
			out = append(out, verifierCount{object: obj.name, program: name, insns: len(insns), processed: n})
		}
		coll.Close()
	}
	return out
}

// verifierLogged makes logVerifierCounts print once per test process:
// `make bench` runs every benchmark that calls it.
var verifierLogged sync.Once

// logVerifierCounts prints every program's verifier figures (see
// verifierCounts) for the reports next to the timings, one line each:
//
//	verifier: sl_from_ep (endpoint): 13628 instructions, 344249 processed, 34.4% of the 1000000 limit
//
// tools/internal/benchkit.ParseVerifier reads these lines.
func logVerifierCounts(b *testing.B) {
	verifierLogged.Do(func() {
		for _, c := range verifierCounts(b) {
			fmt.Printf("verifier: %s (%s): %d instructions, %d processed, %.1f%% of the %d limit\n",
				c.program, c.object, c.insns, c.processed, c.share(), verifierLimit)
		}
	})
}

func passThroughSpec() *ebpf.ProgramSpec {
	spec := cniSpec()
	spec.Name = "baseline"
	return spec
}
