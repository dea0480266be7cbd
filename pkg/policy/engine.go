package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

type nsName = model.NamespacedName

// Engine holds the model objects policy depends on (namespaces, nodes,
// pods, network policies), the identities of all pods, the ipcache, and the
// computed policy of every local endpoint, and keeps them up to date as
// model changes arrive, recomputing only the endpoints a change can affect.
// See the package documentation for what triggers a recomputation.
//
// An Engine is not safe for concurrent use. The EndpointPolicy values it
// returns are never modified afterwards and can be handed to other
// goroutines.
type Engine struct {
	opts  Options
	alloc *identity.Allocator
	sc    *identity.SelectorCache
	ipc   *identity.IPCache

	// state holds the namespaces, nodes, pods and policies last applied.
	state *model.State

	pods   map[nsName]*podState
	nsPods map[string]map[nsName]*podState
	ids    map[identity.ID]*idState

	policies   map[nsName]*policyState
	nsPolicies map[string]map[nsName]*policyState
	// namedEgress are the policies with an egress rule that has a named
	// port: their endpoints depend on the addresses and ports of the pods
	// those rules select, not only on identities.
	namedEgress map[nsName]*policyState
	// selUsers counts, per cached selector, the peers of each policy using it.
	selUsers map[*identity.CachedSelector]map[nsName]int

	endpoints   map[nsName]*endpointState
	nsEndpoints map[string]map[nsName]*endpointState
	// policyEndpoints are the endpoints each policy applied to when they
	// were last computed.
	policyEndpoints map[nsName]map[nsName]struct{}

	ruleIDs  map[RuleRef]RuleID
	ruleRefs map[RuleID]RuleRef
	nextRule RuleID

	// L7 policies (l7.go), held like network policies.
	l7          map[nsName]*l7State
	nsL7        map[string]map[nsName]*l7State
	l7SelUsers  map[*identity.CachedSelector]map[nsName]int
	l7Endpoints map[nsName]map[nsName]struct{}
	// listeners are the proxy listeners the endpoints' entries name, by
	// proxy port, allocated from ports.
	listeners map[uint16]*listenerState
	ports     *l7.Ports

	// ClusterNetworkPolicies (cluster.go), by name; their selectors'
	// users and the endpoints they applied to are keyed by clusterKey.
	cluster          map[string]*clusterState
	clusterSelUsers  map[*identity.CachedSelector]map[nsName]int
	clusterEndpoints map[nsName]map[nsName]struct{}
	// addrEndpoints are the endpoints compiled with tiers whose entries
	// depend on pods' addresses.
	addrEndpoints map[nsName]struct{}

	// b is reused for every endpoint computation, to keep its maps' room.
	b *builder
	// applied is set after the first Apply, which frees the restored
	// identities it did not use.
	applied bool
}

// podState is a pod and its identity (nil when it has none).
type podState struct {
	pod   *model.Pod
	ident *identity.Identity
}

func (p *podState) id() identity.ID {
	if p == nil || p.ident == nil {
		return identity.Unknown
	}
	return p.ident.ID
}

type idState struct {
	ident *identity.Identity
	pods  map[nsName]*podState
}

type policyState struct {
	np          *model.NetworkPolicy
	covers      [3]bool         // by Direction
	rules       [3][]*ruleState // by Direction
	namedEgress bool
}

type ruleState struct {
	rule *model.Rule
	r    rule
	// peers parallels rule.Peers: the cached selector of each selector
	// peer, nil for ipBlock peers.
	peers       []*identity.CachedSelector
	namedEgress bool
}

type endpointState struct {
	pod     *model.Pod
	policy  *EndpointPolicy
	applied []nsName // policies that select the endpoint, sorted
	l7      endpointL7
	// cluster are the ClusterNetworkPolicies that select it.
	cluster []nsName
}

