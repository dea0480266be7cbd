package model

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// Kind identifies an object type. The zero value is not a valid kind.
type Kind uint8

// Kinds known to the model, in the order Diff reports them.
const (
	KindNamespace Kind = iota + 1
	KindNode
	KindPod
	KindService
	KindEndpointSlice
	KindNetworkPolicy
	KindL7Policy
	KindClusterNetworkPolicy
)

// Kinds lists every valid Kind in a stable order.
var Kinds = []Kind{KindNamespace, KindNode, KindPod, KindService, KindEndpointSlice, KindNetworkPolicy, KindL7Policy, KindClusterNetworkPolicy}

var kindNames = map[Kind]string{
	KindNamespace:     "Namespace",
	KindNode:          "Node",
	KindPod:           "Pod",
	KindService:       "Service",
	KindEndpointSlice: "EndpointSlice",
	KindNetworkPolicy: "NetworkPolicy",
	KindL7Policy:      "SluiceL7Policy",

	KindClusterNetworkPolicy: "ClusterNetworkPolicy",
}

// String returns the Kubernetes kind name, e.g. "Pod".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Namespaced reports whether objects of this kind live in a namespace.
func (k Kind) Namespaced() bool {
	return k != KindNamespace && k != KindNode && k != KindClusterNetworkPolicy
}

