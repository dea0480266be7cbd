package datapath

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
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
// across machines and runs (timing here is noisy, ±20-30%).
//
//	make bench
func BenchmarkPrograms(b *testing.B) {
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

// TestVerifierInstructions reports how many instructions the verifier
// walked for each program (a deterministic complexity figure, and the one
// that must stay under the kernel's one-million limit: older verifiers
// prune less) and keeps them far from that limit. The figure is the
// verifier's own statistics line ("processed N insns"), which every kernel
// prints, so 5.10 (whose program info lacks verified_insns, 5.16+) reports
// it too; where the program info has it, the two must agree.
func TestVerifierInstructions(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := (&Config{}).withDefaults()
	root := testRoot(t)
	processed := regexp.MustCompile(`processed (\d+) insns`)
	for _, obj := range []struct {
		name string
		load func() (*ebpf.CollectionSpec, error)
	}{{"endpoint", bpfobj.LoadEndpoint}, {"host", bpfobj.LoadHost}, {"sock", bpfobj.LoadSock}} {
		spec, err := obj.load()
		require.NoError(t, err)
		require.NoError(t, configureSpec(spec, cfg))
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			Maps: ebpf.MapOptions{PinPath: root}, Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
		require.NoError(t, err, "load the %s object", obj.name)
		for _, name := range slices.Sorted(maps.Keys(coll.Programs)) {
			p := coll.Programs[name]
			m := processed.FindStringSubmatch(p.VerifierLog)
			require.NotNil(t, m, "%s: no statistics in the verifier log: %q", name, p.VerifierLog)
			n, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			info, err := p.Info()
			require.NoError(t, err)
			insns, err := info.Instructions()
			require.NoError(t, err)
			if v, ok := info.VerifiedInstructions(); ok {
				require.EqualValues(t, v, n, "%s: the program info and the verifier log disagree", name)
			}
			t.Logf("%-22s %6d instructions, %7d verified (%.1f%% of the 1M limit)", name, len(insns), n, float64(n)/1e4)
			// sl_from_ep walks ~365k on 6.18 (service translation, policy,
			// revocation, host routing, the proxy's hand-over, for IPv4 and
			// IPv6, each family's path verified on its own): the rest of
			// the budget is for older, less precise verifiers.
			require.Less(t, n, 500_000, "%s is getting expensive to verify", name)
		}
		coll.Close()
	}
}

func passThroughSpec() *ebpf.ProgramSpec {
	spec := cniSpec()
	spec.Name = "baseline"
	return spec
}
