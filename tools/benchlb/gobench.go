package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// goBench is one result line of `go test -bench`.
type goBench struct {
	Name    string             `json:"name"`
	N       int                `json:"n"`
	Metrics map[string]float64 `json:"metrics"`
}

// runGoBenches runs the BPF_PROG_TEST_RUN and cold programming benchmarks
// with go test (their code lives beside what they measure) and keeps their
// results for the report; their output is passed through to stderr.
func runGoBenches(ctx context.Context, o options, rep *report) error {
	if _, err := os.Stat(o.repo + "/go.mod"); err != nil {
		return fmt.Errorf("-repo %s is not the module root (no go.mod); or use -go-bench=false", o.repo)
	}
	logf("=== go test -bench LB ./pkg/datapath/ (BPF_PROG_TEST_RUN)")
	bpf, other, err := goTestBench(ctx, o.repo, "./pkg/datapath/", "^BenchmarkLB$", o.bpfBenchtime)
	if err != nil {
		return err
	}
	rep.BPF = bpf
	for _, l := range other {
		if strings.HasPrefix(l, "verifier: ") {
			rep.Verifier = append(rep.Verifier, l)
		}
	}
	logf("=== go test -bench LBColdProgramming ./pkg/lb/ (reconciler cold pass)")
	if rep.LBCold, _, err = goTestBench(ctx, o.repo, "./pkg/lb/", "^BenchmarkLBColdProgramming$", o.lbBenchtime); err != nil {
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
		logf("=== go test -bench %s -benchmem ./pkg/lb/ (reconciler passes)", sub.pattern)
		res, _, err := goTestBench(ctx, o.repo, "./pkg/lb/", sub.pattern, sub.benchtime, "-benchmem")
		if err != nil {
			return err
		}
		rep.LBReconcile = append(rep.LBReconcile, res...)
	}
	return nil
}

func goTestBench(ctx context.Context, dir, pkg, bench, benchtime string, extra ...string) ([]goBench, []string, error) {
	args := append([]string{"test", "-count=1", "-run", "^$", "-bench", bench, "-benchtime", benchtime}, extra...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	res, other := parseBench(io.TeeReader(stdout, os.Stderr))
	if err := cmd.Wait(); err != nil {
		return res, other, fmt.Errorf("go test -bench %s %s: %w", bench, pkg, err)
	}
	if len(res) == 0 {
		return nil, other, fmt.Errorf("go test -bench %s %s: no benchmark result (skipped? it needs root and bpffs)", bench, pkg)
	}
	return res, other, nil
}

// parseBench reads "BenchmarkX/sub-2  N  v unit  v unit ..." lines; other
// lines are returned as they are.
func parseBench(r io.Reader) ([]goBench, []string) {
	var res []goBench
	var other []string
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Text()
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			other = append(other, line)
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			other = append(other, line)
			continue
		}
		g := goBench{Name: trimProcs(strings.TrimPrefix(f[0], "Benchmark")), N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				g.Metrics[f[i+1]] = v
			}
		}
		res = append(res, g)
	}
	return res, other
}

// trimProcs drops the "-GOMAXPROCS" suffix go test adds to names.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}
