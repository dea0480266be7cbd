// Package cluster runs the DaemonSet on a real one-node Kubernetes cluster
// (`make test-cluster`): etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd, the kubelet and optionally kube-proxy, all in
// the network namespace of a harness node (internal/testing/harness), with images
// built from this checkout and imported into containerd without a
// registry. The tests install daemonset/ through a test overlay
// (overlay/kustomization.yaml and the run's layer, WriteOverlay) and use
// the cluster as a user does, with the node's kubectl.
//
// The Kubernetes binaries come from `make cluster-bins` (tools/apiserver
// -cluster) in ${SLUICE_CACHE:-/var/cache/sluice}; containerd, runc and the
// CNI plugins from Debian (containerd, runc, containernetworking-plugins),
// and busybox-static for the mount-bpffs init container's image.
package cluster
