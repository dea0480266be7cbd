// Package api holds the types the agent serves on its local API socket and the
// CLI reads. The transport is HTTP/JSON over a unix socket in the agent's state
// directory (like Cilium's agent API), so it is scriptable with curl.
//
// These are wire types only: the package imports nothing of Sluice, and
// the agent converts its parts' internal types into them (pkg/agent), so
// a change inside a part cannot change the API by accident.
package api

import (
	"net/netip"
	"time"
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
	// PathProxy is the xDS server's view of the node's Envoy (`sluice
	// proxy status`).
	PathProxy = "/v1/proxy"
	// PathL7Config is the node's compiled L7 policy (l7.Config): the
	// proxy listeners and their rules, as the node's proxy is to serve them.
	PathL7Config = "/v1/l7/config"
	// PathPolicyTrace?from=..&to=..&port=..&protocol=.. traces a new
	// connection (PolicyTraceAnswer). POST it with a manifest of
	// NetworkPolicies as the body (and file=NAME, for errors) to
	// evaluate them without applying them: the answer's WhatIf.
	PathPolicyTrace = "/v1/policy/trace"
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
	Maps []MapPressure `json:"maps,omitempty"`
	// NAT is the SNAT port range in use per node address and protocol
	// (external connections toward backends on other nodes).
	NAT []NATUsage `json:"nat,omitempty"`
	// Proxy is the xDS server's state; nil when it is off (--xds=false).
	Proxy *ProxyStatus `json:"proxy,omitempty"`
}

// MapPressure is how full one BPF map is.
type MapPressure struct {
	Map     string `json:"map"`
	Entries int    `json:"entries"`
	Max     int    `json:"max"`
	// Live, for sl_ct, counts the entries not yet expired (the others
	// wait for the CT GC).
	Live int `json:"live,omitempty"`
}

// NATUsage is the SNAT port range in use for one node address and
// protocol.
type NATUsage struct {
	Address    string `json:"address"`
	Proto      string `json:"proto"`
	PortsInUse int    `json:"portsInUse"`
	PortsTotal int    `json:"portsTotal"`
}

