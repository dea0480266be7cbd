package enrich

import (
	"cmp"
	"net/netip"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

// Model is the model as the enricher reads it (model.Store): pods and
// nodes by address, policies for their rules.
type Model interface {
	Revision() uint64
	Snapshot() *model.State
}

// Endpoints are this node's endpoint IDs (the endpoint manager).
type Endpoints interface {
	// IDOf is the endpoint ID of a local pod: a map lookup.
	IDOf(pod model.NamespacedName) (uint32, bool)
	// PodByID is the pod behind an endpoint ID; it may scan every
	// endpoint, so its answers are cached.
	PodByID(id uint32) (model.NamespacedName, bool)
}

// Identities are the security identities of pods and their labels (the
// policy reconciler).
type Identities interface {
	PodIdentity(pod model.NamespacedName) (identity.ID, bool)
	IdentityLabels(id identity.ID) (identity.Labels, bool)
}

// Services name the service of a datapath frontend ID (the service
// reconciler).
type Services interface {
	FrontendService(id uint32) (model.NamespacedName, bool)
}

// Rules name the policy rule behind a datapath rule ID (the policy
// reconciler).
type Rules interface {
	Rule(id uint32) (policy.RuleRef, bool)
}

// Cgroups name the pod whose processes run in a cgroup (cgroups.Pods); a
// miss may walk the cgroup tree, so answers are cached.
type Cgroups interface {
	Pod(cgroupID uint64, s *model.State) (model.NamespacedName, bool)
}

// Lookups are what the enricher asks; a nil one knows nothing.
type Lookups struct {
	// NodeName is this node: its pods have endpoint IDs, its addresses
	// are the host identity, other nodes' the remote-node identity.
	NodeName   string
	Model      Model
	Endpoints  Endpoints
	Identities Identities
	Services   Services
	Rules      Rules
	Cgroups    Cgroups
}

// Enricher implements flow.Enricher over Lookups.
type Enricher struct {
	l Lookups

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

var _ flow.Enricher = (*Enricher)(nil)

// New returns an enricher over l.
func New(l Lookups) *Enricher {
	if l.Model == nil {
		l.Model = model.NewStore()
	}
	var none nothing
	l.Endpoints = cmp.Or[Endpoints](l.Endpoints, none)
	l.Identities = cmp.Or[Identities](l.Identities, none)
	l.Services = cmp.Or[Services](l.Services, none)
	l.Rules = cmp.Or[Rules](l.Rules, none)
	l.Cgroups = cmp.Or[Cgroups](l.Cgroups, none)
	return &Enricher{l: l, byID: map[uint32]model.NamespacedName{}, cgroups: map[uint64]cgroupAnswer{}}
}

// nothing is each lookup that was not given: it knows nothing.
type nothing struct{}

func (nothing) IDOf(model.NamespacedName) (uint32, bool)             { return 0, false }
func (nothing) PodByID(uint32) (model.NamespacedName, bool)          { return model.NamespacedName{}, false }
func (nothing) PodIdentity(model.NamespacedName) (identity.ID, bool) { return 0, false }
func (nothing) IdentityLabels(identity.ID) (identity.Labels, bool)   { return nil, false }
func (nothing) FrontendService(uint32) (model.NamespacedName, bool) {
	return model.NamespacedName{}, false
}
func (nothing) Rule(uint32) (policy.RuleRef, bool) { return policy.RuleRef{}, false }
func (nothing) Pod(uint64, *model.State) (model.NamespacedName, bool) {
	return model.NamespacedName{}, false
}

// state returns the model snapshot and the address indexes, rebuilt when
// the model changed.
func (e *Enricher) state() (*model.State, map[netip.Addr]*model.Pod, map[netip.Addr]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rev := e.l.Model.Revision(); e.snap == nil || rev != e.rev {
		snap := e.l.Model.Snapshot()
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

func (e *Enricher) podEndpoint(id uint32, p *model.Pod) flow.Endpoint {
	ep := flow.Endpoint{ID: id, Pod: p}
	ep.Identity, _ = e.l.Identities.PodIdentity(model.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	return ep
}

// podByID returns the pod of a local endpoint ID.
func (e *Enricher) podByID(id uint32) (model.NamespacedName, bool) {
	e.mu.Lock()
	nn, cached := e.byID[id]
	e.mu.Unlock()
	if cached {
		if cur, ok := e.l.Endpoints.IDOf(nn); ok && cur == id {
			return nn, true
		}
	}
	nn, ok := e.l.Endpoints.PodByID(id)
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
func (e *Enricher) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
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
func (e *Enricher) EndpointByIP(ip netip.Addr) (flow.Endpoint, bool) {
	_, byIP, nodes := e.state()
	if p, ok := byIP[ip]; ok {
		var id uint32
		if p.NodeName == e.l.NodeName {
			id, _ = e.l.Endpoints.IDOf(model.NamespacedName{Namespace: p.Namespace, Name: p.Name})
		}
		return e.podEndpoint(id, p), true
	}
	if node, ok := nodes[ip]; ok {
		id := identity.RemoteNode
		if node == e.l.NodeName {
			id = identity.Host
		}
		ls, _ := e.IdentityLabels(id)
		return flow.Endpoint{Identity: id, Labels: ls}, true
	}
	return flow.Endpoint{}, false
}

// EndpointByCgroup implements flow.Enricher.
func (e *Enricher) EndpointByCgroup(cgroupID uint64) (flow.Endpoint, bool) {
	snap, _, _ := e.state()
	e.mu.Lock()
	ans, cached := e.cgroups[cgroupID]
	e.mu.Unlock()
	if !cached || ans.rev != snap.Revision || !ans.ok && time.Since(ans.at) > cgroupRetry {
		ans = cgroupAnswer{rev: snap.Revision, at: time.Now()}
		ans.pod, ans.ok = e.l.Cgroups.Pod(cgroupID, snap)
		e.mu.Lock()
		if len(e.cgroups) >= maxCached {
			clear(e.cgroups)
		}
		e.cgroups[cgroupID] = ans
		e.mu.Unlock()
	}
	if !ans.ok {
		return flow.Endpoint{}, false
	}
	p, ok := snap.Pods[ans.pod]
	if !ok {
		return flow.Endpoint{}, false
	}
	return e.podEndpoint(0, p), true
}

// IdentityLabels implements flow.Enricher.
func (e *Enricher) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	return e.l.Identities.IdentityLabels(id)
}

// Service implements flow.Enricher.
func (e *Enricher) Service(frontendID uint32) (flow.Service, bool) {
	nn, ok := e.l.Services.FrontendService(frontendID)
	if !ok {
		return flow.Service{}, false
	}
	return flow.Service{Namespace: nn.Namespace, Name: nn.Name}, true
}

// PolicyRule implements flow.Enricher: the rule, and how it matches its
// peers (from the policy as the model holds it now).
func (e *Enricher) PolicyRule(ruleID uint32) (flow.Rule, bool) {
	ref, ok := e.l.Rules.Rule(ruleID)
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
	case ref == policy.DefaultAllowRef:
		// Built in: no tier decided a direction ClusterNetworkPolicy
		// rules apply to. One rule ID serves both directions: the
		// event's is the rule's.
		return flow.Rule{Name: ref.String(), Kind: "SluiceBuiltin", MatchType: flow.MatchAll}, true
	case ref.Cluster:
		// A ClusterNetworkPolicy's rule: the object, and the rule in Ref
		// ("cnp/guardrail egress[1]"), since one object holds many rules
		// of different actions.
		r := flow.Rule{Name: ref.Policy.Name, Kind: "ClusterNetworkPolicy", Direction: dir, Ref: ref.String(), MatchType: flow.MatchL3Only}
		snap, _, _ := e.state()
		if p, ok := snap.ClusterPolicies[ref.Policy.Name]; ok {
			rules := p.Ingress
			if ref.Direction == policy.Egress {
				rules = p.Egress
			}
			if ref.Index >= 0 && ref.Index < len(rules) && len(rules[ref.Index].Ports) > 0 {
				r.MatchType = flow.MatchL3L4
			}
		}
		return r, true
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
