package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// Explanation is the effective policy of one endpoint for people, with
// identities resolved to their labels: what `sluice policy get POD` prints.
// It marshals to readable JSON.
type Explanation struct {
	Pod             string      `json:"pod"`
	Identity        IdentityRef `json:"identity"`
	IngressEnforced bool        `json:"ingressEnforced"`
	EgressEnforced  bool        `json:"egressEnforced"`
	// IngressTiered and EgressTiered: ClusterNetworkPolicy rules apply,
	// and every peer's decision is an entry (see EndpointPolicy).
	IngressTiered bool               `json:"ingressTiered,omitempty"`
	EgressTiered  bool               `json:"egressTiered,omitempty"`
	Audit         bool               `json:"audit"`
	Overflow      string             `json:"overflow,omitempty"`
	Policies      []string           `json:"policies,omitempty"`
	Rules         []RuleExplanation  `json:"rules,omitempty"`
	Entries       []EntryExplanation `json:"entries,omitempty"`
	// L7Policies are the SluiceL7Policies that select the pod; L7 the
	// proxy listeners its peers are redirected to.
	L7Policies []string        `json:"l7Policies,omitempty"`
	L7         []L7Explanation `json:"l7,omitempty"`
	// ClusterPolicies are the ClusterNetworkPolicies that select the pod,
	// in order of evaluation: "guardrail (Admin, priority 10)".
	ClusterPolicies []string `json:"clusterPolicies,omitempty"`
}

// L7Explanation is one proxy listener the pod's policy redirects peers
// to: which peers, on which port, and the HTTP rules it enforces.
type L7Explanation struct {
	// Port is the pod's port ("TCP/80"); ProxyPort the listener's (0: no
	// port could be allocated, the peers fail closed).
	Port      string `json:"port"`
	ProxyPort uint16 `json:"proxyPort"`
	Listener  string `json:"listener,omitempty"`
	Audit     bool   `json:"audit,omitempty"`
	// Peers are as in EntryExplanation: "any", "identity N", "cidr-class N".
	Peers []string `json:"peers"`
	// Sources are the policies' port entries the rules come from.
	Sources []string `json:"sources,omitempty"`
	// Rules are the allowed requests, "ns/policy/ports[i]/rules[j]: GET
	// path prefix /api/"; none: every request is denied.
	Rules []string `json:"rules,omitempty"`
}

// IdentityRef is an identity with its labels.
type IdentityRef struct {
	ID     identity.ID `json:"id"`
	Labels []string    `json:"labels,omitempty"`
}

// RuleExplanation is one rule that applies to the endpoint, with the peers
// it selects now.
type RuleExplanation struct {
	ID        RuleID            `json:"id"`
	Rule      string            `json:"rule"`
	Direction Direction         `json:"direction"`
	Peers     []PeerExplanation `json:"peers"`
	Ports     []string          `json:"ports"`
}

// PeerExplanation is one peer of a rule.
type PeerExplanation struct {
	// Selector describes a selector peer, or is "all peers" for a rule with
	// an empty from/to list.
	Selector string `json:"selector,omitempty"`
	// IPBlock is e.g. "10.0.0.0/8 except 10.1.0.0/16".
	IPBlock string `json:"ipBlock,omitempty"`
	// Identities are those the selector selects now.
	Identities []IdentityRef `json:"identities,omitempty"`
}

// EntryExplanation is one policy map entry.
type EntryExplanation struct {
	Direction Direction `json:"direction"`
	// Peer is "any", "identity N" or "cidr-class N".
	Peer       string   `json:"peer"`
	PeerLabels []string `json:"peerLabels,omitempty"`
	// CIDRs are the prefixes in the class, for a CIDR class.
	CIDRs     []string `json:"cidrs,omitempty"`
	Ports     string   `json:"ports"`
	Verdict   Verdict  `json:"verdict"`
	ProxyPort uint16   `json:"proxyPort,omitempty"`
	Rule      string   `json:"rule"`
}

