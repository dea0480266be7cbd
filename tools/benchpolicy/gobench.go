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

// runGoBench runs BenchmarkPolicy (its code lives beside what it
// measures, in pkg/datapath) and keeps its results and the verifier's
// counts for the report; go test's output is passed through to stderr.
func runGoBench(ctx context.Context, o options, rep *report) error {
	if _, err := os.Stat(o.repo + "/go.mod"); err != nil {
		return fmt.Errorf("-repo %s is not the module root (no go.mod); or use -go-bench=false", o.repo)
	}
	logf("=== go test -bench Policy ./pkg/datapath/ (BPF_PROG_TEST_RUN, %s entries)", o.bpfScales)
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", "^BenchmarkPolicy$", "-benchtime", o.bpfBenchtime, "./pkg/datapath/")
	cmd.Dir = o.repo
	cmd.Env = append(os.Environ(), "SLUICE_BENCH_POLICY_SCALES="+o.bpfScales)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	res, other := parseBench(io.TeeReader(stdout, os.Stderr))
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("go test -bench Policy ./pkg/datapath/: %w", err)
	}
	if len(res) == 0 {
		return fmt.Errorf("go test -bench Policy ./pkg/datapath/: no benchmark result (skipped? it needs root and bpffs)")
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

// parseBench reads "BenchmarkX/sub-2  N  v unit  v unit ..." lines; other
// lines are returned as they are.
func parseBench(r io.Reader) ([]goBench, []string) {
	var res []goBench
	var other []string
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
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
