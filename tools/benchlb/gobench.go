package main

import (
	"context"
	"strings"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// runGoBenches runs the BPF_PROG_TEST_RUN and cold programming benchmarks
// with go test (their code lives beside what they measure) and keeps their
// results for the report; their output is passed through to stderr.
func runGoBenches(ctx context.Context, o options, rep *report) error {
	if err := benchkit.CheckModuleRoot(o.Repo); err != nil {
		return err
	}
	families := strings.Join(o.families, ",")
	benchkit.Logf("=== go test -bench LB ./pkg/datapath/ (BPF_PROG_TEST_RUN, %s)", families)
	bpf, other, err := benchkit.GoTest{Dir: o.Repo, Pkg: "./pkg/datapath/", Bench: "^BenchmarkLB$", Benchtime: o.BPFBenchtime,
		Env: []string{"SLUICE_BENCH_LB_FAMILIES=" + families}}.Run(ctx)
	if err != nil {
		return err
	}
	rep.BPF = bpf
	rep.Verifier = benchkit.ParseVerifier(other)
	benchkit.Logf("=== go test -bench LBColdProgramming ./pkg/servicesync/ (reconciler cold pass)")
	if rep.LBCold, _, err = (benchkit.GoTest{Dir: o.Repo, Pkg: "./pkg/servicesync/", Bench: "^BenchmarkLBColdProgramming$", Benchtime: o.lbBenchtime}).Run(ctx); err != nil {
		return err
	}
	// Cold passes take a second each: a count, like the cold programming
	// benchmark's; a pass after one change, a fraction of a millisecond:
	// a duration (except for the full-compute baseline, which the
	// duration then runs a few times).
	for _, sub := range []struct{ pattern, benchtime string }{
		{"^BenchmarkLBReconcile$/^cold$", o.lbBenchtime},
		{"^BenchmarkLBReconcile$/^one-service$", o.reconcileBenchtime},
	} {
		benchkit.Logf("=== go test -bench %s -benchmem ./pkg/servicesync/ (reconciler passes)", sub.pattern)
		res, _, err := benchkit.GoTest{Dir: o.Repo, Pkg: "./pkg/servicesync/", Bench: sub.pattern, Benchtime: sub.benchtime, Args: []string{"-benchmem"}}.Run(ctx)
		if err != nil {
			return err
		}
		rep.LBReconcile = append(rep.LBReconcile, res...)
	}
	return nil
}
