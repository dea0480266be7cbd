package agent

import (
	"net/netip"
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

// enricher answers the flow converter's questions from the agent's state
// at the time an event is read (flow.Enricher). Addresses are indexed once
// per model revision, not searched per event.
type enricher struct {
	a *Agent

	mu    sync.Mutex
	rev   uint64
	snap  *model.State
	byIP  map[netip.Addr]*model.Pod
	nodes map[netip.Addr]string
}

func newEnricher(a *Agent) *enricher { return &enricher{a: a} }

// state returns the model snapshot and the address indexes, rebuilt when
// the model changed.
func (e *enricher) state() (*model.State, map[netip.Addr]*model.Pod, map[netip.Addr]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rev := e.a.store.Revision(); e.snap == nil || rev != e.rev {
		snap := e.a.store.Snapshot()
		byIP := make(map[netip.Addr]*model.Pod, len(snap.Pods))
		for _, p := range snap.Pods {
			if p.HostNetwork || p.Phase == model.PodSucceeded || p.Phase == model.PodFailed {
				continue
			}
			for _, ip := range p.IPs {
				byIP[ip] = p
			}
		}
		nodes := map[netip.Addr]string{}
		for _, n := range snap.Nodes {
			for _, a := range n.Addresses {
				if ip, err := netip.ParseAddr(a.Address); err == nil {
					nodes[ip] = n.Name
				}
			}
		}
		e.rev, e.snap, e.byIP, e.nodes = rev, snap, byIP, nodes
	}
	return e.snap, e.byIP, e.nodes
}

func (e *enricher) podEndpoint(id uint32, p *model.Pod) flow.Endpoint {
	ep := flow.Endpoint{ID: id, Pod: p}
	if e.a.policy != nil {
		ep.Identity, _ = e.a.policy.PodIdentity(model.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	}
	return ep
}

// LocalEndpoint implements flow.Enricher.
func (e *enricher) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
	nn, ok := e.a.eps.PodByID(id)
	if !ok {
		return flow.Endpoint{}, false
	}
	snap, _, _ := e.state()
	p, ok := snap.Pods[nn]
	if !ok {
		return flow.Endpoint{}, false
	}
	return e.podEndpoint(id, p), true
}

// EndpointByIP implements flow.Enricher.
func (e *enricher) EndpointByIP(ip netip.Addr) (flow.Endpoint, bool) {
	_, byIP, nodes := e.state()
	if p, ok := byIP[ip]; ok {
		var id uint32
		if p.NodeName == e.a.opts.NodeName {
			id, _ = e.a.eps.IDOf(model.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
		return e.podEndpoint(id, p), true
	}
	if node, ok := nodes[ip]; ok {
		id := identity.RemoteNode
		if node == e.a.opts.NodeName {
			id = identity.Host
		}
		ls, _ := e.IdentityLabels(id)
		return flow.Endpoint{Identity: id, Labels: ls}, true
	}
	return flow.Endpoint{}, false
}

// EndpointByCgroup implements flow.Enricher.
func (e *enricher) EndpointByCgroup(cgroupID uint64) (flow.Endpoint, bool) {
	snap, _, _ := e.state()
	nn, ok := e.a.cgroups.pod(cgroupID, snap)
	if !ok {
		return flow.Endpoint{}, false
	}
	p, ok := snap.Pods[nn]
	if !ok {
		return flow.Endpoint{}, false
	}
	return e.podEndpoint(0, p), true
}

// IdentityLabels implements flow.Enricher.
func (e *enricher) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	if e.a.policy == nil {
		return nil, false
	}
	return e.a.policy.IdentityLabels(id)
}

// Service implements flow.Enricher.
func (e *enricher) Service(frontendID uint32) (flow.Service, bool) {
	nn, ok := e.a.lb.FrontendService(frontendID)
	if !ok {
		return flow.Service{}, false
	}
	return flow.Service{Namespace: nn.Namespace, Name: nn.Name}, true
}

// PolicyRule implements flow.Enricher: the rule, and how it matches its
// peers (from the policy as the model holds it now).
func (e *enricher) PolicyRule(ruleID uint32) (flow.Rule, bool) {
	if e.a.policy == nil {
		return flow.Rule{}, false
	}
	ref, ok := e.a.policy.Rule(ruleID)
	if !ok {
		return flow.Rule{}, false
	}
	dir := flowpb.TrafficDirection_INGRESS
	if ref.Direction == policy.Egress {
		dir = flowpb.TrafficDirection_EGRESS
	}
	if ref == policy.HostAllowRef {
		// Built in, not a NetworkPolicy object: the node reaches its pods.
		return flow.Rule{Name: "host-allow", Kind: "SluiceBuiltin", Direction: dir, MatchType: flow.MatchL3Only}, true
	}
	r := flow.Rule{Namespace: ref.Policy.Namespace, Name: ref.Policy.Name, Kind: "NetworkPolicy", Direction: dir}
	snap, _, _ := e.state()
	if np, ok := snap.NetworkPolicies[ref.Policy]; ok {
		rules := np.Ingress
		if ref.Direction == policy.Egress {
			rules = np.Egress
		}
		if ref.Index >= 0 && ref.Index < len(rules) {
			r.MatchType = matchType(rules[ref.Index])
		}
	}
	return r, true
}

// matchType classifies a rule as Hubble's policy_match_type does.
func matchType(r model.Rule) flow.MatchType {
	switch {
	case len(r.Peers) == 0 && len(r.Ports) == 0:
		return flow.MatchAll
	case len(r.Peers) == 0:
		return flow.MatchL4Only
	case len(r.Ports) == 0:
		return flow.MatchL3Only
	default:
		return flow.MatchL3L4
	}
}

// flowSink turns datapath events into flows for the Hubble observer.
type flowSink struct {
	store *flow.Store
	conv  *flow.Converter
	// observe, if set, counts every flow by event type and verdict (metrics).
	observe func(eventType, verdict string)

	mu       sync.Mutex
	lostSeen uint64
}

func (s *flowSink) add(ev *datapath.Event) {
	f := s.conv.Convert(ev)
	s.store.Add(f)
	if s.observe != nil {
		s.observe(ev.Type, f.GetVerdict().String())
	}
}

// lost reports the kernel's lost-event count: its growth becomes lost
// notices in the flow stream.
func (s *flowSink) lost(total uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if total > s.lostSeen {
		s.store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, total-s.lostSeen)
	}
	s.lostSeen = total
}
