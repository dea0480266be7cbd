package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// Explanation is the effective policy of one endpoint for people, with
// identities resolved to their labels: what `sluice policy get POD` prints.
// It marshals to readable JSON.
type Explanation struct {
	Pod             string             `json:"pod"`
	Identity        IdentityRef        `json:"identity"`
	IngressEnforced bool               `json:"ingressEnforced"`
	EgressEnforced  bool               `json:"egressEnforced"`
	Audit           bool               `json:"audit"`
	Overflow        string             `json:"overflow,omitempty"`
	Policies        []string           `json:"policies,omitempty"`
	Rules           []RuleExplanation  `json:"rules,omitempty"`
	Entries         []EntryExplanation `json:"entries,omitempty"`
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
	CIDRs   []string `json:"cidrs,omitempty"`
	Ports   string   `json:"ports"`
	Verdict Verdict  `json:"verdict"`
	Rule    string   `json:"rule"`
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
	for _, en := range p.Entries {
		ex := EntryExplanation{
			Direction: en.Direction,
			Ports:     entryPorts(en.Protocol, en.Port, en.PortPrefixLen),
			Verdict:   en.Verdict,
			Rule:      e.ruleName(en.Rule),
		}
		switch {
		case en.Identity == identity.Unknown:
			ex.Peer = "any"
		case en.Identity.IsLocalCIDR():
			ex.Peer = "cidr-class " + en.Identity.String()
			ex.CIDRs = classCIDRs[en.Identity]
		default:
			ex.Peer = "identity " + en.Identity.String()
			ex.PeerLabels = e.identityRef(en.Identity).Labels
		}
		x.Entries = append(x.Entries, ex)
	}
	return x, nil
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