// NewEngine returns an empty engine. alloc may hold identities restored from
// a previous run (identity.Allocator.Restore); nil means a new allocator.
// Label sets keep their restored IDs when the first Apply (or Sync) sees
// them again, and restored IDs it does not use are freed after it, so that
// first call must carry the complete state (sources synced). The engine
// owns the allocator from then on: read it (e.g. to save a Snapshot) only
// between calls to the engine.
func NewEngine(opts Options, alloc *identity.Allocator) (*Engine, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if alloc == nil {
		alloc = identity.NewAllocator()
	}
	ports := opts.ProxyPorts
	if ports == nil {
		var err error
		if ports, err = l7.NewPorts(l7.DefaultPortRange); err != nil {
			return nil, err
		}
	}
	return &Engine{
		opts:             opts,
		alloc:            alloc,
		sc:               identity.NewSelectorCache(),
		ipc:              identity.NewIPCache(opts.NodeName),
		state:            &model.State{},
		pods:             map[nsName]*podState{},
		nsPods:           map[string]map[nsName]*podState{},
		ids:              map[identity.ID]*idState{},
		policies:         map[nsName]*policyState{},
		nsPolicies:       map[string]map[nsName]*policyState{},
		namedEgress:      map[nsName]*policyState{},
		selUsers:         map[*identity.CachedSelector]map[nsName]int{},
		endpoints:        map[nsName]*endpointState{},
		nsEndpoints:      map[string]map[nsName]*endpointState{},
		policyEndpoints:  map[nsName]map[nsName]struct{}{},
		ruleIDs:          map[RuleRef]RuleID{},
		ruleRefs:         map[RuleID]RuleRef{},
		nextRule:         firstRuleID,
		l7:               map[nsName]*l7State{},
		nsL7:             map[string]map[nsName]*l7State{},
		l7SelUsers:       map[*identity.CachedSelector]map[nsName]int{},
		l7Endpoints:      map[nsName]map[nsName]struct{}{},
		listeners:        map[uint16]*listenerState{},
		ports:            ports,
		cluster:          map[string]*clusterState{},
		clusterSelUsers:  map[*identity.CachedSelector]map[nsName]int{},
		clusterEndpoints: map[nsName]map[nsName]struct{}{},
		addrEndpoints:    map[nsName]struct{}{},
		b:                newBuilder(),
	}, nil
}

// Compute returns the policy of every local endpoint and the ipcache of a
// state from scratch, with a new allocator.
func Compute(state *model.State, opts Options) (map[nsName]*EndpointPolicy, map[netip.Prefix]identity.ID, error) {
	e, err := NewEngine(opts, nil)
	if err != nil {
		return nil, nil, err
	}
	res := e.Sync(state)
	out := make(map[nsName]*EndpointPolicy, len(e.endpoints))
	for nn, es := range e.endpoints {
		out[nn] = es.policy
	}
	if len(res.Errors) > 0 {
		return out, e.IPCache(), res.Errors[0]
	}
	return out, e.IPCache(), nil
}

// Sync brings the engine to state, applying the difference from what it
// holds. Kinds other than namespaces, nodes, pods and network policies are
// ignored.
func (e *Engine) Sync(state *model.State) Result {
	view := &model.State{}
	if state != nil {
		view = &model.State{
			Namespaces:      state.Namespaces,
			Nodes:           state.Nodes,
			Pods:            state.Pods,
			NetworkPolicies: state.NetworkPolicies,
			L7Policies:      state.L7Policies,
			ClusterPolicies: state.ClusterPolicies,
		}
	}
	return e.Apply(model.Diff(e.state, view))
}

// txn collects what one Apply touched.
type txn struct {
	pods       map[nsName]struct{}
	namespaces map[string]struct{}
	nodes      map[string]struct{}
	policies   map[nsName]struct{}
	l7         map[nsName]struct{}
	cluster    map[string]struct{}
	dirty      map[nsName]struct{}
	dirtySels  map[*identity.CachedSelector]struct{}
	errs       []error
}

