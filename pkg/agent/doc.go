// Package agent runs one node's Sluice agent: it takes the bpf root lock,
// probes the kernel, loads (or adopts) the datapath, starts the source of
// truth and waits for its initial sync before touching pinned state, runs
// the endpoint manager, the CT garbage collector and the event reader, and
// serves the local API on <state-dir>/sluice.sock. cmd/sluice-agent only
// parses flags into Options and calls Run.
package agent
