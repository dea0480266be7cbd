package benchkit

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A variant's runs measure every family, the order alternating run by
// run; a failed family keeps its error without stopping the others, and
// the ready timeout holds until a family got through.
func TestFamilyRunner(t *testing.T) {
	r := FamilyRunner{Families: []Family{IPv4, IPv6}}
	type call struct {
		fam     string
		timeout time.Duration
	}
	var calls []call
	measure := func(fail string) func(context.Context, Family, time.Duration, *FamilySample) error {
		return func(_ context.Context, f Family, timeout time.Duration, fs *FamilySample) error {
			calls = append(calls, call{f.Name, timeout})
			if f.Name == fail {
				return errors.New("no echo")
			}
			fs.Conn.Rate = 1
			return nil
		}
	}
	got, err := r.Measure(context.Background(), "a", measure("ipv6"))
	require.NoError(t, err)
	assert.Equal(t, []call{{"ipv4", ReadyTimeout}, {"ipv6", ProbeTimeout}}, calls)
	assert.Equal(t, "no echo", got["ipv6"].Err)
	assert.InDelta(t, 1.0, got["ipv4"].Conn.Rate, 0)

	calls = nil
	_, err = r.Measure(context.Background(), "a", measure("ipv6"))
	require.NoError(t, err)
	assert.Equal(t, []call{{"ipv6", ReadyTimeout}, {"ipv4", ReadyTimeout}}, calls, "the second run of a: IPv6 first; it failed, so IPv4 still waits")

	calls = nil
	_, err = r.Measure(context.Background(), "b", measure(""))
	require.NoError(t, err)
	assert.Equal(t, "ipv4", calls[0].fam, "each variant alternates on its own")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err = r.Measure(ctx, "c", func(ctx context.Context, _ Family, _ time.Duration, _ *FamilySample) error { return ctx.Err() })
	require.ErrorIs(t, err, context.Canceled)
	assert.Len(t, got, 1, "an ended run stops at once")
}

func TestFamiliesSample(t *testing.T) {
	s := FamiliesSample{Sample: Sample{Round: 2, Variant: "v"}, Families: map[string]*FamilySample{
		"ipv4": {Conn: LoadResult{Rate: 9000, Errors: 3}, RR: LoadResult{Ops: 10, Rate: 20000}},
		"ipv6": {Err: "no echo\nmore"},
	}}
	_, ok := s.OK("ipv4")
	assert.True(t, ok)
	_, ok = s.OK("ipv6")
	assert.False(t, ok)
	_, ok = s.OK("ipx")
	assert.False(t, ok, "not measured")
	assert.Equal(t, "ipv4      9000 conn/s     20000 req/s | ipv6 FAILED: no echo …", s.Describe(Families))
	s.Families["ipv4"].RR = LoadResult{}
	assert.Equal(t, "ipv4      9000 conn/s, 3 errors", s.Describe([]string{"ipv4"}), "no request rate measured")

	failed := FamiliesSample{Sample: Sample{Round: 1, Variant: "w", Err: "agent did not start"}}
	s.SetupSeconds = 1.5
	s.Families["ipv4"].RR.Errors = 4
	assert.Equal(t, RunCounts{Rounds: 1, Errors: 7, Setup: PerRound{2: 1.5}}, CountRuns([]FamiliesSample{s, failed}, "v", "ipv4"))
	assert.Equal(t, RunCounts{Rounds: 1, Failed: 1, Setup: PerRound{}}, CountRuns([]FamiliesSample{s, failed}, "v", "ipv6"))
	assert.Equal(t, RunCounts{Rounds: 1, Failed: 1, Setup: PerRound{}}, CountRuns([]FamiliesSample{s, failed}, "w", "ipv4"), "a run that did not get in place")
	assert.Equal(t, PerRound{2: 9000}, FamilyPerRound([]FamiliesSample{s, failed}, "v", "ipv4", func(fs *FamilySample) float64 { return fs.Conn.Rate }))
	var b strings.Builder
	PrintFamilyFailures(&b, []FamiliesSample{failed, s}, Families)
	assert.Equal(t, "   round 1 w failed: agent did not start\n   round 2 v ipv6 failed: no echo …\n", b.String())
}
