// Package model is Sluice's own picture of the cluster: the few object kinds the
// control plane needs (namespaces, pods, services, endpoint slices, network
// policies, nodes), reduced to the fields Sluice uses and already validated.
//
// It exists so that everything below the sources (identity, policy, load
// balancing, reconcilers) depends on one small, pure-Go model instead of on
// k8s.io types or client-go: the same agent then runs from Kubernetes informers
// or from a directory of manifests on an edge host, and the control plane can
// be tested with plain struct literals. This package must not import k8s.io/...
//
// Objects are values that have already been defaulted the way the Kubernetes API
// server defaults them (protocols, policy types, service target ports, ...), so
// consumers never re-implement API defaulting. Once an object has been handed
// to a Store it is immutable: neither the producer nor any consumer may modify
// it (see Store).
package model
