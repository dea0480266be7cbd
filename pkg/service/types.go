package service

import (
	"net/netip"
	"strconv"

	"github.com/sluice-net/sluice/pkg/model"
)

// Algorithm selects how the datapath picks a backend for a new connection.
type Algorithm string

// Load-balancing algorithms.
const (
	// AlgorithmRandom picks uniformly among the active backends. Cheap and
	// stateless, but a connection that moves to another node (e.g. after an
	// ECMP change in front of NodePort) lands on a different backend.
	AlgorithmRandom Algorithm = "random"
	// AlgorithmMaglev picks by looking the flow hash up in a Maglev table
	// (see MaglevTable) that every node computes identically, so the same
	// flow reaches the same backend whichever node it enters.
	AlgorithmMaglev Algorithm = "maglev"
)

// AlgorithmAnnotation selects a service's algorithm ("maglev" or "random").
// The key starts with "sluice.io/" because the model keeps only service
// annotations with that prefix or "service.kubernetes.io/".
const AlgorithmAnnotation = "sluice.io/lb-algorithm"

// Kind is how a client reaches a frontend.
type Kind string

// Frontend kinds, in the order they win address conflicts (see Desired.Warnings).
const (
	KindClusterIP    Kind = "ClusterIP"
	KindNodePort     Kind = "NodePort"
	KindLoadBalancer Kind = "LoadBalancer"
	KindExternalIP   Kind = "ExternalIP"
)

// rank orders kinds for sorting and conflict resolution: cluster IPs and
// node addresses belong to the cluster, while load-balancer and external IPs
// are claimed by users (spec.externalIPs is the CVE-2020-8554 vector), so the
// latter never hijack the former.
func (k Kind) rank() int {
	switch k {
	case KindClusterIP:
		return 0
	case KindNodePort:
		return 1
	case KindLoadBalancer:
		return 2
	case KindExternalIP:
		return 3
	}
	return 4
}

// External reports whether the kind is reached from outside the cluster and
// therefore follows externalTrafficPolicy rather than internalTrafficPolicy.
func (k Kind) External() bool { return k != KindClusterIP }

// BackendState says what the datapath may do with a backend.
type BackendState string

// Backend states. Only Active backends receive new connections; the others
// are listed so that the datapath keeps them in its backend table and
// established connections (tracked by backend ID) run to completion, as they
// do with kube-proxy, whose conntrack entries outlive the iptables rules.
const (
	// BackendActive backends are in the selection set for new connections.
	BackendActive BackendState = "Active"
	// BackendTerminating backends are terminating and not selected: either
	// not serving any more, or serving while ready backends exist.
	BackendTerminating BackendState = "Terminating"
	// BackendNotReady backends are neither ready nor terminating (e.g. a
	// failing readiness probe): not selected, existing connections continue.
	BackendNotReady BackendState = "NotReady"
)

func (s BackendState) rank() int {
	switch s {
	case BackendActive:
		return 0
	case BackendTerminating:
		return 1
	}
	return 2
}

// FrontendKey identifies a frontend in the datapath: what a packet's
// destination is matched against.
type FrontendKey struct {
	Address  netip.Addr     `json:"address"`
	Port     uint16         `json:"port"`
	Protocol model.Protocol `json:"protocol"`
}

// String returns e.g. "10.96.0.1:443/TCP" or "[fd00::1]:443/TCP".
func (k FrontendKey) String() string {
	return netip.AddrPortFrom(k.Address, k.Port).String() + "/" + string(k.Protocol)
}

func (k FrontendKey) compare(o FrontendKey) int {
	if c := k.Address.Compare(o.Address); c != 0 {
		return c
	}
	if k.Port != o.Port {
		return int(k.Port) - int(o.Port)
	}
	return cmpString(string(k.Protocol), string(o.Protocol))
}

// BackendKey identifies a backend in the datapath.
type BackendKey struct {
	Address  netip.Addr     `json:"address"`
	Port     uint16         `json:"port"`
	Protocol model.Protocol `json:"protocol"`
}

