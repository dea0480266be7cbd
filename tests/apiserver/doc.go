// Package apiserver runs a real kube-apiserver with etcd on loopback for
// integration tests: Start launches etcd and kube-apiserver in a temporary
// directory with ephemeral ports, self-signed serving certificates, a
// service-account signing key and a client certificate for an admin user,
// and waits for /readyz. The binaries come from tools/apiserver, which
// builds them into a cache outside the repository (LocateBinaries).
//
// The package's tests (`make test-apiserver`) drive the Kubernetes source
// of sluice-agent against it: objects written through the API reach a
// loaded datapath's BPF maps; API validation, field selectors, watch
// resumption across an API server restart and the DaemonSet's ClusterRole
// behave as on a cluster.
package apiserver
