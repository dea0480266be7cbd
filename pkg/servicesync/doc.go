// Package servicesync keeps the datapath's service maps in step with the
// model: it computes the desired frontends and backends (pkg/service,
// pure), diffs them (Plan, pure) against what it last wrote — and, on
// every full resync, against what the maps really hold, pruning anything
// stale — and has the datapath write the difference in batches, in an
// order that never exposes a half-written service (datapath.Maps.ApplyLB).
// Connections to backends that are removed are cleaned out of connection
// tracking, so clients notice.
//
// Between full resyncs the work follows the change, not the cluster: the
// computation is incremental (service.Incremental), and a pass plans and
// writes only the frontends and backends it reports changed. A pass after
// a write failed plans everything again.
//
// Model notifications only mark work; one loop does the writing, at most
// every MinInterval, so a burst of EndpointSlice updates costs one pass.
package servicesync
