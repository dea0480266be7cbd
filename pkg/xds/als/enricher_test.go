package als

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// The node's state in the tests: node-a runs web (endpoint 12) and db
// (endpoint 14), node-b runs frontend; 203.0.113.9 is outside the
// cluster.
//
//	shop/web-7d9f8c6b5d-x2x4q  10.244.1.5  node-a  Deployment web
//	shop/db-0                  10.244.1.7  node-a  StatefulSet db
//	shop/frontend-6c5b9-k2j4m  10.244.2.9  node-b  Deployment frontend
//	node-a 192.168.0.1, node-b 192.168.0.2
func testState() *model.State {
	pod := func(name, node, ip, app, ownerKind, owner string) *model.Pod {
		p := &model.Pod{
			Namespace: "shop", Name: name, NodeName: node, Phase: model.PodRunning,
			Labels: map[string]string{"app": app}, IPs: []netip.Addr{netip.MustParseAddr(ip)},
			Owners: []model.OwnerRef{{Kind: ownerKind, Name: owner, Controller: true}},
		}
		// A Deployment's pod: its ReplicaSet's name ends in the hash.
		if _, hash, ok := strings.Cut(owner, "-"); ok && ownerKind == "ReplicaSet" {
			p.Labels["pod-template-hash"] = hash
		}
		return p
	}
	pods := []*model.Pod{
		pod("web-7d9f8c6b5d-x2x4q", "node-a", "10.244.1.5", "web", "ReplicaSet", "web-7d9f8c6b5d"),
		pod("db-0", "node-a", "10.244.1.7", "db", "StatefulSet", "db"),
		pod("frontend-6c5b9-k2j4m", "node-b", "10.244.2.9", "frontend", "ReplicaSet", "frontend-6c5b9"),
	}
	s := &model.State{Pods: map[model.NamespacedName]*model.Pod{}, Nodes: map[string]*model.Node{}}
	for _, p := range pods {
		s.Pods[model.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
	}
	for name, addr := range map[string]string{"node-a": "192.168.0.1", "node-b": "192.168.0.2"} {
		s.Nodes[name] = &model.Node{Name: name, Addresses: []model.NodeAddress{{Type: "InternalIP", Address: addr}}}
	}
	return s
}

// modelEnricher answers the converter from a model state as the agent's
// enricher does: pods by address with the identities of their labels
// (allocated in name order), local endpoint IDs, node addresses as the
// host or a remote node.
type modelEnricher struct {
	node  string
	byIP  map[netip.Addr]flow.Endpoint
	nodes map[netip.Addr]string
	ids   *identity.Allocator
}

func newModelEnricher(t testing.TB, s *model.State, node string, endpointIDs map[string]uint32) *modelEnricher {
	e := &modelEnricher{node: node, byIP: map[netip.Addr]flow.Endpoint{}, nodes: map[netip.Addr]string{}, ids: identity.NewAllocator()}
	var names []model.NamespacedName
	for nn := range s.Pods {
		names = append(names, nn)
	}
	slices.SortFunc(names, func(a, b model.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	for _, nn := range names {
		p := s.Pods[nn]
		subject := identity.SubjectOf(p, nil)
		labels := subject.Labels()
		id, err := e.ids.Acquire(labels)
		if err != nil {
			t.Fatal(err)
		}
		ep := flow.Endpoint{Identity: id, Pod: p, Labels: labels}
		if p.NodeName == node {
			ep.ID = endpointIDs[p.Name]
		}
		for _, ip := range p.IPs {
			e.byIP[ip] = ep
		}
	}
	for _, n := range s.Nodes {
		for _, a := range n.Addresses {
			e.nodes[netip.MustParseAddr(a.Address)] = n.Name
		}
	}
	return e
}

func (e *modelEnricher) LocalEndpoint(id uint32) (flow.Endpoint, bool) {
	for _, ep := range e.byIP {
		if ep.ID == id && id != 0 {
			return ep, true
		}
	}
	return flow.Endpoint{}, false
}

func (e *modelEnricher) EndpointByIP(ip netip.Addr) (flow.Endpoint, bool) {
	if ep, ok := e.byIP[ip]; ok {
		return ep, true
	}
	if n, ok := e.nodes[ip]; ok {
		id := identity.RemoteNode
		if n == e.node {
			id = identity.Host
		}
		ls, _ := identity.ReservedLabels(id)
		return flow.Endpoint{Identity: id, Labels: ls}, true
	}
	return flow.Endpoint{}, false
}

func (e *modelEnricher) EndpointByCgroup(uint64) (flow.Endpoint, bool) { return flow.Endpoint{}, false }

func (e *modelEnricher) IdentityLabels(id identity.ID) (identity.Labels, bool) {
	if ls, ok := identity.ReservedLabels(id); ok {
		return ls, true
	}
	return e.ids.Labels(id)
}

func (e *modelEnricher) Service(uint32) (flow.Service, bool) { return flow.Service{}, false }

func (e *modelEnricher) PolicyRule(uint32) (flow.Rule, bool) { return flow.Rule{}, false }
