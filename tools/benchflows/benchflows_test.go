package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

func TestParseProcStat(t *testing.T) {
	// A command name with a space and a parenthesis; utime 250, stime 50.
	line := "4242 (sluice (agent) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 12 0 5000 1000000 2000 18446744073709551615"
	cpu, err := parseProcStat(line)
	require.NoError(t, err)
	assert.InDelta(t, 3.0, cpu, 1e-9, "(250+50) ticks at 100 Hz")
	_, err = parseProcStat("4242 (short) S 1 2")
	assert.Error(t, err)
}

func TestParseMachineCPU(t *testing.T) {
	m, err := parseMachineCPU(strings.NewReader("cpu  100 10 50 800 40 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n"))
	require.NoError(t, err)
	assert.InDelta(t, 1.7, m.busy, 1e-9, "user+nice+system+irq+softirq+steal")
	assert.InDelta(t, 10.1, m.total, 1e-9, "idle and iowait count in the total only")
}

func TestClassifyLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		kind lineKind
		n    uint64
		src  string
	}{
		{`{"time":"2026-01-01T00:00:00Z","verdict":"FORWARDED"}`, lineFlow, 0, ""},
		{`{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"1234"}}`, lineLost, 1234, "HUBBLE_RING_BUFFER"},
		{`{"lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "7"}}`, lineLost, 7, "PERF_EVENT_RING_BUFFER"},
		{"level=warn msg=reconnecting", lineOther, 0, ""},
	} {
		kind, n, src := classifyLine([]byte(tc.line + "\n"))
		assert.Equal(t, tc.kind, kind, tc.line)
		assert.Equal(t, tc.n, n, tc.line)
		assert.Equal(t, tc.src, src, tc.line)
	}
}

// The bisection works between the highest clean target and the lowest
// lossy one above it, whatever order the steps ran in.
func TestBounds(t *testing.T) {
	step := func(v string, target float64, offered, stored, lost uint64) stepResult {
		s := stepResult{Source: sourceTestRun, Variant: v, Target: target, Seconds: 1, Offered: offered,
			OfferedRate: float64(offered), Stored: stored, KernelLost: lost}
		if v == "follow" {
			s.Followed = stored
		}
		return s
	}
	r := &report{Steps: []stepResult{
		step("store", 50000, 50000, 40000, 10000),
		step("store", 10000, 10000, 10000, 0),
		step("store", 20000, 20000, 20000, 0),
		step("store", 100000, 100000, 50000, 50000),
		step("follow", 10000, 10000, 10000, 0),
	}}
	lo, hi := r.bounds(sourceTestRun, "store")
	assert.Equal(t, [2]float64{20000, 50000}, [2]float64{lo, hi})
	lo, hi = r.bounds(sourceTestRun, "follow")
	assert.Equal(t, [2]float64{0, 0}, [2]float64{lo, hi}, "no lossy step: nothing to bisect")

	follow := stepResult{Variant: "follow", Offered: 100, Stored: 100, Followed: 90, FollowerMissed: 10}
	assert.True(t, follow.lossy(), "the follower missed flows")
	assert.InDelta(t, 0.1, follow.lossShare(), 1e-9)
	assert.Equal(t, []string{"follow", "store"}, alternate([]string{"store", "follow"}, 1))
}

// With -baseline, each build's steps are its own: bisection, zero-loss
// rates and CPU figures per build, and the before/after ratios of the
// same run.
func TestBaselineComparison(t *testing.T) {
	step := func(build, v string, target float64, lost uint64, agentPer10k float64) stepResult {
		return stepResult{Source: sourceTestRun, Variant: v, Build: build, Target: target, Seconds: 1,
			Offered: uint64(target), OfferedRate: target, Stored: uint64(target) - lost, StoredRate: target - float64(lost),
			KernelLost: lost, AgentPer10k: agentPer10k}
	}
	r := &report{
		Header: benchkit.Header{Options: map[string]string{"variants": "store", "baseline": "/base"}},
		Steps: []stepResult{
			step("", "store", 50000, 0, 0.02), step(baseName, "store", 50000, 0, 0.09),
			step("", "store", 100000, 0, 0.02), step(baseName, "store", 100000, 5000, 0.07),
		},
		Memory:     []flowMemResult{{Flows: 4096, HeapBytes: 4096 * 280}},
		BaseMemory: []flowMemResult{{Flows: 4096, HeapBytes: 4096 * 2700}},
	}
	assert.Equal(t, []string{"store", "base store"}, variantsOf(r))
	lo, hi := r.bounds(sourceTestRun, "base store")
	assert.Equal(t, [2]float64{50000, 100000}, [2]float64{lo, hi})
	lo, hi = r.bounds(sourceTestRun, "store")
	assert.Equal(t, [2]float64{0, 0}, [2]float64{lo, hi})

	var out strings.Builder
	printComparison(&out, r)
	assert.Regexp(t, `zero-loss events/s\s+test-run\s+store\s+50000\s+100000\s+×2.00 higher`, out.String())
	assert.Regexp(t, `agent % of a core per 10k ev/s\s+test-run\s+store\s+9.0\s+2.0\s+×4.5 lower`, out.String())
	assert.Regexp(t, `heap bytes per stored flow\s+4096 flows\s+2700\s+280\s+×9.6 lower`, out.String())
}
