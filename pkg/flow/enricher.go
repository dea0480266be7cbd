package flow

import (
	"net/netip"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// Enricher answers the questions the Converter asks about an event, from
// the agent's state at the time the event is read. It is called from the
// goroutine that calls Convert (the agent's event reader) and must not
// block on I/O: the datapath's ring buffer fills while it waits.
type Enricher interface {
	// LocalEndpoint returns the pod of this node behind a datapath
	// endpoint ID (the event's EndpointID).
	LocalEndpoint(id uint32) (Endpoint, bool)
	// EndpointByIP returns the owner of a cluster address: a pod of any
	// node, this node or another node. ok is false for addresses outside
	// the cluster, which the flow reports as reserved:world.
	EndpointByIP(ip netip.Addr) (Endpoint, bool)
	// EndpointByCgroup returns the pod whose process runs in a cgroup:
	// socket-LB events come from a process, not from an interface.
	EndpointByCgroup(cgroupID uint64) (Endpoint, bool)
	// IdentityLabels returns the security labels of an identity; used when
	// the Endpoint carries none and for peers known only by identity.
	IdentityLabels(id identity.ID) (identity.Labels, bool)
	// Service returns the service of a datapath frontend (service) ID.
	Service(frontendID uint32) (Service, bool)
	// PolicyRule returns the network policy rule behind a datapath rule ID.
	PolicyRule(ruleID uint32) (Rule, bool)
}

// Endpoint is what the agent knows about one end of a flow.
type Endpoint struct {
	// ID is the datapath endpoint ID of a pod on this node, 0 otherwise.
	ID uint32
	// Identity is the security identity the agent assigned. The datapath's
	// identity in the event, when it carries one, takes precedence: it is
	// the one the policy decision used.
	Identity identity.ID
	// Pod is the pod; nil for a node or this host. The converter reads its
	// namespace, name, labels and owners and never modifies it.
	Pod *model.Pod
	// Labels are the security labels. When empty, the converter asks
	// IdentityLabels, then falls back to the pod's own labels.
	Labels identity.Labels
}

// Service names a Kubernetes service.
type Service struct {
	Namespace string
	Name      string
}

// Rule is the network policy rule that decided a connection.
type Rule struct {
	// Namespace and Name name the policy object.
	Namespace string
	Name      string
	// Kind is the policy's kind as Hubble prints it after the name
	// ("NetworkPolicy"); Hubble omits policies with an empty kind.
	Kind string
	// Direction is the direction the rule belongs to; unknown means the
	// event's direction.
	Direction flowpb.TrafficDirection
	// MatchType is how the rule matched the peer (Hubble's
	// policy_match_type, printed as "policy-verdict:L3-L4").
	MatchType MatchType
	// Revision is the policy revision the rule belongs to, 0 if unknown.
	Revision uint64
	// Ref names the rule within the object when the object's name alone
	// does not say what decided ("cnp/guardrail ingress[2]": a
	// ClusterNetworkPolicy's rules have different actions); it becomes
	// the policy's RuleLabel label.
	Ref string
}

// RuleLabel is the label of a flow's policy that names the deciding rule
// (Rule.Ref).
const RuleLabel = "k8s:io.sluice.policy.rule"

// MatchType is how a policy rule matched, numbered as Cilium's monitor API
// (pkg/monitor/api.PolicyMatch*) numbers it in flow.policy_match_type.
type MatchType uint32

// Match types.
const (
	MatchNone      MatchType = 0 // no rule matched (default deny, audit)
	MatchL3Only    MatchType = 1 // the peer, any port
	MatchL3L4      MatchType = 2 // the peer and the port
	MatchL4Only    MatchType = 3 // the port, any peer
	MatchAll       MatchType = 4 // any peer, any port
	MatchL3Proto   MatchType = 5 // the peer and the protocol, any port
	MatchProtoOnly MatchType = 6 // the protocol, any peer and port
)