// Explain returns the effective policy of a local endpoint.
func (e *Engine) Explain(pod model.NamespacedName) (*Explanation, error) {
	es, ok := e.endpoints[pod]
	if !ok {
		return nil, fmt.Errorf("pod %s is not an endpoint on node %s (it must be scheduled there, "+
			"not host-network, not finished, and have an IP)", pod, e.opts.NodeName)
	}
	p := es.policy
	x := &Explanation{
		Pod:             pod.String(),
		Identity:        e.identityRef(p.Identity),
		IngressEnforced: p.IngressEnforced,
		EgressEnforced:  p.EgressEnforced,
		IngressTiered:   p.IngressTiered,
		EgressTiered:    p.EgressTiered,
		Audit:           p.Audit,
	}
	if p.Overflow != nil {
		x.Overflow = p.Overflow.Error()
	}
	for _, nn := range es.applied {
		x.Policies = append(x.Policies, nn.String())
		pol := e.policies[nn]
		if pol == nil {
			continue
		}
		for _, dir := range []Direction{Ingress, Egress} {
			for _, rs := range pol.rules[dir] {
				x.Rules = append(x.Rules, e.explainRule(rs, dir, es.pod))
			}
		}
	}
	if p.IngressEnforced {
		x.Rules = append(x.Rules, RuleExplanation{
			ID: RuleHostAllow, Rule: HostAllowRef.String(), Direction: Ingress,
			Peers: []PeerExplanation{{Selector: "this node", Identities: []IdentityRef{e.identityRef(identity.Host)}}},
			Ports: []string{"any"},
		})
	}

	classCIDRs := map[identity.ID][]string{}
	for _, c := range p.CIDRs {
		classCIDRs[c.Class] = append(classCIDRs[c.Class], c.Prefix.String())
	}
	if p.IngressEnforced && slices.Contains(p.Entries, Entry{Direction: Ingress, Verdict: Allow, Rule: RuleL7Open}) {
		x.Rules = append(x.Rules, RuleExplanation{
			ID: RuleL7Open, Rule: L7OpenRef.String(), Direction: Ingress,
			Peers: []PeerExplanation{{Selector: "all peers (no NetworkPolicy covers the pod's ingress; its L7 ports are reached through the proxy only)"}},
			Ports: []string{"any"},
		})
	}
	for _, nn := range es.l7.applied {
		x.L7Policies = append(x.L7Policies, nn.String())
	}
	for _, nn := range es.cluster {
		if cs := e.cluster[nn.Name]; cs != nil {
			x.ClusterPolicies = append(x.ClusterPolicies, fmt.Sprintf("%s (%s, priority %d)", nn.Name, cs.p.Tier, cs.p.Priority))
		}
	}
	x.L7 = e.explainL7(p)
	for _, en := range p.Entries {
		ex := EntryExplanation{
			Direction: en.Direction,
			Ports:     entryPorts(en.Protocol, en.Port, en.PortPrefixLen),
			Verdict:   en.Verdict,
			ProxyPort: en.ProxyPort,
			Rule:      e.ruleName(en.Rule),
		}
		ex.Peer = peerName(en.Identity)
		switch {
		case en.Identity.IsLocalCIDR():
			ex.CIDRs = classCIDRs[en.Identity]
		case en.Identity != identity.Unknown:
			ex.PeerLabels = e.identityRef(en.Identity).Labels
		}
		x.Entries = append(x.Entries, ex)
	}
	return x, nil
}

// peerName names an entry's peer: "any", "identity N" or "cidr-class N".
func peerName(id identity.ID) string {
	switch {
	case id == identity.Unknown:
		return "any"
	case id.IsLocalCIDR():
		return "cidr-class " + id.String()
	}
	return "identity " + id.String()
}

