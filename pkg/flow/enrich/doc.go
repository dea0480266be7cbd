// Package enrich answers the flow converter's questions about an event
// (flow.Enricher: which pod is behind an endpoint ID, an address or a
// cgroup, what an identity's labels are, which service a frontend ID
// belongs to, which policy rule a rule ID names) from narrow lookups into
// the parts that know: the model store, the endpoint manager, the policy
// and service reconcilers, the cgroup hierarchy. Each lookup is a small
// interface, so the enricher is tested with plain struct fakes and the
// agent only hands it its parts.
//
// It is asked twice per event, on the goroutine that reads the ring
// buffer, so its answers allocate nothing: addresses are indexed once per
// model revision, endpoint IDs and cgroups are cached and checked against
// the current state.
package enrich
