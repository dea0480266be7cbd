package benchkit

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// FamilySample is one address family's measurement in a variant's run.
type FamilySample struct {
	// Conn is the connection rate; RR the request rate, for the drivers
	// that measure it.
	Conn LoadResult `json:"conn"`
	RR   LoadResult `json:"rr,omitzero"`
	// Err says why this family failed in a run whose variant got in
	// place.
	Err string `json:"error,omitempty"`
}

// FamiliesSample is a variant's run, measured in each family.
type FamiliesSample struct {
	Sample
	Families map[string]*FamilySample `json:"families"`
}

// OK is s's measurement of family fam, if the run got in place and the
// family succeeded.
func (s FamiliesSample) OK(fam string) (*FamilySample, bool) {
	fs := s.Families[fam]
	return fs, s.Err == "" && fs != nil && fs.Err == ""
}

// Describe is the run's log line: each family's rates, or its failure.
func (s FamiliesSample) Describe(fams []string) string {
	var parts []string
	for _, f := range fams {
		fs, ok := s.OK(f)
		switch {
		case ok && fs.RR.Ops > 0:
			parts = append(parts, fmt.Sprintf("%s %9.0f conn/s %9.0f req/s", f, fs.Conn.Rate, fs.RR.Rate))
		case ok:
			parts = append(parts, fmt.Sprintf("%s %9.0f conn/s, %d errors", f, fs.Conn.Rate, fs.Conn.Errors))
		case fs != nil:
			parts = append(parts, fmt.Sprintf("%s FAILED: %s", f, FirstLine(fs.Err)))
		}
	}
	return strings.Join(parts, " | ")
}

// FamilyPerRound is figure of each of variant v's successful
// measurements of family fam, by round.
func FamilyPerRound(samples []FamiliesSample, v, fam string, figure func(*FamilySample) float64) PerRound {
	out := PerRound{}
	for _, s := range samples {
		if fs, ok := s.OK(fam); ok && s.Variant == v {
			out[s.Round] = figure(fs)
		}
	}
	return out
}

// RunCounts are a variant's runs in one family.
type RunCounts struct {
	// Rounds counts its runs, Failed those that did not measure the
	// family, Errors the operations (connections, requests) that failed
	// inside the others.
	Rounds, Failed int
	Errors         uint64
	// Setup is how long putting the variant in place took, by round, in
	// the runs that measured the family.
	Setup PerRound
}

// CountRuns counts variant v's runs in family fam.
func CountRuns(samples []FamiliesSample, v, fam string) RunCounts {
	c := RunCounts{Setup: PerRound{}}
	for _, s := range samples {
		if s.Variant != v {
			continue
		}
		c.Rounds++
		fs, ok := s.OK(fam)
		if !ok {
			c.Failed++
			continue
		}
		c.Errors += fs.Conn.Errors + fs.RR.Errors
		c.Setup[s.Round] = s.SetupSeconds
	}
	return c
}

// PrintFamilyFailures writes a line for every run that failed and every
// family that failed in a run, with the first line of why.
func PrintFamilyFailures(w io.Writer, samples []FamiliesSample, fams []string) {
	for _, s := range samples {
		if s.Err != "" {
			fmt.Fprintf(w, "   round %d %s failed: %s\n", s.Round, s.Variant, FirstLine(s.Err))
			continue
		}
		for _, f := range fams {
			if fs := s.Families[f]; fs != nil && fs.Err != "" {
				fmt.Fprintf(w, "   round %d %s %s failed: %s\n", s.Round, s.Variant, f, FirstLine(fs.Err))
			}
		}
	}
}

// FamilyRunner measures the runs of variants in every family of
// Families, the same variant's runs alternating the order of the
// families, so that neither always runs first.
type FamilyRunner struct {
	Families []Family
	runs     map[string]int
}

// Probe timeouts of FamilyRunner.Measure: the first waits for the variant
// to be ready; once a family got through, it is, and a probe that fails
// then would fail after any wait.
const (
	ReadyTimeout = 15 * time.Second
	ProbeTimeout = 5 * time.Second
)

// Measure measures variant v, in place, in every family with measure,
// which is given the timeout of its first probe (ReadyTimeout until a
// family succeeded, ProbeTimeout after) and fills the family's sample. A
// family whose measure fails keeps its error and the others are still
// measured; only ctx ending stops it.
func (r *FamilyRunner) Measure(ctx context.Context, v string, measure func(ctx context.Context, f Family, timeout time.Duration, fs *FamilySample) error) (map[string]*FamilySample, error) {
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	order := slices.Clone(r.Families)
	if r.runs[v]%2 == 1 {
		slices.Reverse(order)
	}
	r.runs[v]++
	out := map[string]*FamilySample{}
	timeout := ReadyTimeout
	for _, f := range order {
		fs := &FamilySample{}
		out[f.Name] = fs
		if err := measure(ctx, f, timeout, fs); err != nil {
			fs.Err = err.Error()
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			continue
		}
		timeout = ProbeTimeout
	}
	return out, nil
}
