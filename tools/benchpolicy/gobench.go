package main

import (
	"context"
	"strings"

	"github.com/sluice-net/sluice/tools/internal/benchkit"
)

// runGoBench runs BenchmarkPolicy (its code lives beside what it
// measures, in pkg/datapath) and keeps its results and the verifier's
// counts for the report; go test's output is passed through to stderr.
func runGoBench(ctx context.Context, o options, rep *report) error {
	if err := benchkit.CheckModuleRoot(o.Repo); err != nil {
		return err
	}
	families := strings.Join(o.families, ",")
	benchkit.Logf("=== go test -bench Policy ./pkg/datapath/ (BPF_PROG_TEST_RUN, %s entries, %s)", o.bpfScales, families)
	res, other, err := benchkit.GoTest{
		Dir: o.Repo, Pkg: "./pkg/datapath/", Bench: "^BenchmarkPolicy$", Benchtime: o.BPFBenchtime,
		Env: []string{"SLUICE_BENCH_POLICY_SCALES=" + o.bpfScales, "SLUICE_BENCH_POLICY_FAMILIES=" + families},
	}.Run(ctx)
	if err != nil {
		return err
	}
	rep.BPF = res
	rep.Verifier = benchkit.ParseVerifier(other)
	return nil
}