// Apply applies model changes in order and returns what changed. Changes to
// kinds policy does not depend on (services, endpoint slices) are ignored.
func (e *Engine) Apply(changes []model.Change) Result {
	t := &txn{
		pods:       map[nsName]struct{}{},
		namespaces: map[string]struct{}{},
		nodes:      map[string]struct{}{},
		policies:   map[nsName]struct{}{},
		l7:         map[nsName]struct{}{},
		cluster:    map[string]struct{}{},
		dirty:      map[nsName]struct{}{},
		dirtySels:  map[*identity.CachedSelector]struct{}{},
	}
	for _, c := range changes {
		if c.Object == nil {
			continue
		}
		k := c.Object.Key()
		switch k.Kind {
		case model.KindNamespace:
			t.namespaces[k.Name] = struct{}{}
		case model.KindNode:
			t.nodes[k.Name] = struct{}{}
		case model.KindPod:
			t.pods[k.NamespacedName()] = struct{}{}
		case model.KindNetworkPolicy:
			t.policies[k.NamespacedName()] = struct{}{}
		case model.KindL7Policy:
			t.l7[k.NamespacedName()] = struct{}{}
		case model.KindClusterNetworkPolicy:
			t.cluster[k.Name] = struct{}{}
		default:
			continue
		}
		if c.Op == model.OpDelete {
			e.state.Delete(k)
		} else {
			e.state.Upsert(c.Object)
		}
	}

	// A namespace's labels are part of its pods' identities (so its pods
	// are re-identified), and its audit label is part of its endpoints'
	// policy. A label change re-identifies those endpoints anyway; marking
	// them here keeps the audit flag right should it ever come from
	// something that is not part of the identity.
	for ns := range t.namespaces {
		for nn := range e.nsPods[ns] {
			t.pods[nn] = struct{}{}
		}
		for nn := range e.nsEndpoints[ns] {
			t.dirty[nn] = struct{}{}
		}
	}
	e.updatePods(slices.SortedFunc(maps.Keys(t.pods), compareNames), t)
	for _, nn := range slices.SortedFunc(maps.Keys(t.policies), compareNames) {
		e.updatePolicy(nn, t)
	}
	for _, nn := range slices.SortedFunc(maps.Keys(t.l7), compareNames) {
		e.updateL7Policy(nn, t)
	}
	for _, name := range slices.Sorted(maps.Keys(t.cluster)) {
		e.updateClusterPolicy(name, t)
	}
	if len(t.nodes) > 0 {
		// nodes peers match nodes' addresses and labels, and a node's
		// address is no pod's in the ipcache (tiered entries decide
		// addresses as the ipcache identifies them).
		for _, cs := range e.cluster {
			if cs.hasNodesPeer() {
				for ep := range e.clusterEndpoints[clusterKey(cs.p.Name)] {
					t.dirty[ep] = struct{}{}
				}
			}
		}
		for ep := range e.addrEndpoints {
			t.dirty[ep] = struct{}{}
		}
	}
	for name := range t.nodes {
		if n := e.state.Nodes[name]; n != nil {
			e.ipc.SetNode(n)
		} else {
			e.ipc.DeleteNode(name)
		}
	}
	// Selectors that gained or lost identities: the endpoints of the
	// policies using them.
	for cs := range t.dirtySels {
		for pol := range e.selUsers[cs] {
			for ep := range e.policyEndpoints[pol] {
				t.dirty[ep] = struct{}{}
			}
		}
		for pol := range e.l7SelUsers[cs] {
			for ep := range e.l7Endpoints[pol] {
				t.dirty[ep] = struct{}{}
			}
		}
		for pol := range e.clusterSelUsers[cs] {
			for ep := range e.clusterEndpoints[pol] {
				t.dirty[ep] = struct{}{}
			}
		}
	}

	res := Result{Errors: t.errs}
	for _, nn := range slices.SortedFunc(maps.Keys(t.dirty), compareNames) {
		e.recompute(nn, &res)
	}
	e.retainListeners()
	if !e.applied {
		e.alloc.Prune()
		e.applied = true
	}
	res.IPCacheUpserts, res.IPCacheDeletes = e.ipc.Changes()
	return res
}

