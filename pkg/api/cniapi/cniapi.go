// Package cniapi holds the wire types of the agent's CNI endpoints, which
// the sluice-cni plugin calls on the agent's API socket
// (<state-dir>/sluice.sock, HTTP/JSON like the rest of pkg/api).
//
// They live apart from pkg/api so that the plugin, which the container
// runtime executes for every pod sandbox, links only these types and
// net/http, not the datapath that pkg/api's status types pull in.
package cniapi

import "time"

// Paths served on the agent's API socket, each taking a Request (POST).
const (
	// PathAdd attaches and programs the pod's endpoint and answers once
	// its first packet is judged by its policy.
	PathAdd = "/v1/cni/add"
	// PathDel forgets what an ADD told the agent; idempotent.
	PathDel = "/v1/cni/del"
	// PathCheck answers an error unless the pod's endpoint is ready.
	PathCheck = "/v1/cni/check"
)

// Request is one CNI operation on a pod sandbox, taken from the CNI
// environment, CNI_ARGS and the main plugin's result.
type Request struct {
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Namespace   string `json:"namespace"`
	Pod         string `json:"pod"`
	// PodUID is K8S_POD_UID where the runtime passes it (containerd,
	// CRI-O): it tells the pod from an earlier one of the same name.
	PodUID string `json:"podUID,omitempty"`
	// IPs are the pod's addresses from the main plugin's result
	// (without prefix length).
	IPs []string `json:"ips,omitempty"`
	// HostInterfaces are the result's interfaces outside the sandbox:
	// the pod's host-side veth and, for bridge plugins, the bridge. The
	// agent uses the veth (or netkit) among them.
	HostInterfaces []string `json:"hostInterfaces,omitempty"`
	// Timeout is how long the plugin waits: the agent answers before it.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Response is the agent's answer to a Request that succeeded. A failed
// one is a non-2xx status whose body is the error in plain text.
type Response struct {
	// Endpoint describes the pod's endpoint (ADD, CHECK) in the words
	// of `sluice endpoint list`: "ns/name id N ip A on IFNAME, ready".
	Endpoint string `json:"endpoint,omitempty"`
	// Note says why nothing was done (e.g. no IPv4 address).
	Note string `json:"note,omitempty"`
}
