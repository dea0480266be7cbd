package benchkit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRotate(t *testing.T) {
	v := []string{"a", "b", "c"}
	assert.Equal(t, []string{"a", "b", "c"}, rotate(v, 0))
	assert.Equal(t, []string{"b", "c", "a"}, rotate(v, 1))
	assert.Equal(t, []string{"c", "a", "b"}, rotate(v, 2))
	assert.Equal(t, []string{"a", "b", "c"}, rotate(v, 3))
	assert.Equal(t, []string{"a", "b", "c"}, v, "the input is not reordered")
}

// fakeTrial records the calls Interleave makes; failEnable, failMeasure
// and failDisable name the variants whose step fails.
type fakeTrial struct {
	calls                                []string
	failEnable, failMeasure, failDisable string
}

func (f *fakeTrial) trial() Trial[string] {
	step := func(name, fail string) func(context.Context, string) error {
		return func(_ context.Context, v string) error {
			f.calls = append(f.calls, name+" "+v)
			if v == fail {
				return errors.New(name + " failed")
			}
			return nil
		}
	}
	return Trial[string]{
		Enable: step("enable", f.failEnable),
		Measure: func(ctx context.Context, v string) (string, error) {
			err := step("measure", f.failMeasure)(ctx, v)
			return "result of " + v, err
		},
		Disable: step("disable", f.failDisable),
	}
}

func TestInterleave(t *testing.T) {
	f := &fakeTrial{failEnable: "b", failMeasure: "c"}
	var runs []Run[string]
	err := Interleave(context.Background(), 2, []string{"a", "b", "c"}, f.trial(), func(r Run[string]) { runs = append(runs, r) })
	require.NoError(t, err, "failed runs do not stop the rounds")
	assert.Equal(t, []string{
		"enable a", "measure a", "disable a",
		"enable b", "disable b", // not measured, but removed
		"enable c", "measure c", "disable c",
		"enable b", "disable b", // round 2 starts one later
		"enable c", "measure c", "disable c",
		"enable a", "measure a", "disable a",
	}, f.calls)
	require.Len(t, runs, 6)
	assert.Equal(t, 1, runs[0].Round)
	assert.Equal(t, "a", runs[0].Variant)
	assert.Equal(t, "result of a", runs[0].Result)
	assert.NoError(t, runs[0].Err)
	assert.EqualError(t, runs[1].Err, "enable failed")
	assert.Equal(t, "result of c", runs[2].Result, "a failed measurement's partial result is kept")
	assert.EqualError(t, runs[2].Err, "measure failed")
	assert.Equal(t, 2, runs[3].Round)
	assert.Equal(t, "b", runs[3].Variant)
}

// TestInterleaveStopsWhenRemovalFails: a variant left in place would
// taint every later run, so nothing runs after it and its run is not
// reported.
func TestInterleaveStopsWhenRemovalFails(t *testing.T) {
	f := &fakeTrial{failDisable: "b"}
	var runs []Run[string]
	err := Interleave(context.Background(), 3, []string{"a", "b", "c"}, f.trial(), func(r Run[string]) { runs = append(runs, r) })
	require.EqualError(t, err, "remove b: disable failed")
	assert.Equal(t, []string{"enable a", "measure a", "disable a", "enable b", "measure b", "disable b"}, f.calls)
	require.Len(t, runs, 1)
}

func TestInterleaveStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeTrial{}
	var runs []Run[string]
	err := Interleave(ctx, 2, []string{"a", "b"}, f.trial(), func(r Run[string]) {
		runs = append(runs, r)
		cancel()
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Len(t, runs, 1, "the run under way finishes and is removed, no other starts")
}

// A run's record: round, variant, setup time and, for a failed run, why.
func TestRunSample(t *testing.T) {
	ok := Run[string]{Round: 2, Variant: "direct", Setup: 1500 * time.Millisecond, Result: "9000 conn/s"}
	assert.Equal(t, Sample{Round: 2, Variant: "direct", SetupSeconds: 1.5}, ok.Sample())
	failed := Run[string]{Round: 1, Variant: "nftables", Err: errors.New("nft -f: syntax error")}
	assert.Equal(t, Sample{Round: 1, Variant: "nftables", Err: "nft -f: syntax error"}, failed.Sample())
}
