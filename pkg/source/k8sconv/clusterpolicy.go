package k8sconv

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	npv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/sluice-net/sluice/pkg/model"
)

// ClusterNetworkPolicies is the resource the API server serves
// ClusterNetworkPolicies under once their CRD (daemonset/) is installed.
var ClusterNetworkPolicies = schema.GroupVersionResource{Group: npv1alpha2.GroupName, Version: npv1alpha2.GroupVersion.Version,
	Resource: "clusternetworkpolicies"}

// ClusterNetworkPolicyKind is the kind's group, version and kind.
var ClusterNetworkPolicyKind = ClusterNetworkPolicies.GroupVersion().WithKind("ClusterNetworkPolicy")

// ClusterNetworkPolicy converts a policy.networking.k8s.io/v1alpha2
// ClusterNetworkPolicy, checking what the CRD's schema checks (the files
// source has no API server to do it): tier, priority 0-1000, actions,
// exactly one subject and one field per peer, CIDRs and ports. A peer
// kind Sluice cannot enforce (domainNames) is refused rather than read as
// matching nothing, which would let an admin's guardrail look applied
// when it is not.
func ClusterNetworkPolicy(in *npv1alpha2.ClusterNetworkPolicy) (*model.ClusterNetworkPolicy, error) {
	if err := checkMeta(&in.ObjectMeta, false); err != nil {
		return nil, err
	}
	out := &model.ClusterNetworkPolicy{Name: in.Name, Priority: in.Spec.Priority}
	switch t := model.ClusterTier(in.Spec.Tier); t {
	case model.TierAdmin, model.TierBaseline:
		out.Tier = t
	case "":
		return nil, required("spec.tier")
	default:
		return nil, fieldErrorf("spec.tier", "unsupported tier %q (want Admin or Baseline)", in.Spec.Tier)
	}
	if in.Spec.Priority < 0 || in.Spec.Priority > 1000 {
		return nil, fieldErrorf("spec.priority", "%d is out of range 0-1000", in.Spec.Priority)
	}
	subj, err := clusterPeer("spec.subject", in.Spec.Subject.Namespaces, in.Spec.Subject.Pods, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	out.Subject = subj
	if len(in.Spec.Ingress) > 25 {
		return nil, fieldErrorf("spec.ingress", "has %d rules, more than 25", len(in.Spec.Ingress))
	}
	if len(in.Spec.Egress) > 25 {
		return nil, fieldErrorf("spec.egress", "has %d rules, more than 25", len(in.Spec.Egress))
	}
	for i, r := range in.Spec.Ingress {
		f := idx("spec.ingress", i)
		rule := model.ClusterRule{Name: r.Name}
		if rule.Action, err = clusterAction(f+".action", r.Action); err != nil {
			return nil, err
		}
		if len(r.From) == 0 {
			return nil, required(f + ".from")
		}
		for j, p := range r.From {
			peer, err := clusterPeer(idx(f+".from", j), p.Namespaces, p.Pods, nil, nil, nil)
			if err != nil {
				return nil, err
			}
			rule.Peers = append(rule.Peers, peer)
		}
		if rule.Ports, err = clusterPorts(f+".protocols", r.Protocols); err != nil {
			return nil, err
		}
		out.Ingress = append(out.Ingress, rule)
	}
	for i, r := range in.Spec.Egress {
		f := idx("spec.egress", i)
		rule := model.ClusterRule{Name: r.Name}
		if rule.Action, err = clusterAction(f+".action", r.Action); err != nil {
			return nil, err
		}
		if len(r.To) == 0 {
			return nil, required(f + ".to")
		}
		named := false
		for _, p := range r.Protocols {
			named = named || p.DestinationNamedPort != ""
		}
		for j, p := range r.To {
			pf := idx(f+".to", j)
			var nets []string
			for _, n := range p.Networks {
				nets = append(nets, string(n))
			}
			peer, err := clusterPeer(pf, p.Namespaces, p.Pods, p.Nodes, nets, p.DomainNames)
			if err != nil {
				return nil, err
			}
			if named && !peer.SelectsPods() {
				return nil, fieldErrorf(pf, "destinationNamedPort in protocols selects pods' ports: it cannot be used with nodes or networks peers")
			}
			rule.Peers = append(rule.Peers, peer)
		}
		if rule.Ports, err = clusterPorts(f+".protocols", r.Protocols); err != nil {
			return nil, err
		}
		out.Egress = append(out.Egress, rule)
	}
	return out, nil
}

func clusterAction(field string, a npv1alpha2.ClusterNetworkPolicyRuleAction) (model.ClusterAction, error) {
	switch act := model.ClusterAction(a); act {
	case model.ActionAccept, model.ActionDeny, model.ActionPass:
		return act, nil
	case "":
		return "", required(field)
	}
	return "", fieldErrorf(field, "unsupported action %q (want Accept, Deny or Pass)", a)
}

// clusterPeer converts a subject or peer, of which exactly one field must
// be set.
func clusterPeer(field string, namespaces *metav1.LabelSelector, pods *npv1alpha2.NamespacedPod, nodes *metav1.LabelSelector,
	networks []string, domains []npv1alpha2.DomainName) (model.ClusterPeer, error) {
	var out model.ClusterPeer
	set := 0
	var err error
	if namespaces != nil {
		set++
		if out.NamespaceSelector, err = LabelSelector(field+".namespaces", namespaces); err != nil {
			return out, err
		}
	}
	if pods != nil {
		set++
		if out.NamespaceSelector, err = LabelSelector(field+".pods.namespaceSelector", &pods.NamespaceSelector); err != nil {
			return out, err
		}
		if out.PodSelector, err = LabelSelector(field+".pods.podSelector", &pods.PodSelector); err != nil {
			return out, err
		}
	}
	if nodes != nil {
		set++
		if out.Nodes, err = LabelSelector(field+".nodes", nodes); err != nil {
			return out, err
		}
	}
	if networks != nil {
		set++
		if len(networks) > 25 {
			return out, fieldErrorf(field+".networks", "has %d CIDRs, more than 25", len(networks))
		}
		for i, n := range networks {
			// The CRD refuses host bits (cidr(self) == cidr(self).masked()),
			// unlike NetworkPolicy's ipBlock: so does the files source.
			if p, err := netip.ParsePrefix(n); err == nil && p != p.Masked() {
				return out, fieldErrorf(idx(field+".networks", i), "%s has host bits set (want %s)", n, p.Masked())
			}
			p, err := parsePrefix(idx(field+".networks", i), n)
			if err != nil {
				return out, err
			}
			out.Networks = append(out.Networks, p)
		}
	}
	if domains != nil {
		return out, fieldErrorf(field+".domainNames", "domain name peers are not supported by Sluice: use networks")
	}
	switch {
	case set == 0:
		return out, fieldErrorf(field, "must set exactly one of namespaces, pods, nodes or networks")
	case set > 1:
		return out, fieldErrorf(field, "sets %d of namespaces, pods, nodes and networks; exactly one is allowed", set)
	}
	return out, nil
}

func clusterPorts(field string, in []npv1alpha2.ClusterNetworkPolicyProtocol) ([]model.ClusterPort, error) {
	var out []model.ClusterPort
	for i, p := range in {
		f := idx(field, i)
		set := 0
		var port model.ClusterPort
		var dp *npv1alpha2.Port
		var sub string
		if p.TCP != nil {
			set, port.Protocol, dp, sub = set+1, model.ProtocolTCP, p.TCP.DestinationPort, ".tcp"
		}
		if p.UDP != nil {
			set, port.Protocol, dp, sub = set+1, model.ProtocolUDP, p.UDP.DestinationPort, ".udp"
		}
		if p.SCTP != nil {
			set, port.Protocol, dp, sub = set+1, model.ProtocolSCTP, p.SCTP.DestinationPort, ".sctp"
		}
		if p.DestinationNamedPort != "" {
			set++
			port.Name = p.DestinationNamedPort
		}
		if set != 1 {
			return nil, fieldErrorf(f, "must set exactly one of tcp, udp, sctp or destinationNamedPort")
		}
		if port.Name == "" {
			pf := f + sub + ".destinationPort"
			if dp == nil {
				return nil, required(pf)
			}
			var err error
			switch {
			case dp.Number != 0 && dp.Range != nil:
				return nil, fieldErrorf(pf, "must set number or range, not both")
			case dp.Number != 0:
				if port.Port, err = portNumber(pf+".number", dp.Number); err != nil {
					return nil, err
				}
			case dp.Range != nil:
				if port.Port, err = portNumber(pf+".range.start", dp.Range.Start); err != nil {
					return nil, err
				}
				if port.EndPort, err = portNumber(pf+".range.end", dp.Range.End); err != nil {
					return nil, err
				}
				if port.EndPort <= port.Port {
					return nil, fieldErrorf(pf+".range", "start %d must be less than end %d", port.Port, port.EndPort)
				}
			default:
				return nil, &FieldError{Field: pf, Err: fmt.Errorf("must set number or range: %w", ErrRequired)}
			}
		}
		out = append(out, port)
	}
	return out, nil
}
