package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// TestL7Summarize checks the report's columns: each figure's median over
// the variant's successful rounds, its per-round ratio to direct (none for
// a round whose direct run failed), and the added p50 per round.
func TestL7Summarize(t *testing.T) {
	run := func(round int, v string, rate, p50 float64, err string) l7Sample {
		s := l7Sample{Sample: benchkit.Sample{Round: round, Variant: v, Err: err}}
		s.Req.Rate, s.Req.P50, s.Conn.Rate, s.Conn.Errors = rate, p50, rate/4, 1
		return s
	}
	rep := &l7Report{Samples: []l7Sample{
		run(1, "direct", 1000, 100, ""), run(1, "l7-proxy", 500, 300, ""),
		run(2, "l7-proxy", 800, 150, ""), run(2, "direct", 1000, 100, ""),
		run(3, "direct", 0, 0, "agent died"), run(3, "l7-proxy", 600, 900, ""),
	}}
	rep.summarize()
	require.Len(t, rep.Summary, 2)
	proxy, direct := rep.Summary[0], rep.Summary[1]
	assert.Equal(t, "l7-proxy", proxy.Variant)
	assert.Equal(t, benchkit.Stat{Median: 600, Q1: 550, Q3: 700}, proxy.Figures["req/s"], "all three rounds")
	near := func(want, got benchkit.Stat, msg string) {
		assert.InDeltaSlice(t, []float64{want.Median, want.Q1, want.Q3}, []float64{got.Median, got.Q1, got.Q3}, 1e-9, msg)
	}
	near(benchkit.Stat{Median: 0.65, Q1: 0.575, Q3: 0.725}, proxy.Ratios["req/s"], "rounds 1 and 2: round 3 has no direct run")
	near(benchkit.Stat{Median: 2.25, Q1: 1.875, Q3: 2.625}, proxy.Ratios["req p50 µs"], "3 and 1.5")
	assert.Equal(t, benchkit.Stat{Median: 125, Q1: 87.5, Q3: 162.5}, proxy.AddedP50, "300-100 and 150-100")
	assert.Equal(t, 3, proxy.Rounds)
	assert.Zero(t, proxy.Failed)
	assert.EqualValues(t, 3, proxy.Errors)
	assert.Equal(t, 1, direct.Failed)
	assert.Equal(t, benchkit.Stat{Median: 1, Q1: 1, Q3: 1}, direct.Ratios["conn/s"])
}
