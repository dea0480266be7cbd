package benchkit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Bench is one result line of `go test -bench`.
type Bench struct {
	// Name is the benchmark's name without "Benchmark" and the
	// -GOMAXPROCS suffix, e.g. "LB/services=10".
	Name string `json:"name"`
	// N is the number of iterations.
	N int `json:"n"`
	// Metrics are the values by unit ("ns/op", and what the benchmark
	// reports with b.ReportMetric).
	Metrics map[string]float64 `json:"metrics"`
}

// CheckModuleRoot fails unless dir holds go.mod: the benchmarks are run
// with go test from there.
func CheckModuleRoot(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return fmt.Errorf("-repo %s is not the module root (no go.mod); or use -go-bench=false", dir)
	}
	return nil
}

// GoTest is one `go test -bench` run. The benchmarks live beside the code
// they measure (pkg/...), and the drivers run them before anything else,
// on a quiet machine.
type GoTest struct {
	// Dir is the module root, Pkg the package ("./pkg/datapath/").
	Dir, Pkg string
	// Bench is the -bench pattern, Benchtime the -benchtime.
	Bench, Benchtime string
	// Args are more go test flags ("-benchmem"); Env more environment
	// variables ("K=V") the benchmark reads.
	Args, Env []string
}

// Run runs the benchmark with -count=1 and no tests, passes its output
// through to stderr and returns its result lines and, as they are, the
// other lines of its stdout (what the benchmark logged). It fails when
// go test does or reports no result: the benchmarks skip themselves
// without root or bpffs.
func (g GoTest) Run(ctx context.Context) ([]Bench, []string, error) {
	args := append([]string{"test", "-count=1", "-run", "^$", "-bench", g.Bench, "-benchtime", g.Benchtime}, g.Args...)
	cmd := exec.CommandContext(ctx, "go", append(args, g.Pkg)...)
	cmd.Dir = g.Dir
	if len(g.Env) > 0 {
		cmd.Env = append(os.Environ(), g.Env...)
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	res, other := ParseBench(io.TeeReader(stdout, os.Stderr))
	if err := cmd.Wait(); err != nil {
		return res, other, fmt.Errorf("go test -bench %s %s: %w", g.Bench, g.Pkg, err)
	}
	if len(res) == 0 {
		return nil, other, fmt.Errorf("go test -bench %s %s: no benchmark result (skipped? it needs root and bpffs)", g.Bench, g.Pkg)
	}
	return res, other, nil
}

// ParseBench reads `go test -bench` output: "BenchmarkX/sub-2  N  v unit
// v unit ..." lines are results, every other line is returned as it is.
// A value that is not a number is left out of Metrics.
func ParseBench(r io.Reader) ([]Bench, []string) {
	var res []Bench
	var other []string
	s := bufio.NewScanner(r)
	// Benchmarks log long lines (the verifier's statistics).
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
		g := Bench{Name: trimProcs(strings.TrimPrefix(f[0], "Benchmark")), N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				g.Metrics[f[i+1]] = v
			}
		}
		res = append(res, g)
	}
	return res, other
}

// trimProcs drops the "-GOMAXPROCS" suffix go test adds to benchmark
// names (none when GOMAXPROCS is 1).
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}
