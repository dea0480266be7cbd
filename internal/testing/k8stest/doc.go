// Package k8stest holds what the tests of the Kubernetes source share, with
// the fake clientset (pkg/source/k8s) and with a real API server
// (tests/apiserver): object builders, small (Pod, Service, Slice, ...) and
// shaped like a real cluster's (Fat*, Cluster), and the path from a
// model.Store to a loaded datapath's maps that the agent wires
// (Reconcilers) with readers for what a test checks there (Backends).
package k8stest
