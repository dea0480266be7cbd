package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// TestSummarizeFamilies checks the rate report's rows: each family's
// ratio to the same family's direct run, round by round; a family that
// failed in a run counted as a failed round of that family alone; and
// each variant's IPv6 rate over its IPv4 rate of the same run.
func TestSummarizeFamilies(t *testing.T) {
	run := func(round int, v string, conn4, conn6 float64, err6 string) sample {
		s := sample{Sample: benchkit.Sample{Round: round, Variant: v}, Families: map[string]*benchkit.FamilySample{}}
		s.Families["ipv4"] = &benchkit.FamilySample{Conn: benchkit.LoadResult{Rate: conn4}, RR: benchkit.LoadResult{Rate: 10 * conn4, Errors: 1}}
		s.Families["ipv6"] = &benchkit.FamilySample{Conn: benchkit.LoadResult{Rate: conn6}, RR: benchkit.LoadResult{Rate: 10 * conn6}, Err: err6}
		return s
	}
	failed := sample{Sample: benchkit.Sample{Round: 3, Variant: "sluice-socket", Err: "agent did not start"}}
	sr := &scaleResult{Samples: []sample{
		run(1, "direct", 1000, 800, ""), run(1, "sluice-packet", 900, 0, "no echo; the datapath counted drops meanwhile: SERVICE_NEEDS_SOCKET_LB (egress) ×5"), run(1, "sluice-socket", 1100, 880, ""),
		run(2, "sluice-socket", 1000, 400, ""), run(2, "direct", 1000, 500, ""), run(2, "sluice-packet", 500, 0, "no echo"),
		failed, run(3, "direct", 2000, 2000, ""), run(3, "sluice-packet", 1000, 0, "no echo"),
	}}
	sr.summarize([]string{"sluice-packet", "sluice-socket", "direct"}, []string{"ipv4", "ipv6"})

	by := map[string]variantSummary{}
	for _, v := range sr.Summary {
		by[v.Family+"/"+v.Variant] = v
	}
	require.Len(t, by, 6)
	near := func(want, got benchkit.Stat, msg string) {
		t.Helper()
		assert.InDeltaSlice(t, []float64{want.Median, want.Q1, want.Q3}, []float64{got.Median, got.Q1, got.Q3}, 1e-9, msg)
	}
	p4, p6 := by["ipv4/sluice-packet"], by["ipv6/sluice-packet"]
	near(benchkit.Stat{Median: 0.5, Q1: 0.5, Q3: 0.7}, p4.ConnRatio, "IPv4 sluice-packet: 0.9, 0.5, 0.5 of direct")
	assert.Zero(t, p4.Failed)
	assert.EqualValues(t, 3, p4.Errors, "the IPv4 runs' errors")
	assert.Equal(t, 3, p6.Failed, "every IPv6 run of sluice-packet failed")
	assert.Equal(t, 3, p6.Rounds)
	assert.Equal(t, benchkit.Stat{}, p6.Conn, "no IPv6 figure: no run succeeded")

	s4, s6 := by["ipv4/sluice-socket"], by["ipv6/sluice-socket"]
	assert.Equal(t, 1, s4.Failed, "round 3 did not get in place")
	near(benchkit.Stat{Median: 1.05, Q1: 1.025, Q3: 1.075}, s4.ConnRatio, "1.1 and 1.0 of IPv4 direct")
	near(benchkit.Stat{Median: 0.95, Q1: 0.875, Q3: 1.025}, s6.ConnRatio, "880/800 and 400/500: of IPv6 direct, not IPv4's")
	near(benchkit.Stat{Median: 0.95, Q1: 0.875, Q3: 1.025}, s6.RRRatio, "the same for req/s")
	assert.InDelta(t, 1.0, by["ipv6/direct"].ConnRatio.Median, 1e-9)

	ratios := map[string]familyRatio{}
	for _, r := range sr.IPv6OverIPv4 {
		ratios[r.Variant] = r
	}
	require.Len(t, ratios, 3)
	assert.Zero(t, ratios["sluice-packet"].Rounds, "IPv6 never succeeded: no ratio")
	assert.Equal(t, 2, ratios["sluice-socket"].Rounds)
	near(benchkit.Stat{Median: 0.6, Q1: 0.5, Q3: 0.7}, ratios["sluice-socket"].Conn, "880/1100 and 400/1000")
	near(benchkit.Stat{Median: 0.8, Q1: 0.65, Q3: 0.9}, ratios["direct"].Conn, "0.8, 0.5, 1.0")
}

