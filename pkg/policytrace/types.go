package policytrace

import (
	"net/netip"
	"time"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// Query is one trace: a new connection from From to To.
type Query struct {
	// From is NAMESPACE/POD or an IP address.
	From string
	// To is NAMESPACE/POD, NAMESPACE/SERVICE or an IP address (a pod's,
	// a service's, any other), optionally with ":PORT"; "pod:" or "svc:"
	// in front says which of a pod and a service of the same name.
	To string
	// Port is the destination port; 0 takes To's.
	Port uint16
	// Protocol is TCP (the default), UDP or SCTP.
	Protocol model.Protocol
}

// Kinds of an End.
const (
	EndPod     = "pod"
	EndNode    = "node"
	EndAddress = "address"
	EndService = "service"
)

// End is one end of the traced connection.
type End struct {
	// Kind is EndPod, EndNode, EndAddress or EndService.
	Kind string
	// Name is the pod's or service's NAMESPACE/NAME, the node's name, or
	// the address.
	Name    string
	Address netip.Addr
	// Node is a pod's node; Local says it is this node, whose maps the
	// trace reads.
	Node  string
	Local bool
	// Identity is the end's identity as this node's ipcache gives it,
	// with its labels.
	Identity identity.ID
	Labels   []string
}

// ServiceHop is the service translation of a connection to a service.
type ServiceHop struct {
	Service  model.NamespacedName
	Frontend string // "10.96.0.10:53/UDP"
	Kind     string // ClusterIP, NodePort, ...
	// Backends are the model's backends that take new connections.
	Backends []Backend
	// MapBackends are those the frontend's slots in sl_lb_svc name, read
	// from the maps ("address:port"); MapsRead says they were read.
	MapBackends []string
	MapsRead    bool
}

// Backend is one backend candidate.
type Backend struct {
	Address netip.AddrPort
	Pod     model.NamespacedName
	Node    string
}

// Verdicts of a Decision and of a Path.
const (
	VerdictAllowed     = "allowed"
	VerdictRedirected  = "redirected"
	VerdictDenied      = "denied"
	VerdictAudit       = "audit" // denied, forwarded and reported: audit mode
	VerdictNotEnforced = "not-enforced"
)

// RuleDefaultDeny names the absence of an allowing rule in an enforced
// direction; RuleFailsClosed an endpoint whose policy did not fit.
const (
	RuleDefaultDeny = "default-deny"
	RuleFailsClosed = "fails-closed"
)

// Decision is one endpoint's policy decision on the connection.
type Decision struct {
	// Endpoint is the pod deciding, Node its node; Local says it is this
	// node's, and so checked against the maps.
	Endpoint  model.NamespacedName
	Node      string
	Local     bool
	Direction string // "ingress" or "egress"
	// Peer is the other end's identity as the endpoint's node sees it.
	Peer       identity.ID
	PeerLabels []string
	Enforced   bool
	Audit      bool
	// Verdict is one of the Verdict constants.
	Verdict string
	// Rule is the deciding rule ("shop/allow-web ingress[0]",
	// "host-allow"), RuleDefaultDeny or RuleFailsClosed; empty when the
	// direction is not enforced.
	Rule   string
	RuleID uint32
	// Tier is the tier of the deciding rule, when ClusterNetworkPolicy
	// rules apply: "Admin", "NetworkPolicy", "Baseline" or "default".
	Tier string `json:",omitempty"`
	// Entry is the matching entry: "identity 300 TCP/8080", "any peer
	// TCP/80", "cidr-class 16777217 (10.0.0.0/8) any".
	Entry     string
	ProxyPort uint16
	// Maps is what the datapath's maps say, for this node's endpoints.
	Maps *MapCheck
}

// MapCheck is an endpoint's decision read from the datapath's maps.
type MapCheck struct {
	EndpointID uint32
	// Flags are the endpoint's policy flags in sl_endpoints: ingress,
	// egress, audit, fails-closed.
	Flags []string
	Peer  identity.ID
	// Verdict, Rule, RuleID and Entry as in Decision.
	Verdict string
	Rule    string
	RuleID  uint32
	Entry   string
	// Agrees is false when the maps decide otherwise than the model; the
	// Result's Problems say how.
	Agrees bool
}

// Path is the connection to one destination: the server itself, or one
// backend of the service.
type Path struct {
	To       End
	Port     uint16
	Egress   *Decision // nil when the client is not a pod
	Ingress  *Decision // nil when the server is not a pod
	Verdict  string
	Problems []string
}

// Result is a trace's answer.
type Result struct {
	From     End
	To       End
	Protocol model.Protocol
	Port     uint16
	Service  *ServiceHop
	Paths    []Path
	// Verdict sums up the paths: allowed, denied, audit, redirected, or
	// "depends on the backend"; "refused" when a service has no backend.
	Verdict string
	// Problems are disagreements between the model and the datapath's
	// maps, as sentences. A trace with problems is an error to its user.
	Problems []string
}

// Verdicts of a Result besides those of a Path.
const (
	VerdictDepends = "depends on the backend"
	VerdictRefused = "refused"
)

// WhatIf is the outcome of evaluating a manifest not applied.
type WhatIf struct {
	// Policies are the NetworkPolicies the manifest adds ("ns/name") and
	// Replaced those among them that exist now.
	Policies []string
	Replaced []string
	// Trace is the query's answer under the manifest (the model only),
	// when a query was given.
	Trace *Result
	// Connections counts the distinct connections of the flow store that
	// were judged; Denied groups those the manifest would deny.
	Connections int
	Denied      []DeniedGroup
}

// DeniedGroup is the connections between two workloads (or pods, or
// addresses) on one port that a manifest would deny at one endpoint.
type DeniedGroup struct {
	From, To string
	Protocol model.Protocol
	Port     uint16
	// At is where the manifest denies them: "egress at shop/web-1",
	// "ingress at shop/db-0".
	At string
	// Now is how they are decided today: the allowing rule, or
	// not-enforced.
	Now         string
	Count       int
	First, Last time.Time
	Example     string
}
