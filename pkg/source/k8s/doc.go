// Package k8s is the Kubernetes source of truth: shared informers on the API
// server's Namespaces, Nodes, Pods (all of them: the ipcache needs every pod
// IP), Services, EndpointSlices (discovery/v1), NetworkPolicies
// (networking/v1), SluiceL7Policies (sluice.io/v1alpha1, through the
// dynamic client, with the Secrets of the agent's namespace their JWT key
// sets may name: see secrets.go) and ClusterNetworkPolicies
// (policy.networking.k8s.io/v1alpha2, through the dynamic client, decoded
// into sigs.k8s.io/network-policy-api's types), converted with k8sconv
// into a model.Store. It is the only package that imports client-go. A
// cluster without one of these CRDs has none of its kind: the source runs
// without, says so in Errors, and picks the kind up once the CRD is
// installed.
//
// The source has the shape of the files source: New, then Start, which
// returns once every informer has listed its resource and the initial model
// is in the store (the agent loads the datapath only after that), then
// Synced and Errors for `sluice status`.
//
// Event handlers only mark objects dirty. One loop converts the marked
// objects from the informers' caches and applies their difference from the
// store's snapshot in one Apply, at most once per MinSyncInterval, so a
// burst of events (a relist, a rollout) becomes one model revision; every
// Resync it converts everything and diffs it with the whole store. The
// source owns the store: objects in it that are not in the caches are
// removed.
//
// An object that fails conversion (an invalid IP, an unknown selector
// operator, ...) is reported by Errors with its field and ignored; if an
// earlier version converted, that version stays in the model, as the files
// source keeps a broken file's last good objects. List and watch failures
// (including a watch the informers cannot reopen while the API server is
// down, which client-go retries without reporting it) are retried by the
// informers with backoff, reported by Errors and logged, and the model keeps
// the last state seen.
//
// The informers' transform converts each object as it enters the cache,
// so the caches hold the model's own objects (see cached) rather than API
// objects: at 10,000 pods, 5,000 services, endpoint slices and policies
// and 100 nodes the caches add 7 MiB to the model's 28 MiB, where full
// objects took 270 MiB and copies slimmed to what the conversion reads 67
// MiB (BenchmarkInformerHeap).
//
// The client (NewClient) is REST clients for the three API groups read,
// not a client-go clientset: the clientset's import registers every API
// group of Kubernetes at start, some 7 MiB of RSS (see restClient).
package k8s
