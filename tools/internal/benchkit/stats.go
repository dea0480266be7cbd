package benchkit

import (
	"maps"
	"slices"
)

// Stat is a median with its interquartile range.
type Stat struct {
	Median float64 `json:"median"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
}

// StatOf is the median and quartiles of x; the zero Stat when x is empty.
func StatOf(x []float64) Stat {
	if len(x) == 0 {
		return Stat{}
	}
	m, q1, q3 := Quartiles(x)
	return Stat{Median: m, Q1: q1, Q3: q3}
}

// Quartiles returns the median, first and third quartile of x (linear
// interpolation between closest ranks). x must not be empty; it is not
// modified.
func Quartiles(x []float64) (median, q1, q3 float64) {
	s := slices.Clone(x)
	slices.Sort(s)
	q := func(p float64) float64 {
		pos := p * float64(len(s)-1)
		i := int(pos)
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (pos-float64(i))*(s[i+1]-s[i])
	}
	return q(0.5), q(0.25), q(0.75)
}

// PerRound is one figure of one variant by round, for the rounds whose run
// succeeded.
//
// The reports compare variants by per-round ratios rather than by the
// ratio of their medians: the runs of one round share the machine's state
// of the moment (frequency, other load), so a ratio within a round cancels
// much of the drift between rounds that a ratio of medians keeps.
type PerRound map[int]float64

// Values are the figures in round order.
func (p PerRound) Values() []float64 {
	out := make([]float64, 0, len(p))
	for _, r := range slices.Sorted(maps.Keys(p)) {
		out = append(out, p[r])
	}
	return out
}

// RatiosTo divides each round's figure by base's figure of the same round,
// in round order. Rounds base lacks (its run failed) have no ratio.
func (p PerRound) RatiosTo(base PerRound) []float64 {
	var out []float64
	for _, r := range slices.Sorted(maps.Keys(p)) {
		if b, ok := base[r]; ok {
			out = append(out, p[r]/b)
		}
	}
	return out
}
