package agent

import (
	"net/netip"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

// enricher answers the flow converter's questions from the agent's state
// at the time an event is read (flow.Enricher). It is asked twice per
// event, so its answers are lookups that allocate nothing: addresses are
// indexed once per model revision, endpoint IDs and cgroups are cached
// and checked against the current state.
type enricher struct {
	a *Agent

	mu    sync.Mutex
	rev   uint64
	snap  *model.State
	byIP  map[netip.Addr]*model.Pod
	nodes map[netip.Addr]string
	// byID caches endpoint ID → pod; an entry holds while the endpoint
	// manager still gives the pod that ID (IDOf is a map lookup, PodByID
	// a scan of every endpoint).
	byID map[uint32]model.NamespacedName
	// cgroups caches cgroup ID → pod for the model revision it was
	// found at; a cgroup that names no pod is asked again after
	// cgroupRetry (its pod's cgroup may be created after the pod).
	cgroups map[uint64]cgroupAnswer
}

type cgroupAnswer struct {
	pod model.NamespacedName
	ok  bool
	rev uint64
	at  time.Time
}

// cgroupRetry is how long the enricher trusts that a cgroup names no pod:
// finding out walks the cgroup tree.
const cgroupRetry = time.Second

// maxCached bounds the ID and cgroup caches; each starts over when full.
const maxCached = 4096

func newEnricher(a *Agent) *enricher {
	return &enricher{a: a, byID: map[uint32]model.NamespacedName{}, cgroups: map[uint64]cgroupAnswer{}}
}

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

// podByID returns the pod of a local endpoint ID.
func (e *enricher) podByID(id uint32) (model.NamespacedName, bool) {
	e.mu.Lock()
	nn, cached := e.byID[id]
	e.mu.Unlock()
	if cached {
		if cur, ok := e.a.eps.IDOf(nn); ok && cur == id {
			return nn, true
		}
	}
	nn, ok := e.a.eps.PodByID(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if !ok {
		delete(e.byID, id)
		return model.NamespacedName{}, false
	}
	if len(e.byID) >= maxCached {
		clear(e.byID)
	}
	e.byID[id] = nn
	return nn, true
}

// LocalEndpoint implements flow.Enricher.
func (e *enricher) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
	nn, ok := e.podByID(id)
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
	e.mu.Lock()
	ans, cached := e.cgroups[cgroupID]
	e.mu.Unlock()
	if !cached || ans.rev != snap.Revision || !ans.ok && time.Since(ans.at) > cgroupRetry {
		ans = cgroupAnswer{rev: snap.Revision, at: time.Now()}
		ans.pod, ans.ok = e.a.cgroups.pod(cgroupID, snap)
		e.mu.Lock()
		if len(e.cgroups) >= maxCached {
			clear(e.cgroups)
		}
		e.cgroups[cgroupID] = ans
		e.mu.Unlock()
	}
	nn, ok := ans.pod, ans.ok
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
	switch {
	case ref == policy.HostAllowRef:
		// Built in, not a NetworkPolicy object: the node reaches its pods.
		return flow.Rule{Name: "host-allow", Kind: "SluiceBuiltin", Direction: dir, MatchType: flow.MatchL3Only}, true
	case ref == policy.L7OpenRef:
		// Built in: no NetworkPolicy covers a pod with L7 rules.
		return flow.Rule{Name: ref.String(), Kind: "SluiceBuiltin", Direction: dir, MatchType: flow.MatchAll}, true
	case ref.L7:
		// A SluiceL7Policy's port entry: its peers and its port.
		r := flow.Rule{Namespace: ref.Policy.Namespace, Name: ref.Policy.Name, Kind: "SluiceL7Policy", Direction: dir, MatchType: flow.MatchL4Only}
		snap, _, _ := e.state()
		if p, ok := snap.L7Policies[ref.Policy]; ok && ref.Index >= 0 && ref.Index < len(p.Ports) && len(p.Ports[ref.Index].From) > 0 {
			r.MatchType = flow.MatchL3L4
		}
		return r, true
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

// flowSink turns datapath events into flows for the Hubble observer: it
// resolves each record when it is read and stores it compact; flows are
// built when a client reads them.
type flowSink struct {
	store *flow.Store
	conv  *flow.Converter
	// observe, if set, counts every flow by event type and verdict (metrics).
	observe func(eventType, verdict string)

	mu       sync.Mutex
	lostSeen uint64
}

// addRecord stores a record read from the ring now; epoch maps its
// timestamp to wall time. It allocates nothing once the record's ends
// have been seen (the agent reads every event this way).
func (s *flowSink) addRecord(rec *events.Record, epoch time.Time) {
	r := s.conv.Record(rec, epoch)
	s.store.AddRecord(&r)
	if s.observe != nil {
		s.observe(rec.Kind().String(), r.Verdict().String())
	}
}

// addEvent stores an event the agent made itself (a CT GC expiry).
func (s *flowSink) addEvent(ev *events.Event) {
	r := s.conv.RecordEvent(ev)
	s.store.AddRecord(&r)
	if s.observe != nil {
		s.observe(ev.Type.String(), r.Verdict().String())
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