// ProxyStatus is what the agent's xDS server served the node's Envoy and
// what Envoy made of it.
type ProxyStatus struct {
	// Socket is the xDS (ADS) socket Envoy connects to.
	Socket string `json:"socket"`
	// Version is the snapshot served: the last L7 config that validated.
	// Empty until the first one.
	Version  string    `json:"version"`
	PushedAt time.Time `json:"pushedAt,omitzero"`
	// Pushes counts snapshots served (an unchanged config is no push).
	Pushes uint64 `json:"pushes"`
	// Listeners are the proxy listeners of the served snapshot.
	Listeners []ProxyListener `json:"listeners"`
	// Streams are Envoy's open ADS streams.
	Streams []ProxyStream `json:"streams"`
	// Acks are the version Envoy runs, per resource type.
	Acks []ProxyAck `json:"acks"`
	// NACKs counts rejected responses; LastNACK is the latest.
	NACKs    uint64     `json:"nacks"`
	LastNACK *ProxyNACK `json:"lastNACK,omitempty"`
	// LastError is the latest L7 config that could not be served (the
	// previous one keeps serving), naming the rule; empty once a config
	// is served again.
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// InSync reports whether Envoy acknowledged the served version of every
// resource type it asked for.
func (p *ProxyStatus) InSync() bool {
	if p == nil || p.Version == "" || len(p.Acks) == 0 {
		return false
	}
	for _, a := range p.Acks {
		if a.Version != p.Version {
			return false
		}
	}
	return true
}

// ProxyListener is one listener Envoy is served.
type ProxyListener struct {
	Name  string `json:"name"`
	Port  uint16 `json:"port"`
	Rules int    `json:"rules"`
	Audit bool   `json:"audit,omitempty"`
}

// ProxyStream is one open ADS stream.
type ProxyStream struct {
	ID int64 `json:"id"`
	// Node is the node id Envoy sent (its --service-node).
	Node   string    `json:"node"`
	Opened time.Time `json:"opened"`
}

// ProxyAck is the version of one resource type Envoy runs, as it last
// said: by acknowledging a response, or in the first request of a stream
// (after an agent restart, Envoy says the version it kept).
type ProxyAck struct {
	TypeURL string    `json:"typeURL"`
	Version string    `json:"version"`
	Node    string    `json:"node"`
	At      time.Time `json:"at"`
	// Latency is from sending the response to its ACK; 0 when Envoy said
	// its version without answering a response.
	Latency time.Duration `json:"latency"`
}

// ProxyNACK is a response Envoy rejected.
type ProxyNACK struct {
	TypeURL string `json:"typeURL"`
	// Version is the version rejected; Resources the names it carried.
	Version   string   `json:"version"`
	Resources []string `json:"resources"`
	// Message is Envoy's error_detail.
	Message string    `json:"message"`
	Node    string    `json:"node"`
	At      time.Time `json:"at"`
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
	Frontends       []Frontend      `json:"frontends"`
	MaglevTableSize uint32          `json:"maglevTableSize"`
	Memory          []ServiceMemory `json:"memory,omitempty"`
}

// Frontend is one (address, port, protocol) a client can reach, with the
// backends it balances to, as the agent computed it.
type Frontend struct {
	ID       uint32         `json:"id"`
	Service  NamespacedName `json:"service"`
	PortName string         `json:"portName,omitempty"`
	// Kind is ClusterIP, NodePort, LoadBalancer or ExternalIP.
	Kind string `json:"kind"`
	// Address is 0.0.0.0 for the NodePort frontend that matches any
	// local address.
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port"`
	Protocol string     `json:"protocol"`
	// Algorithm is "random" or "maglev".
	Algorithm string `json:"algorithm"`
	// AffinityTimeout is in seconds, with ClientIP SessionAffinity.
	SessionAffinity bool   `json:"sessionAffinity,omitempty"`
	AffinityTimeout uint32 `json:"affinityTimeout,omitempty"`
	// TrafficPolicyLocal: internalTrafficPolicy (ClusterIP) or
	// externalTrafficPolicy (the other kinds) is Local.
	TrafficPolicyLocal bool `json:"trafficPolicyLocal,omitempty"`
	// SourceRanges are a LoadBalancer's loadBalancerSourceRanges.
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// ClusterFrontendID, for the external kinds, is the ID of the
	// ClusterIP frontend of the same service port (0 if none).
	ClusterFrontendID uint32 `json:"clusterFrontendID,omitempty"`
	// Backends are the active backends, then the others.
	Backends []Backend `json:"backends,omitempty"`
	// NoEndpoints: no backend is active, new connections are refused.
	// NoLocalEndpoints: the traffic policy is Local and only other nodes
	// have endpoints; new connections are dropped.
	NoEndpoints      bool `json:"noEndpoints,omitempty"`
	NoLocalEndpoints bool `json:"noLocalEndpoints,omitempty"`
}

// Key names the frontend as the datapath matches it, e.g.
// "10.96.0.1:443/TCP" or "[fd00::1]:443/TCP".
func (f *Frontend) Key() string {
	return netip.AddrPortFrom(f.Address, f.Port).String() + "/" + f.Protocol
}

// Backend is one endpoint behind a frontend.
type Backend struct {
	ID       uint32     `json:"id"`
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port"` // the resolved target port
	Protocol string     `json:"protocol"`
	NodeName string     `json:"nodeName,omitempty"`
	// Pod is the endpoint's target when it is a pod; zero otherwise.
	Pod  NamespacedName `json:"pod,omitzero"`
	Zone string         `json:"zone,omitempty"`
	// State is BackendActive, "Terminating" or "NotReady".
	State string `json:"state"`
}

// BackendActive is the State of a backend that takes new connections.
const BackendActive = "Active"

// ServiceMemory is the Maglev table memory one service needs in the datapath.
type ServiceMemory struct {
	Service NamespacedName `json:"service"`
	// Tables is the number of frontends with a Maglev table.
	Tables int `json:"tables"`
	// Bytes is Tables × table size × 4 (one uint32 backend ID per entry).
	Bytes uint64 `json:"bytes"`
}

// NamespacedName names a namespaced object.
type NamespacedName struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String returns "namespace/name", or just "name" without a namespace.
func (n NamespacedName) String() string {
	if n.Namespace == "" {
		return n.Name
	}
	return n.Namespace + "/" + n.Name
}

// PolicyTraceAnswer is `sluice policy trace`'s answer: the trace (when
// --from and --to were given) and, for a manifest, what it would change.
type PolicyTraceAnswer struct {
	Trace  *PolicyTrace  `json:"trace,omitempty"`
	WhatIf *PolicyWhatIf `json:"whatIf,omitempty"`
}

// PolicyTrace is what happens to one new connection: the service
// translation and, per destination, the client's egress decision and the
// server's ingress decision.
type PolicyTrace struct {
	From     TraceEnd      `json:"from"`
	To       TraceEnd      `json:"to"`
	Protocol string        `json:"protocol"`
	Port     uint16        `json:"port"`
	Service  *TraceService `json:"service,omitempty"`
	Paths    []TracePath   `json:"paths"`
	// Verdict is allowed, denied, audit, redirected, "depends on the
	// backend", or refused (a service without backends).
	Verdict string `json:"verdict"`
	// Problems are disagreements between the agent's model and the
	// datapath's maps; the CLI exits non-zero when there are any.
	Problems []string `json:"problems,omitempty"`
}

// TraceEnd is one end of a traced connection.
type TraceEnd struct {
	// Kind is pod, node, address or service.
	Kind    string     `json:"kind"`
	Name    string     `json:"name"`
	Address netip.Addr `json:"address,omitzero"`
	Node    string     `json:"node,omitempty"`
	// Local: a pod of this node, whose maps the trace reads.
	Local    bool     `json:"local,omitempty"`
	Identity uint32   `json:"identity,omitempty"`
	Labels   []string `json:"labels,omitempty"`
}

// TraceService is the service translation of a traced connection.
type TraceService struct {
	Service  NamespacedName `json:"service"`
	Frontend string         `json:"frontend"`
	Kind     string         `json:"kind"`
	// Backends take new connections in the agent's model; MapBackends
	// ("address:port") are those the LB maps hold, when MapsRead.
	Backends    []TraceBackend `json:"backends"`
	MapBackends []string       `json:"mapBackends,omitempty"`
	MapsRead    bool           `json:"mapsRead"`
}

// TraceBackend is one backend candidate.
type TraceBackend struct {
	Address netip.AddrPort `json:"address"`
	Pod     NamespacedName `json:"pod,omitzero"`
	Node    string         `json:"node,omitempty"`
}

// TracePath is the connection to one destination (the server, or one
// backend of the service) on its port.
type TracePath struct {
	To      TraceEnd       `json:"to"`
	Port    uint16         `json:"port"`
	Egress  *TraceDecision `json:"egress,omitempty"`
	Ingress *TraceDecision `json:"ingress,omitempty"`
	Verdict string         `json:"verdict"`
}

// TraceDecision is one endpoint's policy decision.
type TraceDecision struct {
	Endpoint  NamespacedName `json:"endpoint"`
	Node      string         `json:"node,omitempty"`
	Local     bool           `json:"local,omitempty"`
	Direction string         `json:"direction"`
	// Peer is the other end's identity as the endpoint's node sees it.
	Peer       uint32   `json:"peer"`
	PeerLabels []string `json:"peerLabels,omitempty"`
	Enforced   bool     `json:"enforced"`
	Audit      bool     `json:"audit,omitempty"`
	// Verdict is allowed, redirected, denied, audit or not-enforced.
	Verdict string `json:"verdict"`
	// Rule is "ns/policy ingress[0]", host-allow, default-deny or
	// fails-closed; empty when not enforced.
	Rule   string `json:"rule,omitempty"`
	RuleID uint32 `json:"ruleID,omitempty"`
	// Tier is the deciding rule's tier where ClusterNetworkPolicy rules
	// apply: Admin, NetworkPolicy, Baseline or default.
	Tier      string `json:"tier,omitempty"`
	Entry     string `json:"entry,omitempty"`
	ProxyPort uint16 `json:"proxyPort,omitempty"`
	// Maps is the same decision read from the datapath's maps (this
	// node's endpoints only).
	Maps *TraceMapCheck `json:"maps,omitempty"`
}

// TraceMapCheck is an endpoint's decision as its maps make it.
type TraceMapCheck struct {
	EndpointID uint32   `json:"endpointID"`
	Flags      []string `json:"flags"`
	Peer       uint32   `json:"peer"`
	Verdict    string   `json:"verdict"`
	Rule       string   `json:"rule,omitempty"`
	RuleID     uint32   `json:"ruleID,omitempty"`
	Entry      string   `json:"entry,omitempty"`
	Agrees     bool     `json:"agrees"`
}

// PolicyWhatIf is what a manifest of NetworkPolicies would change if
// applied.
type PolicyWhatIf struct {
	Policies []string `json:"policies"`
	Replaced []string `json:"replaced,omitempty"`
	// Trace is the trace's answer under the manifest (model only).
	Trace *PolicyTrace `json:"trace,omitempty"`
	// Connections is how many distinct connections of the flow store
	// were judged; Denied those the manifest would deny, grouped.
	Connections int            `json:"connections"`
	Denied      []WhatIfDenied `json:"denied"`
}

// WhatIfDenied is a group of connections a manifest would deny: from one
// workload (or pod, or address) to another on one port, at one end.
type WhatIfDenied struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	// At is "egress (RULE)" at the client or "ingress (RULE)" at the
	// server; Now how the live policy decides there.
	At      string    `json:"at"`
	Now     string    `json:"now"`
	Count   int       `json:"count"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Example string    `json:"example"`
}
