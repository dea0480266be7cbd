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
	benchkit.Logf("=== go test -bench Policy ./pkg/datapath/ (BPF_PROG_TEST_RUN, %s entries)", o.bpfScales)
	res, other, err := benchkit.GoTest{
		Dir: o.Repo, Pkg: "./pkg/datapath/", Bench: "^BenchmarkPolicy$", Benchtime: o.BPFBenchtime,
		Env: []string{"SLUICE_BENCH_POLICY_SCALES=" + o.bpfScales},
	}.Run(ctx)
	if err != nil {
		return err
	}
	rep.BPF = res
	for _, l := range other {
		for _, p := range []string{"sl_from_ep", "sl_to_ep"} {
			if strings.HasPrefix(l, "verifier: "+p+":") {
				rep.Verifier = append(rep.Verifier, strings.TrimPrefix(l, "verifier: "))
			}
		}
	}
	return nil
}
