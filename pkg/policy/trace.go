package policy

import (
	"fmt"
	"net/netip"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// What `sluice policy trace` asks of the computed policy: the decision an
// endpoint's entries give one new connection, and the policy of pods that
// are not endpoints of this node, computed as their own node's agent
// computes it.

// Peer kinds of a Match, in the order of precedence the datapath gives
// them when two lookups match equally long.
const (
	PeerAny      = 1
	PeerCIDR     = 2
	PeerIdentity = 3
)

// Match is the entry of an endpoint's policy that decides a new
// connection.
type Match struct {
	// Found is false when no entry matches: in an enforced direction, the
	// connection is denied (default deny).
	Found bool
	Entry Entry
	// Peer says which lookup matched: PeerIdentity, PeerCIDR or PeerAny.
	Peer int
	// Class is the CIDR class of the peer's address (0 when none), and
	// ClassPrefix the prefix that gave it.
	Class       identity.ID
	ClassPrefix netip.Prefix
}

// Decide looks a new connection up in the endpoint's entries the way the
// datapath looks it up in the maps they are written to (bpf/lib/policy.h):
// the peer's identity, the CIDR class of its address and any peer, each
// the longest (protocol, port prefix) match; across the three the longest
// match wins, then Redirect over Allow (not in a direction compiled with
// tiers), then the more specific peer. It
// does not look at enforcement, audit or overflow.
func (p *EndpointPolicy) Decide(dir Direction, proto uint8, port uint16, peer identity.ID, peerAddr netip.Addr) Match {
	var m Match
	if peerAddr.IsValid() {
		peerAddr = peerAddr.Unmap()
		for _, c := range p.CIDRs {
			if c.Direction == dir && c.Prefix.Contains(peerAddr) && (!m.ClassPrefix.IsValid() || c.Prefix.Bits() > m.ClassPrefix.Bits()) {
				m.Class, m.ClassPrefix = c.Class, c.Prefix
			}
		}
	}
	best, tiered := 0, p.Tiered(dir)
	try := func(id identity.ID, kind int) {
		for _, e := range p.Entries {
			if e.Identity != id || e.Direction != dir || !e.matches(proto, port) {
				continue
			}
			// The score of bpf/lib/policy.h's policy_try: a tiered
			// direction's entries (SL_POLICY_F_TIERED) get no Redirect
			// precedence.
			score := e.lpmLen()<<3 | kind
			if e.Verdict == Redirect && !tiered {
				score |= 4
			}
			if score > best {
				best = score
				m.Found, m.Entry, m.Peer = true, e, kind
			}
		}
	}
	try(peer, PeerIdentity)
	if m.Class != identity.Unknown {
		try(m.Class, PeerCIDR)
	}
	try(identity.Unknown, PeerAny)
	return m
}

// matches reports whether the entry's protocol and port prefix cover the
// connection's.
func (e Entry) matches(proto uint8, port uint16) bool {
	k := portKey{proto: e.Protocol, port: e.Port, plen: e.PortPrefixLen}
	return k.covers(portKey{proto: proto, port: port, plen: 16})
}

// lpmLen is the length of the entry's key in the datapath's trie: identity
// and direction (40 bits), then the protocol (8) and the port prefix.
func (e Entry) lpmLen() int {
	if e.Protocol == ProtoAny {
		return 40
	}
	return 48 + int(e.PortPrefixLen)
}

// PeerText describes a match's peer for people: "identity 300", "any peer",
// "cidr-class 16777217 (10.0.0.0/8)".
func (m Match) PeerText() string {
	switch m.Peer {
	case PeerIdentity:
		return "identity " + m.Entry.Identity.String()
	case PeerCIDR:
		return fmt.Sprintf("cidr-class %s (%s)", m.Class, m.ClassPrefix)
	case PeerAny:
		return "any peer"
	}
	return "none"
}

// PortsText is the entry's protocol and port prefix: "any", "TCP/80",
// "TCP/8000-8063".
func (e Entry) PortsText() string { return entryPorts(e.Protocol, e.Port, e.PortPrefixLen) }

// PolicyOf returns the policy of any pod of the cluster: a local
// endpoint's as computed, another node's pod's computed now, from the same
// identities and rules, as that node's agent computes it (with this
// agent's audit setting). The result is the engine's until its next call
// and must not be modified.
func (e *Engine) PolicyOf(pod model.NamespacedName) (*EndpointPolicy, error) {
	if es, ok := e.endpoints[pod]; ok {
		return es.policy, nil
	}
	ps, ok := e.pods[pod]
	if !ok {
		return nil, fmt.Errorf("pod %s is not in the model", pod)
	}
	if ps.ident == nil {
		return nil, fmt.Errorf("pod %s has no identity (host network, or finished): policy does not apply to it", pod)
	}
	p, _, _ := e.computeEndpoint(pod, ps)
	return p, nil
}

// IdentityOf returns the identity this node's ipcache gives an address:
// the longest matching prefix's, world when none matches.
func (e *Engine) IdentityOf(addr netip.Addr) identity.ID {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return identity.World
	}
	for bits := addr.BitLen(); bits >= 0; bits-- {
		if id, ok := e.ipc.Lookup(netip.PrefixFrom(addr, bits).Masked()); ok {
			return id
		}
	}
	return identity.World
}

// RuleName names a rule ID as verdict events do: "shop/allow-web
// ingress[0]", "host-allow".
func (e *Engine) RuleName(id RuleID) string { return e.ruleName(id) }

// IdentityLabelStrings returns an identity's labels as printed, reserved
// ones included.
func (e *Engine) IdentityLabelStrings(id identity.ID) []string { return e.identityRef(id).Labels }

// State returns the namespaces, nodes, pods and network policies the
// engine last applied. It is the engine's own and must not be modified.
func (e *Engine) State() *model.State { return e.state }

// Tiered reports whether the direction is compiled with
// ClusterNetworkPolicy tiers: every peer then has an entry, Deny included.
func (p *EndpointPolicy) Tiered(dir Direction) bool {
	if dir == Ingress {
		return p.IngressTiered
	}
	return p.EgressTiered
}

// RuleTier names the tier of a rule in a direction compiled with tiers:
// "Admin" or "Baseline" (a ClusterNetworkPolicy's), "NetworkPolicy", or
// "default" (no tier decided: RuleDefaultAllow, or NetworkPolicy's
// default deny, rule 0); "" for a SluiceL7Policy's redirect (some tier
// allowed the connection, the entry names the L7 rules it is handed to).
func (e *Engine) RuleTier(id RuleID) string {
	ref, ok := e.Rule(id)
	switch {
	case id == RuleNone || ref == DefaultAllowRef:
		return "default"
	case !ok, ref.L7:
		return ""
	case ref.Cluster:
		if p, ok := e.state.ClusterPolicies[ref.Policy.Name]; ok {
			return string(p.Tier)
		}
		return ""
	case ref == HostAllowRef:
		return "host"
	}
	return "NetworkPolicy"
}