// String returns e.g. "10.0.0.1:8080/TCP". It is also the backend's name in
// Maglev tables, so it must not change between releases.
func (k BackendKey) String() string {
	return netip.AddrPortFrom(k.Address, k.Port).String() + "/" + string(k.Protocol)
}

func (k BackendKey) compare(o BackendKey) int {
	return FrontendKey(k).compare(FrontendKey(o))
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Backend is one endpoint behind a frontend.
type Backend struct {
	// ID is stable across computations (see Allocator); never 0.
	ID       uint32         `json:"id"`
	Address  netip.Addr     `json:"address"`
	Port     uint16         `json:"port"` // the resolved target port
	Protocol model.Protocol `json:"protocol"`
	NodeName string         `json:"nodeName,omitempty"`
	// Pod is the endpoint's target when it is a pod; zero otherwise.
	Pod   model.NamespacedName `json:"pod,omitzero"`
	Zone  string               `json:"zone,omitempty"`
	State BackendState         `json:"state"`
}

// Key returns the backend's datapath key.
func (b *Backend) Key() BackendKey {
	return BackendKey{Address: b.Address, Port: b.Port, Protocol: b.Protocol}
}

// Frontend is one (address, port, protocol) a client can reach, with the
// backends it balances to.
type Frontend struct {
	// ID is stable across computations (see Allocator); never 0.
	ID       uint32               `json:"id"`
	Service  model.NamespacedName `json:"service"`
	PortName string               `json:"portName,omitempty"`
	Kind     Kind                 `json:"kind"`
	// Address is the unspecified address (0.0.0.0) for the wildcard NodePort
	// frontend, which matches any local address; see IsWildcard.
	Address  netip.Addr     `json:"address"`
	Port     uint16         `json:"port"`
	Protocol model.Protocol `json:"protocol"`

	Algorithm Algorithm `json:"algorithm"`
	// SessionAffinity is ClientIP affinity; AffinityTimeout is in seconds
	// and is 0 without affinity.
	SessionAffinity bool   `json:"sessionAffinity,omitempty"`
	AffinityTimeout uint32 `json:"affinityTimeout,omitempty"`
	// TrafficPolicyLocal is internalTrafficPolicy: Local for ClusterIP
	// frontends and externalTrafficPolicy: Local for the other kinds. The
	// backends are then already restricted to this node's endpoints.
	TrafficPolicyLocal bool `json:"trafficPolicyLocal,omitempty"`
	// SourceRanges, for LoadBalancer frontends, are the
	// loadBalancerSourceRanges: when non-empty, other clients are dropped.
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// ClusterFrontendID, for external kinds, is the ID of the ClusterIP
	// frontend of the same service port (0 if none). kube-proxy sends
	// traffic that starts on this node (pods, host) to an external frontend
	// through the service's internal path, so with externalTrafficPolicy
	// Local such clients still reach remote endpoints.
	ClusterFrontendID uint32 `json:"clusterFrontendID,omitempty"`

	// Backends are the active backends, then the others (see BackendState),
	// each group sorted by address and port.
	Backends []Backend `json:"backends,omitempty"`
	// NoEndpoints is set when no backend is active: the datapath refuses new
	// connections. NoLocalEndpoints narrows it down: the traffic policy is
	// Local, this node has no usable endpoint but other nodes do; kube-proxy
	// then drops instead of rejecting, so that load balancers' health checks
	// rather than clients see the failure.
	NoEndpoints      bool `json:"noEndpoints,omitempty"`
	NoLocalEndpoints bool `json:"noLocalEndpoints,omitempty"`
	// Maglev, for the Maglev algorithm with at least one active backend, is
	// the lookup table of backend IDs (length Options.MaglevTableSize).
	// Frontends with the same active backends share one slice, also with
	// the previous result when unchanged: treat it as read-only.
	Maglev []uint32 `json:"-"`
}

// Key returns the frontend's datapath key.
func (f *Frontend) Key() FrontendKey {
	return FrontendKey{Address: f.Address, Port: f.Port, Protocol: f.Protocol}
}

// IsWildcard reports whether this is the NodePort frontend that matches any
// local address.
func (f *Frontend) IsWildcard() bool { return f.Kind == KindNodePort && f.Address.IsUnspecified() }

// ActiveBackends returns the backends that receive new connections.
func (f *Frontend) ActiveBackends() []Backend {
	n := 0
	for n < len(f.Backends) && f.Backends[n].State == BackendActive {
		n++
	}
	return f.Backends[:n]
}

// String returns e.g. "default/web:http ClusterIP 10.96.0.10:80/TCP".
func (f *Frontend) String() string {
	port := f.PortName
	if port == "" {
		port = strconv.Itoa(int(f.Port))
	}
	return f.Service.String() + ":" + port + " " + string(f.Kind) + " " + f.Key().String()
}

// HealthCheck is a health-check node port to serve for a LoadBalancer
// service with externalTrafficPolicy Local: it answers 200 while this node
// has a ready local endpoint and 503 otherwise, so that the cloud load
// balancer only sends traffic to nodes that can serve it locally.
type HealthCheck struct {
	Service  model.NamespacedName `json:"service"`
	NodePort uint16               `json:"nodePort"`
	// LocalEndpoints counts the distinct addresses of ready endpoints on
	// this node, over all ports, as kube-proxy reports them. Serving but
	// terminating endpoints are not counted, so the load balancer drains
	// this node while they finish (KEP-1669).
	LocalEndpoints int `json:"localEndpoints"`
}

// ServiceExtras are Service fields that the model does not carry yet.
type ServiceExtras struct {
	// ExternalIPs is spec.externalIPs.
	ExternalIPs []netip.Addr
	// LoadBalancerIPs are status.loadBalancer.ingress[].ip whose ipMode is
	// VIP or unset (with ipMode Proxy the load balancer, not the node,
	// terminates the address, and kube-proxy does not capture it).
	LoadBalancerIPs []netip.Addr
	// LoadBalancerSourceRanges is spec.loadBalancerSourceRanges.
	LoadBalancerSourceRanges []netip.Prefix
	// HealthCheckNodePort is spec.healthCheckNodePort (0 if none).
	HealthCheckNodePort uint16
}

// Desired is the load-balancing state this node should program. Every list
// is sorted so that two computations from the same input are equal and a
// reconciler can diff consecutive results.
type Desired struct {
	// Revision is the model revision it was computed from.
	Revision uint64 `json:"revision,omitempty"`
	// Frontends are sorted by service, port name, protocol, kind, address
	// and port. Their keys are unique.
	Frontends []Frontend `json:"frontends,omitempty"`
	// Backends is every backend of every frontend once, sorted by ID: the
	// datapath's backend table. State is the best state the backend has in
	// any frontend; which backends a frontend selects is in the frontend.
	Backends []Backend `json:"backends,omitempty"`
	// HealthChecks are sorted by service.
	HealthChecks []HealthCheck `json:"healthChecks,omitempty"`
	// MaglevTableSize is the length of every Frontend.Maglev table.
	MaglevTableSize uint32 `json:"maglevTableSize"`
	// Warnings describe input that was ignored or overridden, sorted.
	Warnings []string `json:"warnings,omitempty"`
}

// ServiceMemory is the Maglev table memory one service needs in the datapath.
type ServiceMemory struct {
	Service model.NamespacedName `json:"service"`
	// Tables is the number of frontends with a Maglev table: each has its
	// own table in the datapath even when its contents equal another's.
	Tables int `json:"tables"`
	// Bytes is Tables × table size × 4 (one uint32 backend ID per entry).
	Bytes uint64 `json:"bytes"`
}

// MemoryPerService reports the Maglev table memory of each service that has
// at least one table, sorted by service. With the default table size of
// 16381 entries, one table is 65,524 bytes (~64 KiB).
func (d *Desired) MemoryPerService() []ServiceMemory {
	var out []ServiceMemory
	for i := range d.Frontends {
		f := &d.Frontends[i]
		if f.Maglev == nil {
			continue
		}
		if len(out) == 0 || out[len(out)-1].Service != f.Service {
			out = append(out, ServiceMemory{Service: f.Service})
		}
		m := &out[len(out)-1]
		m.Tables++
		m.Bytes += uint64(len(f.Maglev)) * 4
	}
	return out
}