func compareNames(a, b nsName) int {
	if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// updatePods brings the pods named (sorted) up to date: identities, ipcache
// and the endpoints that depend on them. New identities are acquired for all
// pods before old ones are released, so pods trading label sets within one
// batch keep the IDs.
func (e *Engine) updatePods(names []nsName, t *txn) {
	type transition struct {
		nn       nsName
		old, new *podState
		sub      identity.Subject
		labels   identity.Labels // set when new needs an identity acquired
	}
	var trs []transition
	for _, nn := range names {
		old := e.pods[nn]
		tr := transition{nn: nn, old: old}
		if pod := e.state.Pods[nn]; pod != nil {
			tr.new = &podState{pod: pod}
			if identity.HasIdentity(pod) {
				tr.sub = identity.SubjectOf(pod, e.state.NamespaceLabels(pod.Namespace))
				labels := tr.sub.Labels()
				if old != nil && old.ident != nil && old.ident.Labels.Equal(labels) {
					tr.new.ident = old.ident
				} else {
					tr.labels = labels
				}
			}
		}
		if old == nil && tr.new == nil {
			continue
		}
		if old != nil && tr.new != nil && old.pod == tr.new.pod && old.ident == tr.new.ident && tr.labels == nil {
			continue // a namespace changed without changing this pod's identity
		}
		trs = append(trs, tr)
	}

	for i := range trs {
		tr := &trs[i]
		if tr.labels == nil {
			continue
		}
		id, err := e.alloc.Acquire(tr.labels)
		if err != nil {
			t.errs = append(t.errs, fmt.Errorf("pod %s: %w", tr.nn, err))
			continue
		}
		is := e.ids[id]
		if is == nil {
			is = &idState{
				ident: &identity.Identity{ID: id, Labels: tr.labels, Subject: tr.sub},
				pods:  map[nsName]*podState{},
			}
			e.ids[id] = is
			for _, cs := range e.sc.AddIdentity(is.ident) {
				t.dirtySels[cs] = struct{}{}
			}
		}
		tr.new.ident = is.ident
	}

	for _, tr := range trs {
		if oid := tr.old.id(); oid != identity.Unknown {
			delete(e.ids[oid].pods, tr.nn)
		}
		ns := tr.nn.Namespace
		if tr.new == nil {
			delete(e.pods, tr.nn)
			if m := e.nsPods[ns]; m != nil {
				delete(m, tr.nn)
				if len(m) == 0 {
					delete(e.nsPods, ns)
				}
			}
			e.ipc.DeletePod(tr.nn)
		} else {
			e.pods[tr.nn] = tr.new
			m := e.nsPods[ns]
			if m == nil {
				m = map[nsName]*podState{}
				e.nsPods[ns] = m
			}
			m[tr.nn] = tr.new
			if nid := tr.new.id(); nid != identity.Unknown {
				e.ids[nid].pods[tr.nn] = tr.new
			}
			e.ipc.SetPod(tr.new.pod, tr.new.id())
		}
		if (tr.old != nil && e.isLocal(tr.old.pod)) || (tr.new != nil && e.isLocal(tr.new.pod)) {
			t.dirty[tr.nn] = struct{}{}
		}
		if namedEgressRelevant(tr.old, tr.new) {
			e.markNamedEgress(tr.old, t)
			e.markNamedEgress(tr.new, t)
			// Tiered entries decide identities by their pods' addresses.
			for ep := range e.addrEndpoints {
				t.dirty[ep] = struct{}{}
			}
		}
	}

	for _, tr := range trs {
		oid := tr.old.id()
		if oid == identity.Unknown || oid == tr.new.id() {
			continue
		}
		// The allocator counts one reference per pod, so the last release is
		// the one that empties e.ids[oid].pods.
		if e.alloc.Release(oid) {
			delete(e.ids, oid)
			for _, cs := range e.sc.RemoveIdentity(oid) {
				t.dirtySels[cs] = struct{}{}
			}
		}
	}
}

// namedEgressRelevant reports whether a pod change can change per-pod
// named-port entries: the pod appeared or went as a destination, or its
// identity, addresses or ports changed.
func namedEgressRelevant(old, new *podState) bool {
	oa, na := old.id() != identity.Unknown, new.id() != identity.Unknown
	if oa != na {
		return true
	}
	if !oa {
		return false
	}
	return old.ident != new.ident || !slices.Equal(old.pod.IPs, new.pod.IPs) || !slices.Equal(old.pod.Ports, new.pod.Ports)
}

// markNamedEgress dirties the endpoints of policies whose named-port egress
// rules select the pod.
func (e *Engine) markNamedEgress(ps *podState, t *txn) {
	if ps.id() == identity.Unknown || len(ps.pod.IPs) == 0 {
		return
	}
	for nn, pol := range e.namedEgress {
		eps := e.policyEndpoints[nn]
		if len(eps) == 0 || !pol.selectsNamedEgressDestination(ps) {
			continue
		}
		for ep := range eps {
			t.dirty[ep] = struct{}{}
		}
	}
}

func (pol *policyState) selectsNamedEgressDestination(ps *podState) bool {
	for _, rs := range pol.rules[Egress] {
		if !rs.namedEgress {
			continue
		}
		if len(rs.rule.Peers) == 0 {
			return true
		}
		for i, peer := range rs.rule.Peers {
			if peer.IPBlock != nil {
				for _, a := range ps.pod.IPs {
					if peer.IPBlock.Contains(a) {
						return true
					}
				}
				continue
			}
			if rs.peers[i].Selector().Matches(&ps.ident.Subject) {
				return true
			}
		}
	}
	return false
}

// isLocal reports whether pod is an endpoint of this node, as
// model.State.LocalPods defines it.
func (e *Engine) isLocal(pod *model.Pod) bool {
	return pod != nil && pod.NodeName == e.opts.NodeName && !pod.HostNetwork && len(pod.IPs) > 0 &&
		pod.Phase != model.PodSucceeded && pod.Phase != model.PodFailed
}

// updatePolicy replaces a policy's compiled form and dirties the endpoints it
// applied to and those it applies to now.
func (e *Engine) updatePolicy(nn nsName, t *txn) {
	old := e.policies[nn]
	np := e.state.NetworkPolicies[nn]
	for ep := range e.policyEndpoints[nn] {
		t.dirty[ep] = struct{}{}
	}
	var ps *policyState
	if np != nil {
		for ep, es := range e.nsEndpoints[nn.Namespace] {
			if np.PodSelector.Matches(es.pod.Labels) {
				t.dirty[ep] = struct{}{}
			}
		}
		ps = e.compilePolicy(nn, np)
	}
	if old != nil {
		e.releasePolicy(nn, old, ps)
	}
	if ps == nil {
		delete(e.policies, nn)
		delete(e.namedEgress, nn)
		deleteIn(e.nsPolicies, nn.Namespace, nn)
		return
	}
	e.policies[nn] = ps
	putIn(e.nsPolicies, nn.Namespace, nn, ps)
	if ps.namedEgress {
		e.namedEgress[nn] = ps
	} else {
		delete(e.namedEgress, nn)
	}
}

func (e *Engine) compilePolicy(nn nsName, np *model.NetworkPolicy) *policyState {
	ps := &policyState{np: np}
	for _, dir := range []Direction{Ingress, Egress} {
		rules := np.Ingress
		pt := model.PolicyTypeIngress
		if dir == Egress {
			rules, pt = np.Egress, model.PolicyTypeEgress
		}
		if !np.Covers(pt) {
			continue // rules of a direction the policy does not cover are ignored
		}
		ps.covers[dir] = true
		for i := range rules {
			ref := RuleRef{Policy: nn, Direction: dir, Index: i}
			rs := &ruleState{
				rule:  &rules[i],
				r:     rule{id: e.ruleID(ref), ref: ref},
				peers: make([]*identity.CachedSelector, len(rules[i].Peers)),
			}
			for j, peer := range rules[i].Peers {
				if peer.IPBlock != nil {
					continue
				}
				rs.peers[j] = e.acquirePeer(e.selUsers, nn, peer)
			}
			if dir == Egress {
				for _, p := range rules[i].Ports {
					if p.Port.Name != "" {
						rs.namedEgress, ps.namedEgress = true, true
					}
				}
			}
			ps.rules[dir] = append(ps.rules[dir], rs)
		}
	}
	return ps
}

// releasePolicy drops what old holds: selector references, and the rule IDs
// that next (nil when the policy is gone) does not keep.
func (e *Engine) releasePolicy(nn nsName, old, next *policyState) {
	for _, dir := range []Direction{Ingress, Egress} {
		for i, rs := range old.rules[dir] {
			e.releaseRule(e.selUsers, nn, rs.peers, rs.r, next != nil && i < len(next.rules[dir]))
		}
	}
}

// releaseRule drops the selector references a rule of policy nn holds
// (peers, nil for address peers), and its rule ID unless keep (the policy's
// next version has a rule at the same place).
func (e *Engine) releaseRule(users map[*identity.CachedSelector]map[nsName]int, nn nsName, peers []*identity.CachedSelector, r rule, keep bool) {
	for _, cs := range peers {
		if cs != nil {
			e.releasePeer(users, nn, cs)
		}
	}
	if !keep {
		delete(e.ruleIDs, r.ref)
		delete(e.ruleRefs, r.id)
	}
}

// acquirePeer acquires the selector of a selector peer of policy nn, and
// counts nn among its users (users: e.selUsers or e.l7SelUsers), so that a
// change of its selection marks the policy's endpoints.
func (e *Engine) acquirePeer(users map[*identity.CachedSelector]map[nsName]int, nn nsName, peer model.Peer) *identity.CachedSelector {
	cs := e.sc.Acquire(identity.PeerSelector{
		Namespace: nn.Namespace, PodSelector: peer.PodSelector, NamespaceSelector: peer.NamespaceSelector,
	})
	u := users[cs]
	if u == nil {
		u = map[nsName]int{}
		users[cs] = u
	}
	u[nn]++
	return cs
}

// releasePeer undoes acquirePeer.
func (e *Engine) releasePeer(users map[*identity.CachedSelector]map[nsName]int, nn nsName, cs *identity.CachedSelector) {
	if u := users[cs]; u != nil {
		if u[nn]--; u[nn] <= 0 {
			delete(u, nn)
		}
		if len(u) == 0 {
			delete(users, cs)
		}
	}
	e.sc.Release(cs)
}

// putIn sets m[outer][k] = v, making the inner map when needed.
func putIn[K comparable, V any](m map[string]map[K]V, outer string, k K, v V) {
	in := m[outer]
	if in == nil {
		in = map[K]V{}
		m[outer] = in
	}
	in[k] = v
}

// deleteIn deletes m[outer][k], and the inner map when it is empty.
func deleteIn[K comparable, V any](m map[string]map[K]V, outer string, k K) {
	if in := m[outer]; in != nil {
		delete(in, k)
		if len(in) == 0 {
			delete(m, outer)
		}
	}
}

// ruleID returns the ID of ref, allocating the next unused one for a new
// rule. Like identities, IDs are not reused until the space wraps, so a
// verdict event never names a newer rule than the one that decided it.
func (e *Engine) ruleID(ref RuleRef) RuleID {
	if id, ok := e.ruleIDs[ref]; ok {
		return id
	}
	for {
		id := e.nextRule
		if e.nextRule == ^RuleID(0) {
			e.nextRule = firstRuleID
		} else {
			e.nextRule++
		}
		if _, used := e.ruleRefs[id]; !used {
			e.ruleIDs[ref] = id
			e.ruleRefs[id] = ref
			return id
		}
	}
}

// recompute brings one endpoint up to date and reports it if it changed.
func (e *Engine) recompute(nn nsName, res *Result) {
	ps := e.pods[nn]
	old := e.endpoints[nn]
	if old != nil {
		unlink(e.policyEndpoints, old.applied, nn)
		unlink(e.l7Endpoints, old.l7.applied, nn)
		unlink(e.clusterEndpoints, old.cluster, nn)
		delete(e.addrEndpoints, nn)
	}
	if ps == nil || !e.isLocal(ps.pod) {
		if old != nil {
			delete(e.endpoints, nn)
			if m := e.nsEndpoints[nn.Namespace]; m != nil {
				delete(m, nn)
				if len(m) == 0 {
					delete(e.nsEndpoints, nn.Namespace)
				}
			}
			res.Removed = append(res.Removed, nn)
		}
		return
	}
	pol, applied, l7x := e.computeEndpoint(nn, ps)
	link(e.policyEndpoints, applied, nn)
	link(e.l7Endpoints, l7x.applied, nn)
	link(e.clusterEndpoints, l7x.cluster, nn)
	if l7x.usesAddrs {
		e.addrEndpoints[nn] = struct{}{}
	}
	for _, err := range l7x.failed {
		res.Errors = append(res.Errors, fmt.Errorf("endpoint %s: %w", nn, err))
	}
	if old != nil && old.policy.Equal(pol) {
		pol = old.policy
	} else {
		res.Endpoints = append(res.Endpoints, pol)
	}
	es := &endpointState{pod: ps.pod, policy: pol, applied: applied, l7: l7x.endpointL7, cluster: l7x.cluster}
	e.endpoints[nn] = es
	m := e.nsEndpoints[nn.Namespace]
	if m == nil {
		m = map[nsName]*endpointState{}
		e.nsEndpoints[nn.Namespace] = m
	}
	m[nn] = es
}

// link records that endpoint ep is in each policy's set.
func link(sets map[nsName]map[nsName]struct{}, policies []nsName, ep nsName) {
	for _, p := range policies {
		m := sets[p]
		if m == nil {
			m = map[nsName]struct{}{}
			sets[p] = m
		}
		m[ep] = struct{}{}
	}
}

// unlink is the inverse of link.
func unlink(sets map[nsName]map[nsName]struct{}, policies []nsName, ep nsName) {
	for _, p := range policies {
		if m := sets[p]; m != nil {
			delete(m, ep)
			if len(m) == 0 {
				delete(sets, p)
			}
		}
	}
}

// namespaceAudit reports whether the namespace asks for audit mode.
func (e *Engine) namespaceAudit(ns string) bool {
	n, ok := e.state.Namespaces[ns]
	return ok && (n.Annotations[AuditAnnotation] == "true" || n.Labels[AuditLabel] == "true")
}

// endpointDeps is what an endpoint's computation depended on besides its
// NetworkPolicies.
type endpointDeps struct {
	endpointL7
	// cluster are the ClusterNetworkPolicies that select the endpoint;
	// usesAddrs is set when its tiered entries depend on pods' addresses.
	cluster   []nsName
	usesAddrs bool
}

// computeEndpoint compiles the policy of one local endpoint.
func (e *Engine) computeEndpoint(nn nsName, ps *podState) (*EndpointPolicy, []nsName, endpointDeps) {
	pod := ps.pod
	ep := &EndpointPolicy{
		Pod:      nn,
		Identity: ps.id(),
		Audit:    e.opts.Audit || e.namespaceAudit(pod.Namespace),
	}
	b := e.b
	b.reset()
	var x endpointDeps
	// A direction some ClusterNetworkPolicy rule applies to is compiled
	// with tiers (cluster.go), NetworkPolicy rules included.
	admin, baseline, clusterApplied := e.clusterRulesFor(pod)
	x.cluster = clusterApplied
	var tiered [3]bool
	var isolated [3]bool
	var npRules [3][]*ruleState
	for _, dir := range []Direction{Ingress, Egress} {
		tiered[dir] = len(admin[dir])+len(baseline[dir]) > 0
	}
	var applied []nsName
	for pnn, pol := range e.nsPolicies[pod.Namespace] {
		if !pol.np.PodSelector.Matches(pod.Labels) {
			continue
		}
		applied = append(applied, pnn)
		for _, dir := range []Direction{Ingress, Egress} {
			if !pol.covers[dir] {
				continue
			}
			isolated[dir] = true
			if dir == Ingress {
				ep.IngressEnforced = true
			} else {
				ep.EgressEnforced = true
			}
			if tiered[dir] {
				npRules[dir] = append(npRules[dir], pol.rules[dir]...)
				continue
			}
			for _, rs := range pol.rules[dir] {
				e.compileRule(b, ps, dir, rs)
			}
		}
	}
	slices.SortFunc(applied, compareNames)
	var l7ports map[uint16][]l7Entry
	l7ports, x.applied = e.l7Ports(pod)
	l7 := &l7Listeners{e: e, ep: ep, ports: l7ports, x: &x.endpointL7}
	if len(l7ports) > 0 && !ep.IngressEnforced && !tiered[Ingress] {
		// No NetworkPolicy covers the pod's ingress: every peer is
		// admitted, and ingress is enforced all the same, so that its L7
		// ports fail closed when reached around the proxy.
		ep.IngressEnforced = true
		b.put(entryKey{dir: Ingress}, entryVal{verdict: Allow, rule: rule{id: RuleL7Open, ref: L7OpenRef}})
	}
	if ep.IngressEnforced && !tiered[Ingress] {
		b.put(entryKey{id: identity.Host, dir: Ingress}, entryVal{verdict: Allow, rule: rule{id: RuleHostAllow, ref: HostAllowRef}})
	}
	cidrs := b.compileCIDRs()
	next := identity.LocalCIDRBase
	for _, c := range cidrs {
		next = max(next, c.Class+1)
	}
	for _, dir := range []Direction{Ingress, Egress} {
		if !tiered[dir] {
			continue
		}
		if dir == Ingress {
			ep.IngressEnforced, ep.IngressTiered = true, true
		} else {
			ep.EgressEnforced, ep.EgressTiered = true, true
		}
		td := e.tieredRules(ps, dir, admin[dir], baseline[dir], npRules[dir], isolated[dir])
		if dir == Ingress && len(l7ports) > 0 {
			// The tiers decide first; what they allow on an L7 port is
			// redirected (compileTiered).
			td.l7 = l7
		}
		tc, usesAddrs := e.compileTiered(b, td, next)
		x.usesAddrs = x.usesAddrs || usesAddrs
		for _, c := range tc {
			next = max(next, c.Class+1)
		}
		cidrs = append(cidrs, tc...)
	}
	slices.SortFunc(cidrs, compareCIDRs)
	if len(l7ports) > 0 && !tiered[Ingress] {
		e.compileL7(b, l7)
	}
	ep.Entries, ep.CIDRs = b.finishEntries(cidrs)
	if limit := e.opts.MaxEntriesPerEndpoint; limit > 0 {
		if n := len(ep.Entries) + len(ep.CIDRs); n > limit {
			ep.Overflow = &OverflowError{Pod: nn, Count: n, Limit: limit}
		}
	}
	return ep, applied, x
}

// compileRule adds one rule's entries for the endpoint self.
func (e *Engine) compileRule(b *builder, self *podState, dir Direction, rs *ruleState) {
	rp := resolvePorts(rs.rule.Ports, dir, self.pod)
	if len(rs.rule.Peers) == 0 {
		b.allow(0, dir, rp.keys, rs.r)
		if len(rp.named) > 0 {
			for _, d := range e.pods {
				e.allowNamed(b, dir, d, rp.named, rs.r, nil)
			}
		}
		return
	}
	for i, peer := range rs.rule.Peers {
		if blk := peer.IPBlock; blk != nil {
			b.allowCIDR(dir, blk.CIDR, blk.Except, rp.keys, rs.r)
			if len(rp.named) > 0 {
				for _, d := range e.pods {
					e.allowNamed(b, dir, d, rp.named, rs.r, blk)
				}
			}
			continue
		}
		ids := rs.peers[i].Selected()
		for _, id := range ids {
			b.allow(id, dir, rp.keys, rs.r)
		}
		if len(rp.named) > 0 {
			for _, id := range ids {
				for _, d := range e.ids[id].pods {
					e.allowNamed(b, dir, d, rp.named, rs.r, nil)
				}
			}
		}
	}
}

// allowNamed adds per-address CIDR contributions for the named egress ports
// as destination pod d resolves them: pods sharing an identity may give one
// name different numbers, so this cannot be an identity entry. Only d's
// addresses inside blk count when the peer is an ipBlock.
func (e *Engine) allowNamed(b *builder, dir Direction, d *podState, named []namedPort, r rule, blk *model.IPBlock) {
	if d.ident == nil || len(d.pod.IPs) == 0 {
		return
	}
	var keys []portKey
	for _, np := range named {
		keys = np.resolve(keys, d.pod)
	}
	if len(keys) == 0 {
		return
	}
	for _, a := range d.pod.IPs {
		if !a.IsValid() || (blk != nil && !blk.Contains(a)) {
			continue
		}
		a = a.Unmap()
		b.allowCIDR(dir, netip.PrefixFrom(a, a.BitLen()), nil, keys, r)
	}
}

// Endpoint returns the current policy of a local endpoint.
func (e *Engine) Endpoint(pod nsName) (*EndpointPolicy, bool) {
	es, ok := e.endpoints[pod]
	if !ok {
		return nil, false
	}
	return es.policy, true
}

// Endpoints returns the policies of all local endpoints, sorted by pod: the
// full desired state for a resync.
func (e *Engine) Endpoints() []*EndpointPolicy {
	out := make([]*EndpointPolicy, 0, len(e.endpoints))
	for _, nn := range slices.SortedFunc(maps.Keys(e.endpoints), compareNames) {
		out = append(out, e.endpoints[nn].policy)
	}
	return out
}

// IPCache returns a copy of the whole desired ipcache.
func (e *Engine) IPCache() map[netip.Prefix]identity.ID { return e.ipc.Map() }

// Identities returns the identity table, reserved identities first: what
// `sluice identity list` prints.
func (e *Engine) Identities() []identity.Allocation { return e.alloc.List() }

// PodIdentity returns the identity of any pod of the cluster.
func (e *Engine) PodIdentity(pod nsName) (identity.ID, bool) {
	ps, ok := e.pods[pod]
	if !ok || ps.id() == identity.Unknown {
		return identity.Unknown, false
	}
	return ps.id(), true
}

// IdentityLabels returns the labels of an identity, reserved ones included.
func (e *Engine) IdentityLabels(id identity.ID) (identity.Labels, bool) { return e.alloc.Labels(id) }

// Rule returns what a rule ID in an entry or event stands for.
func (e *Engine) Rule(id RuleID) (RuleRef, bool) {
	switch id {
	case RuleHostAllow:
		return HostAllowRef, true
	case RuleL7Open:
		return L7OpenRef, true
	case RuleDefaultAllow:
		return DefaultAllowRef, true
	}
	ref, ok := e.ruleRefs[id]
	return ref, ok
}
