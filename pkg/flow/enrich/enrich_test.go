package enrich

import (
	"net/netip"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
)

// One test per kind of lookup, each over plain struct fakes of the parts
// the agent hands the enricher.

// fakeModel is a model at a revision; it counts the snapshots taken.
type fakeModel struct {
	state     model.State
	snapshots int
}

func (m *fakeModel) Revision() uint64 { return m.state.Revision }

func (m *fakeModel) Snapshot() *model.State {
	m.snapshots++
	s := m.state
	return &s
}

// fakeEndpoints are this node's endpoint IDs; they count PodByID's scans.
type fakeEndpoints struct {
	ids   map[model.NamespacedName]uint32
	scans int
}

func (f *fakeEndpoints) IDOf(pod model.NamespacedName) (uint32, bool) {
	id, ok := f.ids[pod]
	return id, ok
}

func (f *fakeEndpoints) PodByID(id uint32) (model.NamespacedName, bool) {
	f.scans++
	for nn, i := range f.ids {
		if i == id {
			return nn, true
		}
	}
	return model.NamespacedName{}, false
}

type fakeIdentities struct {
	pods   map[model.NamespacedName]identity.ID
	labels map[identity.ID]identity.Labels
}

func (f fakeIdentities) PodIdentity(pod model.NamespacedName) (identity.ID, bool) {
	id, ok := f.pods[pod]
	return id, ok
}

func (f fakeIdentities) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	ls, ok := f.labels[id]
	return ls, ok
}

type fakeServices map[uint32]model.NamespacedName

func (f fakeServices) FrontendService(id uint32) (model.NamespacedName, bool) {
	nn, ok := f[id]
	return nn, ok
}

type fakeRules map[uint32]policy.RuleRef

func (f fakeRules) Rule(id uint32) (policy.RuleRef, bool) {
	r, ok := f[id]
	return r, ok
}

// fakeCgroups name pods by cgroup ID; they count the questions.
type fakeCgroups struct {
	pods  map[uint64]model.NamespacedName
	asked int
}

func (f *fakeCgroups) Pod(id uint64, _ *model.State) (model.NamespacedName, bool) {
	f.asked++
	nn, ok := f.pods[id]
	return nn, ok
}

var (
	web    = model.NamespacedName{Namespace: "shop", Name: "web-1"}
	db     = model.NamespacedName{Namespace: "shop", Name: "db-0"}
	remote = model.NamespacedName{Namespace: "shop", Name: "web-2"}
	hostNP = model.NamespacedName{Namespace: "kube-system", Name: "proxy"}
	done   = model.NamespacedName{Namespace: "shop", Name: "job-1"}
)

// cluster is two nodes: node-1 (this one) runs web-1, db-0, a
// host-network pod and a finished job; node-2 runs web-2.
func cluster() *fakeModel {
	pod := func(nn model.NamespacedName, node, ip string) *model.Pod {
		return &model.Pod{Namespace: nn.Namespace, Name: nn.Name, NodeName: node, Phase: model.PodRunning,
			IPs: []netip.Addr{netip.MustParseAddr(ip)}, Labels: map[string]string{"app": nn.Name}}
	}
	host := pod(hostNP, "node-1", "172.31.0.10")
	host.HostNetwork = true
	job := pod(done, "node-1", "10.244.1.9")
	job.Phase = model.PodSucceeded
	return &fakeModel{state: model.State{Revision: 1,
		Pods: map[model.NamespacedName]*model.Pod{
			web: pod(web, "node-1", "10.244.1.5"), db: pod(db, "node-1", "10.244.1.6"),
			remote: pod(remote, "node-2", "10.244.2.5"), hostNP: host, done: job,
		},
		Nodes: map[string]*model.Node{
			"node-1": {Name: "node-1", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "172.31.0.10"}}},
			"node-2": {Name: "node-2", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "172.31.0.11"}}},
		},
	}}
}

