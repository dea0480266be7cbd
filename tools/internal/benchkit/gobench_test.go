package benchkit

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goTestOutput is `go test -bench` output as the drivers get it: logged
// lines, the header, results with custom metrics and -benchmem, the
// benchmark's own b.Log lines and the trailer.
const goTestOutput = `verifier: sl_from_ep: 5805 instructions, 249247 verified instructions
goos: linux
goarch: amd64
pkg: github.com/sluice-net/sluice/pkg/datapath
cpu: AMD EPYC
BenchmarkLB/services=10-2         	     200	     33466 ns/op	       661.0 est-ns/pkt	         7.344 est-x-noop	        90.00 noop-ns/pkt	      1742 syn-ns/pkt	        19.36 syn-x-noop
--- BENCH: BenchmarkLB/services=10-2
    lb_bench_test.go:120: 10 services
BenchmarkLB/services=10/events-unread-2         	     200	     64278 ns/op	       671.0 est-ns/pkt
BenchmarkLBReconcile/cold/no-maps-2      	       1	 585556548 ns/op	272769912 B/op	  352165 allocs/op
BenchmarkLBReconcile/one-service/maps    	    1000	   1234 ns/op
BenchmarkOdd-2 	 10	 5 ns/op	 7
BenchmarkNotANumber-2 	 many	 5 ns/op
PASS
ok  	github.com/sluice-net/sluice/pkg/datapath	11.950s
`

func TestParseBench(t *testing.T) {
	res, other := ParseBench(strings.NewReader(goTestOutput))
	require.Len(t, res, 4)
	assert.Equal(t, Bench{Name: "LB/services=10", N: 200, Metrics: map[string]float64{
		"ns/op": 33466, "est-ns/pkt": 661, "est-x-noop": 7.344, "noop-ns/pkt": 90, "syn-ns/pkt": 1742, "syn-x-noop": 19.36,
	}}, res[0])
	assert.Equal(t, "LB/services=10/events-unread", res[1].Name, "sub-benchmark names keep their slashes")
	assert.Equal(t, Bench{Name: "LBReconcile/cold/no-maps", N: 1, Metrics: map[string]float64{
		"ns/op": 585556548, "B/op": 272769912, "allocs/op": 352165,
	}}, res[2])
	assert.Equal(t, "LBReconcile/one-service/maps", res[3].Name, "no -GOMAXPROCS suffix with GOMAXPROCS=1")
	assert.Equal(t, "verifier: sl_from_ep: 5805 instructions, 249247 verified instructions", other[0], "logged lines come back as they are")
	assert.Contains(t, other, "--- BENCH: BenchmarkLB/services=10-2")
	assert.Contains(t, other, "BenchmarkOdd-2 \t 10\t 5 ns/op\t 7", "a value without a unit: not a result")
	assert.Contains(t, other, "BenchmarkNotANumber-2 \t many\t 5 ns/op", "no iteration count: not a result")
	assert.Equal(t, "ok  \tgithub.com/sluice-net/sluice/pkg/datapath\t11.950s", other[len(other)-1])
}

// TestParseBenchLongLine: BenchmarkPolicy reports some 40 metrics on one
// line, longer than bufio.Scanner's default limit.
func TestParseBenchLongLine(t *testing.T) {
	var b strings.Builder
	b.WriteString("BenchmarkPolicy/entries=10000-2\t200\t76947 ns/op")
	for i := range 4000 {
		b.WriteString("\t1.5 m" + strings.Repeat("x", 10) + string(rune('a'+i%26)) + "-" + strings.Repeat("y", i%7))
	}
	b.WriteString("\nPASS\n")
	require.Greater(t, b.Len(), 64*1024)
	res, other := ParseBench(strings.NewReader(b.String()))
	require.Len(t, res, 1)
	assert.Equal(t, "Policy/entries=10000", res[0].Name)
	assert.Equal(t, 76947.0, res[0].Metrics["ns/op"])
	assert.Equal(t, []string{"PASS"}, other, "the line after it is read too")
}

func TestTrimProcs(t *testing.T) {
	for in, want := range map[string]string{
		"LB/services=10-2":          "LB/services=10",
		"LB/services=10-16":         "LB/services=10",
		"LBReconcile/one-service":   "LBReconcile/one-service",
		"LBReconcile/one-service-4": "LBReconcile/one-service",
		"Policy/entries=10":         "Policy/entries=10",
		"-2":                        "-2",
	} {
		assert.Equal(t, want, trimProcs(in), "%q", in)
	}
}
