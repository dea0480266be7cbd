// Package agent runs one node's Sluice agent. It only assembles parts and
// runs them: Run takes the bpf root's lock, opens the health and metrics
// listeners, starts the source of truth and waits for its initial sync
// before touching pinned state, loads (or adopts) the datapath, builds the
// reconcilers (pkg/agent/reconcilers), the CT garbage collector, the flow
// pipeline (enrichment in pkg/flow/enrich) and the local API on
// <state-dir>/sluice.sock, and runs them as one group (pkg/rungroup): the
// first part to fail stops them all, and the shutdown goes through the
// parts in the reverse order of the start. The API's wire types are
// converted here from the parts' own (apiconv.go). cmd/sluice-agent only
// parses flags into Options and calls Run.
package agent