func identities() fakeIdentities {
	return fakeIdentities{
		pods: map[model.NamespacedName]identity.ID{web: 300, db: 301, remote: 300},
		labels: map[identity.ID]identity.Labels{
			identity.Host:       {{Source: identity.SourceReserved, Key: "host"}},
			identity.RemoteNode: {{Source: identity.SourceReserved, Key: "remote-node"}},
			300:                 {{Source: "k8s", Key: "app", Value: "web"}},
		},
	}
}

// Endpoint IDs: a local endpoint's pod with its identity; an ID the
// endpoint manager reassigned answers with the new pod; the scan behind
// PodByID runs once per ID, not once per event.
func TestLocalEndpoint(t *testing.T) {
	m := cluster()
	eps := &fakeEndpoints{ids: map[model.NamespacedName]uint32{web: 7, db: 8}}
	e := New(Lookups{NodeName: "node-1", Model: m, Endpoints: eps, Identities: identities()})

	ep, ok := e.LocalEndpoint(7)
	require.True(t, ok)
	require.Equal(t, uint32(7), ep.ID)
	require.Equal(t, web.Name, ep.Pod.Name)
	require.Equal(t, identity.ID(300), ep.Identity)
	for range 10 {
		_, ok = e.LocalEndpoint(7)
		require.True(t, ok)
	}
	require.Equal(t, 1, eps.scans, "the pod of an ID is found once, then checked with IDOf")

	_, ok = e.LocalEndpoint(99)
	require.False(t, ok, "an ID of no endpoint")

	// web-1 goes, db-0's endpoint gets ID 7.
	eps.ids = map[model.NamespacedName]uint32{db: 7}
	ep, ok = e.LocalEndpoint(7)
	require.True(t, ok)
	require.Equal(t, db.Name, ep.Pod.Name, "the cached answer is checked against the endpoint manager")
	require.Equal(t, identity.ID(301), ep.Identity)

	// An endpoint whose pod the model no longer has.
	eps.ids = map[model.NamespacedName]uint32{{Namespace: "shop", Name: "gone"}: 9}
	_, ok = e.LocalEndpoint(9)
	require.False(t, ok)
}

// Pods and nodes by IP: a local pod with its endpoint ID, a remote pod
// without one, this node's and other nodes' addresses as the reserved
// identities with their labels, and no answer for what is not in the
// cluster. The address index is built once per model revision.
func TestEndpointByIP(t *testing.T) {
	m := cluster()
	eps := &fakeEndpoints{ids: map[model.NamespacedName]uint32{web: 7}}
	e := New(Lookups{NodeName: "node-1", Model: m, Endpoints: eps, Identities: identities()})
	ip := netip.MustParseAddr

	ep, ok := e.EndpointByIP(ip("10.244.1.5"))
	require.True(t, ok)
	require.Equal(t, flow.Endpoint{ID: 7, Identity: 300, Pod: m.state.Pods[web]}, ep)

	ep, ok = e.EndpointByIP(ip("10.244.2.5"))
	require.True(t, ok)
	require.Equal(t, flow.Endpoint{ID: 0, Identity: 300, Pod: m.state.Pods[remote]}, ep, "another node's pod has no endpoint ID here")

	ep, ok = e.EndpointByIP(ip("172.31.0.10"))
	require.True(t, ok, "this node's address, also the host-network pod's")
	require.Equal(t, flow.Endpoint{Identity: identity.Host, Labels: identities().labels[identity.Host]}, ep)

	ep, ok = e.EndpointByIP(ip("172.31.0.11"))
	require.True(t, ok)
	require.Equal(t, flow.Endpoint{Identity: identity.RemoteNode, Labels: identities().labels[identity.RemoteNode]}, ep)

	_, ok = e.EndpointByIP(ip("10.244.1.9"))
	require.False(t, ok, "a finished pod's address may be reused: it names no pod")
	_, ok = e.EndpointByIP(ip("192.0.2.1"))
	require.False(t, ok, "outside the cluster (the flow says reserved:world)")
	require.Equal(t, 1, m.snapshots, "one snapshot and index per model revision")

	// A new pod in a new revision is found.
	m.state.Pods = map[model.NamespacedName]*model.Pod{db: {Namespace: db.Namespace, Name: db.Name, NodeName: "node-2",
		Phase: model.PodRunning, IPs: []netip.Addr{ip("10.244.2.9")}}}
	m.state.Revision++
	ep, ok = e.EndpointByIP(ip("10.244.2.9"))
	require.True(t, ok)
	require.Equal(t, db.Name, ep.Pod.Name)
	_, ok = e.EndpointByIP(ip("10.244.1.5"))
	require.False(t, ok, "web-1 is gone")
	require.Equal(t, 2, m.snapshots)
}

