// Package reconcile is the one loop that every reconciler of the agent
// runs (services, policy, endpoints): what differs between them is the
// pass, not how passes are scheduled.
//
// A Loop runs a pass when it starts, then an incremental pass whenever
// work is marked (Trigger, or a change notification such as the model
// store's), and a full pass every Resync. Marking work only marks it:
// marks coalesce, and the loop waits MinInterval after the first mark
// before the pass, so a burst of changes (a rolling update touching many
// EndpointSlices within milliseconds) costs one pass. Every wait ends
// with the context. Each pass's duration and error go to Observe
// (sluice_reconcile_* metrics); the reconciler keeps its error in its own
// status for `sluice status`.
package reconcile
