package benchkit

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestQuartiles(t *testing.T) {
	for _, tc := range []struct {
		name        string
		x           []float64
		med, q1, q3 float64
	}{
		{"one value", []float64{7}, 7, 7, 7},
		{"two values interpolate", []float64{10, 20}, 15, 12.5, 17.5},
		{"odd count, unsorted", []float64{5, 1, 3, 2, 4}, 3, 2, 4},
		{"even count", []float64{4, 1, 3, 2}, 2.5, 1.75, 3.25},
		{"repeated values", []float64{2, 2, 2, 9}, 2, 2, 3.75},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.x...)
			med, q1, q3 := Quartiles(tc.x)
			assert.InDelta(t, tc.med, med, 1e-9, "median")
			assert.InDelta(t, tc.q1, q1, 1e-9, "Q1")
			assert.InDelta(t, tc.q3, q3, 1e-9, "Q3")
			assert.Equal(t, in, tc.x, "the input is not reordered")
		})
	}
}

func TestStatOf(t *testing.T) {
	assert.Equal(t, Stat{}, StatOf(nil), "no values: the zero Stat, not a panic")
	assert.Equal(t, Stat{Median: 3, Q1: 2, Q3: 4}, StatOf([]float64{1, 2, 3, 4, 5}))
}

// TestPerRoundRatios checks the report's "x direct"/"x none" columns: each
// round's figure over the baseline's of the same round, and no ratio for a
// round whose baseline run failed.
func TestPerRoundRatios(t *testing.T) {
	base := PerRound{1: 100, 2: 200, 4: 50}
	v := PerRound{1: 50, 2: 300, 3: 999, 4: 25}
	assert.Equal(t, []float64{50, 300, 999, 25}, v.Values(), "in round order")
	assert.Equal(t, []float64{0.5, 1.5, 0.5}, v.RatiosTo(base), "round 3 has no baseline")
	assert.Equal(t, []float64{1, 1, 1}, base.RatiosTo(base), "the baseline against itself")
	assert.Empty(t, v.RatiosTo(PerRound{}), "every baseline run failed")
	assert.Equal(t, Stat{Median: 0.5, Q1: 0.5, Q3: 1}, StatOf(v.RatiosTo(base)))
}
