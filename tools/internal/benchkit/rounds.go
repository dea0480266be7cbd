package benchkit

import (
	"context"
	"fmt"
	"time"
)

// Trial is how an interleaved benchmark puts one variant in place,
// measures it and removes it again; S is what a measurement yields.
type Trial[S any] struct {
	// Label, if set, starts each run's log line (e.g. "1000 svc").
	Label string
	// Describe, if set, says what a successful run measured, for its log
	// line (e.g. "  9000 conn/s").
	Describe func(S) string
	// Enable puts the variant in place.
	Enable func(ctx context.Context, variant string) error
	// Measure measures the variant once Enable has succeeded. What it
	// returns with an error is kept: a partial measurement.
	Measure func(ctx context.Context, variant string) (S, error)
	// Disable removes the variant completely, whatever Enable and Measure
	// did.
	Disable func(ctx context.Context, variant string) error
}

// Run is one variant's run in one round.
type Run[S any] struct {
	Round   int // from 1
	Variant string
	// Setup is how long Enable took.
	Setup  time.Duration
	Result S
	// Err is Enable's or Measure's error: this run failed, the others go
	// on.
	Err error
}

// Sample is what every run of an interleaved measurement records beside
// its result; the drivers' samples embed it.
type Sample struct {
	Round   int    `json:"round"`
	Variant string `json:"variant"`
	// SetupSeconds is how long putting the variant in place took.
	SetupSeconds float64 `json:"setupSeconds"`
	Err          string  `json:"error,omitempty"`
}

// Sample is the run's record.
func (r Run[S]) Sample() Sample {
	s := Sample{Round: r.Round, Variant: r.Variant, SetupSeconds: r.Setup.Seconds()}
	if r.Err != nil {
		s.Err = r.Err.Error()
	}
	return s
}

// Interleave runs every variant once per round, in an order rotated by
// one each round, so that no variant always runs first or right after the
// same other one, logs each run and hands it to done. Interleaving spreads the
// machine's drift over all variants instead of charging it to whichever
// ran during it.
//
// It stops when ctx is done, and when a variant cannot be removed: left in
// place, it would taint every later measurement.
func Interleave[S any](ctx context.Context, rounds int, variants []string, t Trial[S], done func(Run[S])) error {
	for r := range rounds {
		for _, v := range rotate(variants, r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			run := Run[S]{Round: r + 1, Variant: v}
			start := time.Now()
			run.Err = t.Enable(ctx, v)
			run.Setup = time.Since(start)
			if run.Err == nil {
				run.Result, run.Err = t.Measure(ctx, v)
			}
			if err := t.Disable(ctx, v); err != nil {
				return fmt.Errorf("remove %s: %w", v, err)
			}
			t.log(run, rounds)
			done(run)
		}
	}
	return nil
}

// log logs a run: what it measured, or how it failed.
func (t *Trial[S]) log(run Run[S], rounds int) {
	at := fmt.Sprintf("round %d/%d", run.Round, rounds)
	if t.Label != "" {
		at = t.Label + ", " + at
	}
	if run.Err != nil {
		Logf("[%s] %-23s FAILED: %v", at, run.Variant, run.Err)
		return
	}
	what := ""
	if t.Describe != nil {
		what = t.Describe(run.Result)
	}
	Logf("[%s] %-23s %s  (setup %.2fs)", at, run.Variant, what, run.Setup.Seconds())
}

// rotate returns l rotated left by r: round r's order of the variants.
func rotate(l []string, r int) []string {
	out := make([]string, len(l))
	for i := range l {
		out[i] = l[(i+r)%len(l)]
	}
	return out
}

// Poll calls check every interval until it succeeds or timeout has
// passed, and returns its last error: for what the kernel completes
// asynchronously, such as the release of a BPF link after its pin is
// removed (after an RCU grace period).
func Poll(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}
