// Package k8sconv converts k8s.io/api objects, and Sluice's own
// SluiceL7Policy (pkg/apis/sluice/v1alpha1), into pkg/model objects,
// validating and defaulting them on the way.
//
// It is shared by every source that sees real Kubernetes types: the files
// source decodes manifests into k8s.io/api structs and the Kubernetes source
// receives the same structs from informers, so both produce identical model
// objects and reject the same bad input. Validation covers what the model
// relies on (names, IPs, CIDRs, port ranges, enum values, selector
// operators); defaulting mirrors the API server for fields the files source
// would otherwise leave empty (protocol TCP, service type ClusterIP, target
// port = port, policy types, ...), which is a no-op for objects that came
// through an API server.
//
// Errors are *FieldError values naming the offending field path.
package k8sconv
