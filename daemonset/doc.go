// Package daemonset is the Kubernetes install of Sluice: plain YAML applied
// with `kubectl apply -k daemonset/`, and the Dockerfile of the image it
// runs (see README.md here). There is no Go code in it: its tests hold the
// manifests to the agent they deploy. Every manifest decodes strictly into
// the Kubernetes API types, the ClusterRole grants exactly the requests the
// agent's informers make, and the DaemonSet's arguments and ConfigMap use
// only settings sluice-agent defines and agree with the pod's mounts,
// ports and probes.
package daemonset