// Cgroups: a socket-LB event's process is placed in its pod; an answer
// holds for the model revision it was found at, so the cgroup tree is not
// walked per event.
func TestEndpointByCgroup(t *testing.T) {
	m := cluster()
	cg := &fakeCgroups{pods: map[uint64]model.NamespacedName{4242: web}}
	e := New(Lookups{NodeName: "node-1", Model: m, Identities: identities(), Cgroups: cg})

	ep, ok := e.EndpointByCgroup(4242)
	require.True(t, ok)
	require.Equal(t, flow.Endpoint{Identity: 300, Pod: m.state.Pods[web]}, ep, "no endpoint ID: a process, not an interface")
	_, ok = e.EndpointByCgroup(1)
	require.False(t, ok, "a cgroup of no pod (the node's own processes)")
	for range 5 {
		e.EndpointByCgroup(4242)
		e.EndpointByCgroup(1)
	}
	require.Equal(t, 2, cg.asked, "answers, found or not, are cached")

	m.state.Revision++
	_, ok = e.EndpointByCgroup(4242)
	require.True(t, ok)
	require.Equal(t, 3, cg.asked, "a new model revision asks again")

	// The cgroup's pod left the model.
	m.state.Pods = map[model.NamespacedName]*model.Pod{}
	m.state.Revision++
	_, ok = e.EndpointByCgroup(4242)
	require.False(t, ok)
}

// Identities: the labels of an identity, as the policy reconciler holds
// them.
func TestIdentityLabels(t *testing.T) {
	e := New(Lookups{Identities: identities()})
	ls, ok := e.IdentityLabels(300)
	require.True(t, ok)
	require.Equal(t, identities().labels[300], ls)
	_, ok = e.IdentityLabels(999)
	require.False(t, ok)
}

// Frontend → service.
func TestService(t *testing.T) {
	e := New(Lookups{Services: fakeServices{5: {Namespace: "shop", Name: "web"}}})
	s, ok := e.Service(5)
	require.True(t, ok)
	require.Equal(t, flow.Service{Namespace: "shop", Name: "web"}, s)
	_, ok = e.Service(6)
	require.False(t, ok)
}

