// Package cni is the sluice-cni chained CNI plugin and its installer.
//
// Sluice runs beside the cluster's CNI, which gives each pod its interface
// and address. Without this plugin, a new pod's interface carries traffic
// before the agent has seen the pod (the API server reports its address
// only after the kubelet writes the pod's status) and attached its
// programs; a pod created while the agent is down runs unpoliced until the
// agent returns. Chained after the main plugin in the node's .conflist,
// sluice-cni closes that window: on ADD it hands the pod's addresses and
// host interface from the main plugin's result (prevResult) to the agent
// over its API socket (<stateDir>/sluice.sock, see pkg/api/cniapi) and
// returns only when the agent reports the pod's endpoint attached and
// programmed, so the pod's first packet is judged by its policy. With the
// agent down or not answering in time, ADD fails (CNI error code 11, "try
// again later") and the kubelet retries it. DEL tells the agent to forget
// the sandbox and succeeds even with the agent down (the agent cleans up
// from the model when it returns). CHECK fails unless the endpoint is
// ready.
//
// Install and Uninstall add and remove the plugin's entry in the
// network configuration the container runtime uses (the lexically first
// .conf, .conflist or .json file of the configuration directory, as
// libcni orders them), idempotently; the DaemonSet's init container runs
// `sluice-cni install`.
package cni
