// Package benchkit is what the benchmark drivers under tools/ (benchlb,
// benchpolicy) share: their command-line plumbing, the workloads they run
// inside simulated pods (a TCP echo server, a load generator, a probe),
// the interleaved rounds they compare variants in, the statistics of their
// reports (median, interquartile range, per-round ratios to a baseline),
// running `go test -bench` and parsing its output, and a few steps on a
// internal/testing/harness node that both take the same way.
//
// The drivers are main packages, which cannot import each other; this
// package is internal to tools/ so it can change with them.
package benchkit