// MarshalText encodes the kind by name so saved state stays readable and does
// not depend on the numeric order of the constants.
func (k Kind) MarshalText() ([]byte, error) {
	if _, ok := kindNames[k]; !ok {
		return nil, fmt.Errorf("invalid kind %d", k)
	}
	return []byte(k.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (k *Kind) UnmarshalText(b []byte) error {
	for kk, s := range kindNames {
		if s == string(b) {
			*k = kk
			return nil
		}
	}
	return fmt.Errorf("unknown kind %q", b)
}

// NamespacedName names an object within its kind. Namespace is empty for
// cluster-scoped kinds.
type NamespacedName struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String returns "namespace/name", or just "name" for cluster-scoped objects.
func (n NamespacedName) String() string {
	if n.Namespace == "" {
		return n.Name
	}
	return n.Namespace + "/" + n.Name
}

// Key identifies any object in the model.
type Key struct {
	Kind      Kind   `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// NamespacedName returns the key without its kind.
func (k Key) NamespacedName() NamespacedName {
	return NamespacedName{Namespace: k.Namespace, Name: k.Name}
}

// String returns e.g. "Pod default/web" or "Node n1", the form used in errors.
func (k Key) String() string {
	return k.Kind.String() + " " + k.NamespacedName().String()
}

// Less orders keys by kind, then namespace, then name.
func (k Key) Less(o Key) bool {
	if k.Kind != o.Kind {
		return k.Kind < o.Kind
	}
	if k.Namespace != o.Namespace {
		return k.Namespace < o.Namespace
	}
	return k.Name < o.Name
}

// Object is one of the model's object types (*Namespace, *Pod, *Service,
// *EndpointSlice, *NetworkPolicy, *Node, *L7Policy,
// *ClusterNetworkPolicy). The set is closed so that State can
// hold every kind.
type Object interface {
	Key() Key
	isObject()
}

// Protocol is an L4 protocol as Kubernetes spells it.
type Protocol string

// Protocols Kubernetes allows on ports. Conversion defaults an empty protocol to TCP.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Protocols the datapath reports besides those of ports.
const (
	ProtocolICMP   Protocol = "ICMP"
	ProtocolICMPv6 Protocol = "ICMPv6"
)

// protocolNumbers are the IP protocol numbers of the protocols Sluice
// names: the one table between names and numbers (maps, events, policy).
var protocolNumbers = [...]struct {
	name Protocol
	num  uint8
}{
	{ProtocolTCP, unix.IPPROTO_TCP},
	{ProtocolUDP, unix.IPPROTO_UDP},
	{ProtocolSCTP, unix.IPPROTO_SCTP},
	{ProtocolICMP, unix.IPPROTO_ICMP},
	{ProtocolICMPv6, unix.IPPROTO_ICMPV6},
}

// Number is the protocol's IP protocol number; false for a name Sluice
// does not know (a ProtocolOf "proto-N" name reads back as N).
func (p Protocol) Number() (uint8, bool) {
	for _, e := range protocolNumbers {
		if e.name == p {
			return e.num, true
		}
	}
	var n uint8
	if _, err := fmt.Sscanf(string(p), "proto-%d", &n); err == nil {
		return n, true
	}
	return 0, false
}

// ProtocolOf names an IP protocol number: "proto-N" for one without a
// name here.
func ProtocolOf(n uint8) Protocol {
	for _, e := range protocolNumbers {
		if e.num == n {
			return e.name
		}
	}
	return Protocol("proto-" + strconv.Itoa(int(n)))
}

// PortRef is a port given either by number or by the name of a container port
// (Kubernetes' IntOrString for ports). At most one field is set; the zero value
// means "not given". It marshals to JSON as a number or a string, like Kubernetes.
type PortRef struct {
	Number uint16
	Name   string
}

// PortNumber returns a PortRef for a numeric port.
func PortNumber(n uint16) PortRef { return PortRef{Number: n} }

// PortName returns a PortRef for a named port.
func PortName(name string) PortRef { return PortRef{Name: name} }

// IsZero reports whether no port was given.
func (p PortRef) IsZero() bool { return p.Number == 0 && p.Name == "" }

// String returns the number or the name.
func (p PortRef) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Number))
}

// MarshalJSON encodes the port as a JSON number or string.
func (p PortRef) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(p.Number)
}

// UnmarshalJSON accepts a JSON number or string.
func (p *PortRef) UnmarshalJSON(b []byte) error {
	*p = PortRef{}
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.Name)
	}
	return json.Unmarshal(b, &p.Number)
}

// Namespace is a Kubernetes namespace. Labels always include
// kubernetes.io/metadata.name, which the API server sets and namespace
// selectors commonly use.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations keeps only keys starting with "sluice.io/" (such as
	// sluice.io/policy-audit): the others are unused.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Key implements Object.
func (n *Namespace) Key() Key { return Key{Kind: KindNamespace, Name: n.Name} }
func (*Namespace) isObject()  {}

// PodPhase is the pod lifecycle phase.
type PodPhase string

// Pod phases. Conversion maps an empty phase to Pending, as the API server
// does on create.
const (
	PodPending   PodPhase = "Pending"
	PodRunning   PodPhase = "Running"
	PodSucceeded PodPhase = "Succeeded"
	PodFailed    PodPhase = "Failed"
	PodUnknown   PodPhase = "Unknown"
)

// ContainerPort is a port declared by one of the pod's containers; named ports
// are what services' and policies' named target ports resolve against.
type ContainerPort struct {
	Name     string   `json:"name,omitempty"`
	Port     uint16   `json:"port"`
	Protocol Protocol `json:"protocol"`
}

// OwnerRef names an object that owns a pod; the controller owner gives the
// workload name shown in flows.
type OwnerRef struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Controller bool   `json:"controller,omitempty"`
}

// Pod is a Kubernetes pod.
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	NodeName    string            `json:"nodeName,omitempty"`
	HostNetwork bool              `json:"hostNetwork,omitempty"`
	Phase       PodPhase          `json:"phase"`
	// IPs are status.podIP followed by the other status.podIPs, deduplicated.
	IPs []netip.Addr `json:"ips,omitempty"`
	// Ports are the ports of all containers (including restartable init
	// containers, i.e. native sidecars), in declaration order.
	Ports  []ContainerPort `json:"ports,omitempty"`
	Owners []OwnerRef      `json:"owners,omitempty"`
}

// Key implements Object.
func (p *Pod) Key() Key { return Key{Kind: KindPod, Namespace: p.Namespace, Name: p.Name} }
func (*Pod) isObject()  {}

// Controller returns the owner that is the pod's controller, if any.
func (p *Pod) Controller() (OwnerRef, bool) {
	for _, o := range p.Owners {
		if o.Controller {
			return o, true
		}
	}
	return OwnerRef{}, false
}

// ServiceType is the Kubernetes service type.
type ServiceType string

// Service types. Conversion defaults an empty type to ClusterIP.
const (
	ServiceTypeClusterIP    ServiceType = "ClusterIP"
	ServiceTypeNodePort     ServiceType = "NodePort"
	ServiceTypeLoadBalancer ServiceType = "LoadBalancer"
	ServiceTypeExternalName ServiceType = "ExternalName"
)

// SessionAffinity is the service session affinity mode.
type SessionAffinity string

// Session affinity modes. Conversion defaults an empty value to None.
const (
	SessionAffinityNone     SessionAffinity = "None"
	SessionAffinityClientIP SessionAffinity = "ClientIP"
)

// TrafficPolicy is a service's external or internal traffic policy.
type TrafficPolicy string

// Traffic policies.
const (
	TrafficPolicyCluster TrafficPolicy = "Cluster"
	TrafficPolicyLocal   TrafficPolicy = "Local"
)

// ServicePort is one port of a service.
type ServicePort struct {
	Name     string   `json:"name,omitempty"`
	Protocol Protocol `json:"protocol"`
	Port     uint16   `json:"port"`
	// TargetPort is always set: conversion defaults it to Port as the API
	// server does.
	TargetPort PortRef `json:"targetPort"`
	// NodePort is 0 when the service has none.
	NodePort uint16 `json:"nodePort,omitempty"`
}

// Service is a Kubernetes service.
type Service struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Annotations keeps only keys starting with "sluice.io/" or
	// "service.kubernetes.io/": the others are unused and would make every
	// unrelated annotation edit a model change.
	Annotations map[string]string `json:"annotations,omitempty"`
	Type        ServiceType       `json:"type"`
	// Headless is true for clusterIP: None; ClusterIPs is then empty.
	Headless bool `json:"headless,omitempty"`
	// ClusterIPs are spec.clusterIP followed by the other spec.clusterIPs,
	// deduplicated.
	ClusterIPs []netip.Addr  `json:"clusterIPs,omitempty"`
	Ports      []ServicePort `json:"ports,omitempty"`
	// Selector is nil for services without a selector, whose endpoint slices
	// are managed by someone else.
	Selector        map[string]string `json:"selector,omitempty"`
	SessionAffinity SessionAffinity   `json:"sessionAffinity"`
	// SessionAffinityTimeoutSeconds is set only for ClientIP affinity
	// (default 10800, i.e. 3 hours, as in Kubernetes).
	SessionAffinityTimeoutSeconds uint32 `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// ExternalTrafficPolicy is set only for NodePort and LoadBalancer
	// services (default Cluster), as the API server does.
	ExternalTrafficPolicy TrafficPolicy `json:"externalTrafficPolicy,omitempty"`
	// InternalTrafficPolicy defaults to Cluster; empty for ExternalName.
	InternalTrafficPolicy TrafficPolicy `json:"internalTrafficPolicy,omitempty"`
	// ExternalIPs is spec.externalIPs.
	ExternalIPs []netip.Addr `json:"externalIPs,omitempty"`
	// LoadBalancerIPs are status.loadBalancer.ingress[].ip whose ipMode is
	// VIP or unset (with ipMode Proxy the load balancer terminates them).
	LoadBalancerIPs []netip.Addr `json:"loadBalancerIPs,omitempty"`
	// LoadBalancerSourceRanges is spec.loadBalancerSourceRanges.
	LoadBalancerSourceRanges []netip.Prefix `json:"loadBalancerSourceRanges,omitempty"`
	// HealthCheckNodePort is spec.healthCheckNodePort (LoadBalancer with
	// externalTrafficPolicy Local).
	HealthCheckNodePort uint16 `json:"healthCheckNodePort,omitempty"`
}

// Key implements Object.
func (s *Service) Key() Key { return Key{Kind: KindService, Namespace: s.Namespace, Name: s.Name} }
func (*Service) isObject()  {}

// AddressType is the address family of an endpoint slice.
type AddressType string

// Endpoint slice address types.
const (
	AddressTypeIPv4 AddressType = "IPv4"
	AddressTypeIPv6 AddressType = "IPv6"
	// AddressTypeFQDN slices are kept so that they are visible, but their
	// endpoints carry no addresses: Sluice (like kube-proxy) does not
	// load-balance to names.
	AddressTypeFQDN AddressType = "FQDN"
)

// EndpointPort is a port of an endpoint slice.
type EndpointPort struct {
	Name     string   `json:"name,omitempty"`
	Protocol Protocol `json:"protocol"`
	// Port 0 means all ports (the slice's port was not given).
	Port uint16 `json:"port,omitempty"`
}

// TargetRef is the object an endpoint stands for, usually a pod.
type TargetRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Endpoint is one backend of an endpoint slice.
//
// Conditions are resolved at conversion with Kubernetes semantics, because
// the API leaves them optional: a missing ready condition means ready; a
// missing serving condition means the same as ready; a missing terminating
// condition means not terminating.
type Endpoint struct {
	Addresses   []netip.Addr `json:"addresses,omitempty"`
	Ready       bool         `json:"ready"`
	Serving     bool         `json:"serving"`
	Terminating bool         `json:"terminating,omitempty"`
	NodeName    string       `json:"nodeName,omitempty"`
	TargetRef   *TargetRef   `json:"targetRef,omitempty"`
	Zone        string       `json:"zone,omitempty"`
}

// EndpointSlice is a discovery.k8s.io/v1 endpoint slice.
type EndpointSlice struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// ServiceName is the kubernetes.io/service-name label; empty if missing.
	ServiceName string         `json:"serviceName,omitempty"`
	AddressType AddressType    `json:"addressType"`
	Ports       []EndpointPort `json:"ports,omitempty"`
	Endpoints   []Endpoint     `json:"endpoints,omitempty"`
}

// Key implements Object.
func (e *EndpointSlice) Key() Key {
	return Key{Kind: KindEndpointSlice, Namespace: e.Namespace, Name: e.Name}
}
func (*EndpointSlice) isObject() {}

// PolicyType is the direction a network policy applies to.
type PolicyType string

// Policy types.
const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// IPBlock is a CIDR peer with exceptions.
type IPBlock struct {
	CIDR   netip.Prefix   `json:"cidr"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// Contains reports whether addr is in the block and not in an exception.
func (b *IPBlock) Contains(addr netip.Addr) bool {
	if !b.CIDR.Contains(addr) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(addr) {
			return false
		}
	}
	return true
}

// Peer is one entry of a rule's from/to list, with Kubernetes semantics:
// IPBlock is exclusive with the selectors; PodSelector alone selects pods in
// the policy's namespace; NamespaceSelector alone selects all pods in the
// matching namespaces; both together select matching pods in matching
// namespaces.
type Peer struct {
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock       `json:"ipBlock,omitempty"`
}

// PolicyPort is one entry of a rule's ports list.
type PolicyPort struct {
	Protocol Protocol `json:"protocol"`
	// Port is zero when the rule applies to all ports of Protocol.
	Port PortRef `json:"port,omitzero"`
	// EndPort, when non-zero, makes Port..EndPort an inclusive range; Port is
	// then a number.
	EndPort uint16 `json:"endPort,omitempty"`
}

// Rule is one ingress or egress rule. Empty Peers means all peers and empty
// Ports means all ports, as in Kubernetes; a policy with no rules in a
// direction it covers denies that direction.
type Rule struct {
	Peers []Peer       `json:"peers,omitempty"`
	Ports []PolicyPort `json:"ports,omitempty"`
}

// NetworkPolicy is a networking.k8s.io/v1 network policy.
type NetworkPolicy struct {
	Namespace   string        `json:"namespace"`
	Name        string        `json:"name"`
	PodSelector LabelSelector `json:"podSelector"`
	// PolicyTypes is never empty: conversion defaults it as the API server
	// does (Ingress always, plus Egress when egress rules are present), so
	// consumers need not guess whether an empty Egress list means "deny" or
	// "not covered".
	PolicyTypes []PolicyType `json:"policyTypes"`
	Ingress     []Rule       `json:"ingress,omitempty"`
	Egress      []Rule       `json:"egress,omitempty"`
}

// Key implements Object.
func (n *NetworkPolicy) Key() Key {
	return Key{Kind: KindNetworkPolicy, Namespace: n.Namespace, Name: n.Name}
}
func (*NetworkPolicy) isObject() {}

// Covers reports whether the policy applies to direction t.
func (n *NetworkPolicy) Covers(t PolicyType) bool {
	for _, pt := range n.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

// NodeAddressType is the type of a node address.
type NodeAddressType string

// Node address types.
const (
	NodeInternalIP  NodeAddressType = "InternalIP"
	NodeExternalIP  NodeAddressType = "ExternalIP"
	NodeHostname    NodeAddressType = "Hostname"
	NodeInternalDNS NodeAddressType = "InternalDNS"
	NodeExternalDNS NodeAddressType = "ExternalDNS"
)

// NodeAddress is one of a node's addresses. Address is a string because
// Hostname and DNS addresses are names.
type NodeAddress struct {
	Type    NodeAddressType `json:"type"`
	Address string          `json:"address"`
}

// Node is a Kubernetes node (or, on an edge host, the host itself).
type Node struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Addresses []NodeAddress     `json:"addresses,omitempty"`
	// PodCIDRs are spec.podCIDR followed by the other spec.podCIDRs, deduplicated.
	PodCIDRs []netip.Prefix `json:"podCIDRs,omitempty"`
}

// Key implements Object.
func (n *Node) Key() Key { return Key{Kind: KindNode, Name: n.Name} }
func (*Node) isObject()  {}
