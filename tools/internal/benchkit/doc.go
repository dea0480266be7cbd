// Package benchkit is what the benchmark drivers under tools/ (benchlb,
// benchpolicy, benchflows) share: their command-line plumbing (the flag
// blocks they have in common, usage, subcommands, a run that SIGINT
// ends, the report printed and written as JSON), the header every report
// opens with (when, on what kernel and CPUs, under what load, with which
// options), the workloads they run inside simulated pods (a TCP echo
// server, a load generator, a probe, and their HTTP/1.1 counterparts for
// what parses requests on the way), the interleaved rounds they compare
// variants in and the record of each run, the statistics of their reports
// (median, interquartile range, per-round ratios to a baseline), running
// `go test -bench` and parsing its output (results, and the verifier
// figures pkg/datapath's benchmarks print), the address families they
// measure and the names iptables and nftables give them, and a few steps
// on an internal/testing/harness node that they take the same way.
//
// The drivers are main packages, which cannot import each other; this
// package is internal to tools/ so it can change with them.
package benchkit
