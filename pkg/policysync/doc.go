// Package policysync keeps the datapath's policy maps in step with the
// model, as pkg/servicesync does the service maps: the computation is
// pkg/policy's (pure: identities, each local endpoint's entries and CIDR
// classes), and this package writes its results (the ipcache, each
// endpoint's policy maps and flags, the policy revision, sl_proxy) in
// passes of the one reconcile loop (pkg/reconcile), a full one every
// Resync. It is the endpoint manager's PolicyProvider: an endpoint's maps
// are in place before its entry points at them.
package policysync
