// Package reconcilers assembles what runs between the model and the BPF
// maps: the service reconciler (pkg/servicesync: sl_lb_*), the policy
// reconciler (pkg/policysync: sl_ipcache, sl_policy*) and the endpoint
// manager (pkg/endpoint: sl_endpoints and the attachments), wired to each
// other as the agent runs them: the policy reconciler is the endpoint
// manager's policy provider and lists its endpoints in turn.
//
//	model.Store ──► servicesync ──► sl_lb_*
//	            ├─► policysync ───► sl_ipcache, sl_policy*
//	            └─► endpoint ─────► sl_endpoints, programs on pod interfaces
//
// The agent (pkg/agent) and the tests that drive the maps from a model
// (internal/testing/k8stest) build them with the same New, so the tests
// run the agent's wiring rather than a copy of it.
package reconcilers
