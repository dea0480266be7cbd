package model

import "net/netip"

// ClusterNetworkPolicy is a policy.networking.k8s.io/v1alpha2
// ClusterNetworkPolicy (sigs.k8s.io/network-policy-api): a cluster-scoped
// policy in the Admin tier (decided before NetworkPolicy, which cannot
// override it) or the Baseline tier (decided only where no NetworkPolicy
// isolates the pod). Within a tier, a lower Priority is decided first, and
// within one policy its rules in order; the first matching rule's action
// decides (Pass skips the rest of the tier).
//
// Conversion has validated it (tier, priority, actions, exactly one
// subject and one field per peer, CIDRs, ports) so consumers need not
// check again.
type ClusterNetworkPolicy struct {
	Name     string        `json:"name"`
	Tier     ClusterTier   `json:"tier"`
	Priority int32         `json:"priority"`
	Subject  ClusterPeer   `json:"subject"`
	Ingress  []ClusterRule `json:"ingress,omitempty"`
	Egress   []ClusterRule `json:"egress,omitempty"`
}

// Key implements Object.
func (p *ClusterNetworkPolicy) Key() Key { return Key{Kind: KindClusterNetworkPolicy, Name: p.Name} }
func (*ClusterNetworkPolicy) isObject()  {}

// ClusterTier is the tier of a ClusterNetworkPolicy.
type ClusterTier string

// Tiers.
const (
	TierAdmin    ClusterTier = "Admin"
	TierBaseline ClusterTier = "Baseline"
)

// ClusterAction is what a ClusterNetworkPolicy rule does with the traffic
// it matches.
type ClusterAction string

// Actions.
const (
	ActionAccept ClusterAction = "Accept"
	ActionDeny   ClusterAction = "Deny"
	// ActionPass ends the rule's tier: an Admin Pass leaves the decision to
	// NetworkPolicy (then Baseline), a Baseline Pass to the default (allow).
	ActionPass ClusterAction = "Pass"
)

// ClusterRule is one ingress or egress rule.
type ClusterRule struct {
	// Name is the rule's optional name (spec's name), for people.
	Name   string        `json:"name,omitempty"`
	Action ClusterAction `json:"action"`
	// Peers are from (ingress) or to (egress); never empty.
	Peers []ClusterPeer `json:"peers"`
	// Ports are spec's protocols; empty is every protocol and port.
	Ports []ClusterPort `json:"ports,omitempty"`
}

// ClusterPeer is a subject or a peer: exactly one of namespaces (the
// pods of the namespaces NamespaceSelector selects, PodSelector nil),
// pods (NamespaceSelector and PodSelector both set), Nodes (the addresses
// of the nodes it selects; egress) or Networks (egress).
type ClusterPeer struct {
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	Nodes             *LabelSelector `json:"nodes,omitempty"`
	Networks          []netip.Prefix `json:"networks,omitempty"`
}

// SelectsPods reports whether the peer selects pods (namespaces or pods).
func (p *ClusterPeer) SelectsPods() bool { return p.NamespaceSelector != nil }

// MatchesPod reports whether a pods or namespaces peer (or a subject)
// selects a pod with these labels in a namespace with nsLabels.
func (p *ClusterPeer) MatchesPod(podLabels, nsLabels map[string]string) bool {
	if p.NamespaceSelector == nil || !p.NamespaceSelector.Matches(nsLabels) {
		return false
	}
	return p.PodSelector == nil || p.PodSelector.Matches(podLabels)
}

// ClusterPort is one entry of a rule's protocols: a protocol's port
// (Port, or Port..EndPort), or a destination container port by Name
// (any protocol the pod gives the name).
type ClusterPort struct {
	// Protocol is TCP, UDP or SCTP; empty when Name is set.
	Protocol Protocol `json:"protocol,omitempty"`
	Port     uint16   `json:"port,omitempty"`
	// EndPort, when non-zero, makes Port..EndPort an inclusive range.
	EndPort uint16 `json:"endPort,omitempty"`
	Name    string `json:"name,omitempty"`
}