// TestSummarizeOneFamily: IPv4 alone has no IPv6 rows and no IPv6/IPv4
// ratios.
func TestSummarizeOneFamily(t *testing.T) {
	s := sample{Sample: benchkit.Sample{Round: 1, Variant: "direct"}, Families: map[string]*benchkit.FamilySample{"ipv4": {Conn: benchkit.LoadResult{Rate: 10}}}}
	sr := &scaleResult{Samples: []sample{s}}
	sr.summarize([]string{"direct"}, []string{"ipv4"})
	require.Len(t, sr.Summary, 1)
	assert.Equal(t, "ipv4", sr.Summary[0].Family)
	assert.Empty(t, sr.IPv6OverIPv4)
}

// The reason a Sluice run's family failed: the drops that grew during it,
// by reason and direction, and nothing else.
func TestDropDelta(t *testing.T) {
	before := []api.Counter{
		{Verdict: "forwarded", Direction: "egress", Packets: 100},
		{Verdict: "dropped", Reason: "SERVICE_NEEDS_SOCKET_LB", Direction: "egress", Packets: 3},
		{Verdict: "dropped", Reason: "POLICY_DENIED", Direction: "ingress", Packets: 7},
	}
	after := []api.Counter{
		{Verdict: "forwarded", Direction: "egress", Packets: 500},
		{Verdict: "dropped", Reason: "SERVICE_NEEDS_SOCKET_LB", Direction: "egress", Packets: 8},
		{Verdict: "dropped", Reason: "POLICY_DENIED", Direction: "ingress", Packets: 7},
		{Verdict: "dropped", Reason: "CT_MAP_INSERTION_FAILED", Direction: "egress", Packets: 2},
	}
	assert.Equal(t, "CT_MAP_INSERTION_FAILED (egress) ×2, SERVICE_NEEDS_SOCKET_LB (egress) ×5", dropDelta(before, after))
	assert.Empty(t, dropDelta(before, before), "no drop grew")
	assert.Empty(t, dropDelta(nil, nil), "no agent: nothing to say")
	assert.Equal(t, "POLICY_DENIED (ingress) ×7", dropDelta(nil, after[2:3]), "an agent that answered only afterwards")
}

// The part-2 rows say what the program did with each family's packets,
// from the benchmark's metrics, so a timed drop reads as a drop.
func TestBPFRows(t *testing.T) {
	g := benchkit.Bench{Name: "LB/services=10", N: 2000, Metrics: map[string]float64{
		"noop-ns/pkt": 150,
		"syn-ns/pkt":  1852, "syn-x-noop": 12.35, "syn-to-backend": 1, "syn-drop-reason": 0,
		"est-ns/pkt": 811, "est-x-noop": 5.4, "est-to-backend": 1, "est-drop-reason": 0,
		"syn6-ns/pkt": 791, "syn6-x-noop": 5.27, "syn6-to-backend": 0, "syn6-drop-reason": 1006, "syn6-x-ipv4": 0.43,
		"est6-ns/pkt": 411, "est6-x-noop": 2.74, "est6-to-backend": 0, "est6-drop-reason": 0, "est6-x-ipv4": 0.51,
	}}
	rows := bpfRows(g)
	require.Len(t, rows, 2)
	assert.Equal(t, bpfRow{Family: "ipv4", Syn: 1852, SynX: 12.35, SynDid: "to backend", Est: 811, EstX: 5.4, EstDid: "to backend"}, rows[0])
	assert.Equal(t, bpfRow{Family: "ipv6", Syn: 791, SynX: 5.27, SynDid: "DROPPED: SERVICE_NEEDS_SOCKET_LB",
		Est: 411, EstX: 2.74, EstDid: "NOT TRANSLATED", SynV4: 0.43, EstV4: 0.51}, rows[1])

	// A result of the benchmark before it reported verdicts: IPv4 only,
	// nothing claimed.
	old := benchkit.Bench{Name: "LB/services=10", Metrics: map[string]float64{"syn-ns/pkt": 1, "est-ns/pkt": 2}}
	rows = bpfRows(old)
	require.Len(t, rows, 1)
	assert.Equal(t, "-", rows[0].SynDid)

	var b strings.Builder
	printBPF(&b, []benchkit.Bench{g})
	assert.Contains(t, b.String(), "DROPPED: SERVICE_NEEDS_SOCKET_LB")
	assert.Contains(t, b.String(), "0.43/0.51")
}