// explainL7 groups the endpoint's redirect entries by listener.
func (e *Engine) explainL7(p *EndpointPolicy) []L7Explanation {
	type key struct {
		port  uint16
		proxy uint16
	}
	var order []key
	byKey := map[key]*L7Explanation{}
	var listeners map[uint16]*l7.Listener // built when first needed
	for _, en := range p.Entries {
		if en.Verdict != Redirect {
			continue
		}
		k := key{en.Port, en.ProxyPort}
		x := byKey[k]
		if x == nil {
			x = &L7Explanation{Port: entryPorts(en.Protocol, en.Port, en.PortPrefixLen), ProxyPort: en.ProxyPort}
			if listeners == nil {
				cfg := e.L7Config()
				listeners = map[uint16]*l7.Listener{}
				for i := range cfg.Listeners {
					listeners[cfg.Listeners[i].Port] = &cfg.Listeners[i]
				}
			}
			if l := listeners[en.ProxyPort]; l != nil {
				x.Listener, x.Audit = l.Name, l.Audit
				for _, s := range l.Sources {
					x.Sources = append(x.Sources, s.Namespace+"/"+s.Policy)
				}
				for _, r := range l.Rules {
					x.Rules = append(x.Rules, r.Ref.String()+": "+r.Describe())
				}
			}
			byKey[k] = x
			order = append(order, k)
		}
		x.Peers = append(x.Peers, peerName(en.Identity))
	}
	out := make([]L7Explanation, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

func (e *Engine) identityRef(id identity.ID) IdentityRef {
	r := IdentityRef{ID: id}
	if ls, ok := e.alloc.Labels(id); ok {
		r.Labels = ls.Strings()
	}
	return r
}

func (e *Engine) ruleName(id RuleID) string {
	if ref, ok := e.Rule(id); ok {
		return ref.String()
	}
	return "rule " + strconv.FormatUint(uint64(id), 10)
}

func (e *Engine) explainRule(rs *ruleState, dir Direction, self *model.Pod) RuleExplanation {
	x := RuleExplanation{ID: rs.r.id, Rule: rs.r.ref.String(), Direction: dir}
	if len(rs.rule.Peers) == 0 {
		x.Peers = []PeerExplanation{{Selector: "all peers"}}
	}
	for i, peer := range rs.rule.Peers {
		if b := peer.IPBlock; b != nil {
			s := b.CIDR.String()
			if len(b.Except) > 0 {
				ex := make([]string, len(b.Except))
				for j, p := range b.Except {
					ex[j] = p.String()
				}
				s += " except " + strings.Join(ex, ", ")
			}
			x.Peers = append(x.Peers, PeerExplanation{IPBlock: s})
			continue
		}
		cs := rs.peers[i]
		pe := PeerExplanation{Selector: cs.Selector().String()}
		for _, id := range cs.Selected() {
			pe.Identities = append(pe.Identities, e.identityRef(id))
		}
		x.Peers = append(x.Peers, pe)
	}
	if len(rs.rule.Ports) == 0 {
		x.Ports = []string{"any"}
	}
	for _, p := range rs.rule.Ports {
		s := string(p.Protocol)
		switch {
		case p.Port.Name != "" && dir == Ingress:
			var nums []string
			for _, cp := range self.Ports {
				if cp.Name == p.Port.Name && cp.Protocol == p.Protocol {
					nums = append(nums, strconv.Itoa(int(cp.Port)))
				}
			}
			if len(nums) == 0 {
				nums = []string{"not a port of this pod: matches nothing"}
			}
			s += "/" + p.Port.Name + " (" + strings.Join(nums, ", ") + ")"
		case p.Port.Name != "":
			s += "/" + p.Port.Name + " (resolved per destination pod)"
		case p.Port.Number == 0:
			s += "/any"
		case p.EndPort != 0:
			s += "/" + strconv.Itoa(int(p.Port.Number)) + "-" + strconv.Itoa(int(p.EndPort))
		default:
			s += "/" + strconv.Itoa(int(p.Port.Number))
		}
		x.Ports = append(x.Ports, s)
	}
	return x
}

// entryPorts prints an entry's protocol and port prefix: "any", "UDP/any",
// "TCP/80", "TCP/8000-8063".
func entryPorts(proto uint8, port uint16, plen uint8) string {
	if proto == ProtoAny {
		return "any"
	}
	s := protoName(proto) + "/"
	switch plen {
	case 0:
		return s + "any"
	case 16:
		return s + strconv.Itoa(int(port))
	}
	hi := uint32(port) + 1<<(16-plen) - 1
	return s + strconv.Itoa(int(port)) + "-" + strconv.FormatUint(uint64(hi), 10)
}
