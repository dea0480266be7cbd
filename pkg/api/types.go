// Package api holds the types the agent serves on its local API socket and the
// CLI reads. The transport is HTTP/JSON over a unix socket in the agent's state
// directory (like Cilium's agent API), so it is scriptable with curl.
package api

import (
	"time"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/service"
)

// DefaultStateDir is the agent's default --state-dir.
const DefaultStateDir = "/var/run/sluice"

// SocketName is the agent API socket's file name inside --state-dir.
const SocketName = "sluice.sock"

// Paths served on the API socket.
const (
	PathStatus    = "/v1/status"
	PathEndpoints = "/v1/endpoints"
	PathServices  = "/v1/services"
	// PathPolicy?pod=NS/NAME explains a local pod's effective policy.
	PathPolicy     = "/v1/policy"
	PathIdentities = "/v1/identities"
	// PathL7Config is the node's compiled L7 policy (l7.Config): the
	// proxy listeners and their rules, as the node's proxy is to serve them.
	PathL7Config = "/v1/l7/config"
)

// Status is the agent's health and configuration as `sluice status` shows it.
type Status struct {
	NodeName   string    `json:"nodeName"`
	Ready      bool      `json:"ready"`
	StartedAt  time.Time `json:"startedAt"`
	Source     string    `json:"source"`
	BPFRoot    string    `json:"bpfRoot"`
	StateDir   string    `json:"stateDir"`
	CgroupRoot string    `json:"cgroupRoot"`
	// AttachMode is how programs are attached to endpoint interfaces: "tcx" or "tc".
	AttachMode string         `json:"attachMode"`
	Kernel     KernelFeatures `json:"kernel"`
	Endpoints  int            `json:"endpoints"`
	// CTEntries is the number of live connection-tracking entries; CTMax the table size.
	CTEntries int `json:"ctEntries"`
	CTMax     int `json:"ctMax"`
	// SocketLB is the socket-level load balancing mode.
	SocketLB string `json:"socketLB"`
	// Services summarises what the service reconciler programmed.
	Services ServicesStatus `json:"services"`
	// Policy summarises network policy enforcement.
	Policy PolicyStatus `json:"policy"`
	// Flows summarises the flow store behind the Hubble observer API.
	Flows FlowsStatus `json:"flows"`
	// Adopted is true when this agent found pinned state from a previous run and kept it.
	Adopted bool `json:"adopted"`
	// Errors are current problems (bad manifests, failed attaches), newest last.
	Errors []Error `json:"errors,omitempty"`
	// EventsLost counts events the datapath could not emit because the
	// ring buffer was full.
	EventsLost uint64 `json:"eventsLost"`
	// Counters are datapath packet/byte totals by verdict, reason and direction.
	Counters []Counter `json:"counters,omitempty"`
	// Maps is how full each map that can fill up is.
	Maps []datapath.MapPressure `json:"maps,omitempty"`
	// NAT is the SNAT port range in use per node address and protocol
	// (external connections toward backends on other nodes).
	NAT []datapath.NATUsage `json:"nat,omitempty"`
}

// PolicyStatus summarises network policy enforcement.
type PolicyStatus struct {
	// Revision is the datapath's policy revision: connections admitted
	// under an older one are judged again on their next packet.
	Revision          uint32 `json:"revision"`
	Identities        int    `json:"identities"`
	EnforcedEndpoints int    `json:"enforcedEndpoints"`
	// L7Listeners is how many proxy listeners (distinct L7 rule sets) the
	// endpoints' policy redirects to; L7Redirecting how many endpoints'
	// maps do, as the datapath was last told (sl_proxy): once it counts an
	// endpoint, connections to it are handed to the proxy.
	L7Listeners   int `json:"l7Listeners,omitempty"`
	L7Redirecting int `json:"l7Redirecting,omitempty"`
	// FailedClosed are endpoints whose policy could not be installed
	// (too many entries for --policy-map-max): all their traffic in the
	// enforced directions is dropped until it fits.
	FailedClosed []PolicyFailure `json:"failedClosed,omitempty"`
	LastError    string          `json:"lastError,omitempty"`
}

// FlowsStatus summarises the flow store.
type FlowsStatus struct {
	Stored   int     `json:"stored"`
	Capacity int     `json:"capacity"`
	Seen     uint64  `json:"seen"`
	PerSec   float64 `json:"perSecond"`
	// Lost counts events the datapath could not deliver (ring full).
	Lost uint64 `json:"lost"`
	// FollowersLost counts flows slow followers missed.
	FollowersLost uint64 `json:"followersLost"`
}

// PolicyFailure names an endpoint that fails closed, and why.
type PolicyFailure struct {
	Pod   string `json:"pod"`
	Error string `json:"error"`
}

// KernelFeatures are the results of the feature probes run at start.
type KernelFeatures struct {
	Release string `json:"release"`
	TCX     bool   `json:"tcx"`
	RingBuf bool   `json:"ringbuf"`
	// SockDestroy is how connected UDP sockets of removed backends are
	// destroyed: "bpf-iterator" (bpf_sock_destroy, Linux 6.5+),
	// "sock-diag" (SOCK_DESTROY, the fallback), or "" when neither works
	// or socket LB is off (nothing to destroy).
	SockDestroy string `json:"sockDestroy,omitempty"`
	// SetRetval: socket LB refuses connect() to a service without
	// endpoints with ECONNREFUSED (bpf_set_retval, Linux 5.18); without
	// it, with EPERM.
	SetRetval bool `json:"setRetval"`
}

// Error is one current problem reported by a part of the agent.
type Error struct {
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Time      time.Time `json:"time"`
}

// Counter is one datapath counter summed over CPUs.
type Counter struct {
	Verdict   string `json:"verdict"` // forwarded, dropped, passed-ipv6, passed-non-ip, ...
	Reason    string `json:"reason,omitempty"`
	Direction string `json:"direction"` // ingress (into the pod) or egress (out of the pod)
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// Endpoint is one local pod as the endpoint manager sees it.
type Endpoint struct {
	ID        uint32   `json:"id"`
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	IPs       []string `json:"ips"`
	Interface string   `json:"interface,omitempty"`
	IfIndex   int      `json:"ifindex,omitempty"`
	// State is "ready" (programs attached), "waiting-for-interface" or "error".
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// ServicesStatus summarises the programmed services.
type ServicesStatus struct {
	Frontends int    `json:"frontends"`
	Backends  int    `json:"backends"`
	Applied   uint64 `json:"applied"`
	// ConnectionsCleaned counts CT entries removed with their backends.
	ConnectionsCleaned uint64 `json:"connectionsCleaned"`
}

// Services is what `sluice service list` shows.
type Services struct {
	Frontends       []service.Frontend      `json:"frontends"`
	MaglevTableSize uint32                  `json:"maglevTableSize"`
	Memory          []service.ServiceMemory `json:"memory,omitempty"`
}