// Rule names: the policy and direction of a datapath rule ID, how the
// rule matches its peers (Hubble's policy_match_type) as the model's
// policy says now, and the built-in rule that lets the node reach its pods.
func TestPolicyRule(t *testing.T) {
	m := cluster()
	allowWeb := model.NamespacedName{Namespace: "shop", Name: "allow-web"}
	peer := model.Peer{PodSelector: &model.LabelSelector{}}
	port := model.PolicyPort{Protocol: model.ProtocolTCP}
	m.state.NetworkPolicies = map[model.NamespacedName]*model.NetworkPolicy{allowWeb: {
		Namespace: allowWeb.Namespace, Name: allowWeb.Name,
		Ingress: []model.Rule{{Peers: []model.Peer{peer}, Ports: []model.PolicyPort{port}}, {Peers: []model.Peer{peer}}},
		Egress:  []model.Rule{{Ports: []model.PolicyPort{port}}, {}},
	}}
	rules := fakeRules{
		1:  {Policy: allowWeb, Direction: policy.Ingress, Index: 0},
		2:  {Policy: allowWeb, Direction: policy.Ingress, Index: 1},
		3:  {Policy: allowWeb, Direction: policy.Egress, Index: 0},
		4:  {Policy: allowWeb, Direction: policy.Egress, Index: 1},
		5:  {Policy: model.NamespacedName{Namespace: "shop", Name: "deleted"}, Direction: policy.Ingress, Index: 0},
		6:  policy.HostAllowRef,
		8:  {Policy: model.NamespacedName{Name: "guardrail"}, Direction: policy.Egress, Index: 1, Cluster: true},
		9:  {Policy: model.NamespacedName{Name: "guardrail"}, Direction: policy.Egress, Index: 0, Cluster: true},
		10: policy.DefaultAllowRef,
	}
	m.state.ClusterPolicies = map[string]*model.ClusterNetworkPolicy{"guardrail": {Name: "guardrail", Tier: model.TierAdmin,
		Egress: []model.ClusterRule{{Action: model.ActionPass}, {Action: model.ActionDeny, Ports: []model.ClusterPort{{Protocol: model.ProtocolTCP, Port: 80}}}}}}
	e := New(Lookups{Model: m, Rules: rules})
	named := func(dir flowpb.TrafficDirection, mt flow.MatchType) flow.Rule {
		return flow.Rule{Namespace: "shop", Name: "allow-web", Kind: "NetworkPolicy", Direction: dir, MatchType: mt}
	}
	for id, want := range map[uint32]flow.Rule{
		1: named(flowpb.TrafficDirection_INGRESS, flow.MatchL3L4),
		2: named(flowpb.TrafficDirection_INGRESS, flow.MatchL3Only),
		3: named(flowpb.TrafficDirection_EGRESS, flow.MatchL4Only),
		4: named(flowpb.TrafficDirection_EGRESS, flow.MatchAll),
		5: {Namespace: "shop", Name: "deleted", Kind: "NetworkPolicy", Direction: flowpb.TrafficDirection_INGRESS},
		6: {Name: "host-allow", Kind: "SluiceBuiltin", Direction: flowpb.TrafficDirection_INGRESS, MatchType: flow.MatchL3Only},
		// A ClusterNetworkPolicy's rules: the object, and the rule in Ref.
		8: {Name: "guardrail", Kind: "ClusterNetworkPolicy", Direction: flowpb.TrafficDirection_EGRESS, MatchType: flow.MatchL3L4,
			Ref: "cnp/guardrail egress[1]"},
		9: {Name: "guardrail", Kind: "ClusterNetworkPolicy", Direction: flowpb.TrafficDirection_EGRESS, MatchType: flow.MatchL3Only,
			Ref: "cnp/guardrail egress[0]"},
		10: {Name: "default-allow", Kind: "SluiceBuiltin", MatchType: flow.MatchAll},
	} {
		got, ok := e.PolicyRule(id)
		require.True(t, ok, "rule %d", id)
		require.Equal(t, want, got, "rule %d", id)
	}
	_, ok := e.PolicyRule(7)
	require.False(t, ok)
}

// A lookup the enricher was not given knows nothing: every answer is
// "unknown", never a panic.
func TestMissingLookupsKnowNothing(t *testing.T) {
	e := New(Lookups{})
	_, ok := e.LocalEndpoint(7)
	require.False(t, ok)
	_, ok = e.EndpointByIP(netip.MustParseAddr("10.244.1.5"))
	require.False(t, ok)
	_, ok = e.EndpointByCgroup(4242)
	require.False(t, ok)
	_, ok = e.IdentityLabels(300)
	require.False(t, ok)
	_, ok = e.Service(5)
	require.False(t, ok)
	_, ok = e.PolicyRule(1)
	require.False(t, ok)
}
