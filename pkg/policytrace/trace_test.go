package policytrace

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/service"
)

// The cluster of these tests:
//
//	node n1 (this one, 192.168.0.1)        node n2 (192.168.0.2)
//	  shop/frontend 10.0.1.1 ──► svc shop/api 10.96.0.20:80 ──► api-1 10.0.1.2:8080 (n1)
//	                                                       └──► api-2 10.0.2.2:8080 (n2)
//	                                                            db    10.0.2.3:5432 (n2)
//
// shop/api-ingress: app=api admits app=frontend on TCP 8080;
// shop/db-ingress: app=db admits app=api on TCP 5432;
// shop/frontend-egress: app=frontend may reach app=api only.

func pod(name, node, ip, app string) *model.Pod {
	return &model.Pod{Namespace: "shop", Name: name, NodeName: node, Phase: model.PodRunning,
		IPs: []netip.Addr{netip.MustParseAddr(ip)}, Labels: map[string]string{"app": app}}
}

func selector(app string) model.LabelSelector {
	return model.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func ingressFrom(name, to, from string, port uint16) *model.NetworkPolicy {
	return &model.NetworkPolicy{Namespace: "shop", Name: name, PodSelector: selector(to),
		PolicyTypes: []model.PolicyType{model.PolicyTypeIngress},
		Ingress: []model.Rule{{Peers: []model.Peer{{PodSelector: ptr(selector(from))}},
			Ports: []model.PolicyPort{{Protocol: model.ProtocolTCP, Port: model.PortNumber(port)}}}}}
}

func ptr[T any](v T) *T { return &v }

func cluster() *model.State {
	s := &model.State{}
	s.Upsert(&model.Namespace{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}})
	for i, n := range []string{"n1", "n2"} {
		s.Upsert(&model.Node{Name: n, Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "192.168.0." + string(rune('1'+i))}}})
	}
	s.Upsert(pod("frontend", "n1", "10.0.1.1", "frontend"))
	s.Upsert(pod("api-1", "n1", "10.0.1.2", "api"))
	s.Upsert(pod("api-2", "n2", "10.0.2.2", "api"))
	s.Upsert(pod("db", "n2", "10.0.2.3", "db"))
	s.Upsert(ingressFrom("api-ingress", "api", "frontend", 8080))
	s.Upsert(ingressFrom("db-ingress", "db", "api", 5432))
	s.Upsert(&model.NetworkPolicy{Namespace: "shop", Name: "frontend-egress", PodSelector: selector("frontend"),
		PolicyTypes: []model.PolicyType{model.PolicyTypeEgress},
		Egress:      []model.Rule{{Peers: []model.Peer{{PodSelector: ptr(selector("api"))}}}}})
	return s
}

var vip = netip.MustParseAddr("10.96.0.20")

func services() *service.Desired {
	b := func(id uint32, ip, node, name string) service.Backend {
		return service.Backend{ID: id, Address: netip.MustParseAddr(ip), Port: 8080, Protocol: model.ProtocolTCP, NodeName: node,
			Pod: model.NamespacedName{Namespace: "shop", Name: name}, State: service.BackendActive}
	}
	return &service.Desired{Frontends: []service.Frontend{{ID: 1, Service: model.NamespacedName{Namespace: "shop", Name: "api"},
		Kind: service.KindClusterIP, Address: vip, Port: 80, Protocol: model.ProtocolTCP,
		Backends: []service.Backend{b(1, "10.0.1.2", "n1", "api-1"), b(2, "10.0.2.2", "n2", "api-2")}}}}
}

// engineView is the reconciler's View over a plain engine.
type engineView struct{ e *policy.Engine }

func (v engineView) View(fn func(*policy.Engine)) { fn(v.e) }

type desired struct{ d *service.Desired }

func (d desired) Desired() *service.Desired { return d.d }

type snapshot struct{ s *model.State }

func (s snapshot) Snapshot() *model.State { return s.s }

// fakeMaps answers as maps written from the engine's endpoint policies
// would; tests then spoil them.
type fakeMaps struct {
	eps    []datapath.EndpointEntry
	ipc    map[netip.Addr]datapath.IPCacheEntry
	policy map[uint32]*policy.EndpointPolicy
	lb     map[datapath.LBFrontendKey]datapath.LBService
}

func (f *fakeMaps) ListEndpoints() ([]datapath.EndpointEntry, error) { return f.eps, nil }
func (f *fakeMaps) LookupIPCache(a netip.Addr) (datapath.IPCacheEntry, bool, error) {
	e, ok := f.ipc[a]
	return e, ok, nil
}
func (f *fakeMaps) LookupPolicy(id uint32, q datapath.PolicyQuery) (datapath.PolicyMatch, error) {
	p := f.policy[id]
	if p == nil {
		return datapath.PolicyMatch{}, nil
	}
	m := p.Decide(policy.Direction(q.Dir), q.Proto, q.Port, identity.ID(q.PeerIdentity), q.PeerAddr)
	out := datapath.PolicyMatch{HasMaps: true, Found: m.Found, Peer: m.Peer, Class: uint32(m.Class)}
	out.Entry = datapath.PolicyEntry{Identity: uint32(m.Entry.Identity), Dir: q.Dir, Proto: m.Entry.Protocol, Port: m.Entry.Port,
		PortPrefixLen: m.Entry.PortPrefixLen, Verdict: uint8(m.Entry.Verdict), Rule: uint32(m.Entry.Rule)}
	return out, nil
}
func (f *fakeMaps) LookupLB(k datapath.LBFrontendKey) (datapath.LBService, bool, error) {
	s, ok := f.lb[k]
	return s, ok, nil
}

func newTracer(t *testing.T) (*Tracer, *fakeMaps, *policy.Engine) {
	t.Helper()
	s := cluster()
	e, err := policy.NewEngine(policy.Options{NodeName: "n1"}, nil)
	require.NoError(t, err)
	require.Empty(t, e.Sync(s).Errors)
	fm := &fakeMaps{ipc: map[netip.Addr]datapath.IPCacheEntry{}, policy: map[uint32]*policy.EndpointPolicy{},
		lb: map[datapath.LBFrontendKey]datapath.LBService{}}
	for i, p := range e.Endpoints() {
		id := uint32(i + 1)
		pd := s.Pods[p.Pod]
		fm.eps = append(fm.eps, datapath.EndpointEntry{ID: id, IPv4: pd.IPs[0], Identity: uint32(p.Identity), PolicyFlags: policysync.EndpointFlags(p)})
		fm.policy[id] = p
	}
	for pf, id := range e.IPCache() {
		fm.ipc[pf.Addr()] = datapath.IPCacheEntry{Identity: uint32(id)}
	}
	fm.lb[datapath.LBFrontendKey{Addr: vip, Port: 80, Proto: 6}] = datapath.LBService{Backends: []datapath.LBBackend{
		{ID: 1, Addr: netip.MustParseAddr("10.0.1.2"), Port: 8080, Proto: 6}, {ID: 2, Addr: netip.MustParseAddr("10.0.2.2"), Port: 8080, Proto: 6}}}
	return &Tracer{NodeName: "n1", Policy: engineView{e}, Services: desired{services()}, Model: snapshot{s}, Maps: fm}, fm, e
}

func TestTraceThroughAService(t *testing.T) {
	tr, _, _ := newTracer(t)
	res, err := tr.Trace(Query{From: "shop/frontend", To: "shop/api", Port: 80})
	require.NoError(t, err)
	require.Empty(t, res.Problems)
	require.Equal(t, EndService, res.To.Kind)
	require.NotNil(t, res.Service)
	require.Equal(t, "10.96.0.20:80/TCP", res.Service.Frontend)
	require.ElementsMatch(t, []string{"10.0.1.2:8080", "10.0.2.2:8080"}, res.Service.MapBackends)
	require.Len(t, res.Paths, 2)
	for _, p := range res.Paths {
		require.Equal(t, VerdictAllowed, p.Verdict, "%+v", p)
		require.Equal(t, uint16(8080), p.Port, "judged on the backend's port")
		require.Equal(t, "shop/frontend-egress egress[0]", p.Egress.Rule)
		require.Equal(t, "shop/api-ingress ingress[0]", p.Ingress.Rule)
		require.NotNil(t, p.Egress.Maps, "the client is this node's: its maps are read")
		require.True(t, p.Egress.Maps.Agrees)
		if p.To.Name == "shop/api-2" {
			require.False(t, p.Ingress.Local)
			require.Nil(t, p.Ingress.Maps, "another node's endpoint: the model only")
		} else {
			require.True(t, p.Ingress.Maps.Agrees)
		}
	}
	require.Equal(t, VerdictAllowed, res.Verdict)
}

func TestTraceDefaultDenyAndHost(t *testing.T) {
	tr, _, _ := newTracer(t)
	res, err := tr.Trace(Query{From: "shop/frontend", To: "10.0.2.3:5432"})
	require.NoError(t, err)
	require.Empty(t, res.Problems)
	require.Len(t, res.Paths, 1)
	p := res.Paths[0]
	require.Equal(t, VerdictDenied, p.Verdict)
	require.Equal(t, RuleDefaultDeny, p.Egress.Rule, "frontend may reach the api only")
	require.Equal(t, RuleDefaultDeny, p.Ingress.Rule, "db admits the api only")

	// The node reaches its own pod: host-allow; another node does not.
	res, err = tr.Trace(Query{From: "192.168.0.1", To: "shop/api-1", Port: 8080})
	require.NoError(t, err)
	require.Empty(t, res.Problems)
	require.Equal(t, "host-allow", res.Paths[0].Ingress.Rule)
	res, err = tr.Trace(Query{From: "192.168.0.2", To: "shop/api-1", Port: 8080})
	require.NoError(t, err)
	require.Equal(t, identity.RemoteNode, res.Paths[0].Ingress.Peer)
	require.Equal(t, VerdictDenied, res.Verdict)
}

// A map that does not hold what the model says is a problem, never
// papered over.
func TestTraceReportsMapsThatDisagree(t *testing.T) {
	tr, fm, _ := newTracer(t)
	// The frontend's egress map loses its entries.
	for _, ep := range fm.eps {
		if ep.IPv4 == netip.MustParseAddr("10.0.1.1") {
			fm.policy[ep.ID] = &policy.EndpointPolicy{}
		}
	}
	// The LB maps lost a backend.
	k := datapath.LBFrontendKey{Addr: vip, Port: 80, Proto: 6}
	lb := fm.lb[k]
	lb.Backends = lb.Backends[:1]
	fm.lb[k] = lb

	res, err := tr.Trace(Query{From: "shop/frontend", To: "shop/api:80"})
	require.NoError(t, err)
	text := strings.Join(res.Problems, "\n")
	require.Contains(t, text, "frontend 10.96.0.20:80/TCP's backends for new connections are [10.0.1.2:8080] in the maps, [10.0.1.2:8080, 10.0.2.2:8080] in the model")
	require.Contains(t, text, "egress at shop/frontend: the datapath's maps decide denied (default-deny), the model allowed (shop/frontend-egress egress[0], rule")
	require.False(t, res.Paths[0].Egress.Maps.Agrees)
}

func TestTraceBadQueries(t *testing.T) {
	tr, _, _ := newTracer(t)
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{From: "shop/nope", To: "shop/db", Port: 1}, "--from shop/nope: no such pod"},
		{Query{From: "shop/frontend", To: "shop/db"}, "no destination port: give --port or --to shop/db:PORT"},
		{Query{From: "shop/frontend", To: "shop/api", Port: 81}, "service shop/api has no IPv4 ClusterIP port TCP/81 (it has TCP/80)"},
		{Query{From: "shop/frontend", To: "shop/db:5432", Port: 80}, "--to shop/db:5432 names port 5432 but --port says 80: give one"},
		{Query{From: "shop/frontend", To: "shop/db", Port: 5432, Protocol: "icmp"}, `--protocol "icmp": use tcp, udp or sctp`},
		{Query{From: "not-an-ip", To: "shop/db", Port: 5432}, `--from "not-an-ip": want NAMESPACE/POD or an IP address`},
	} {
		_, err := tr.Trace(tc.q)
		require.EqualError(t, err, tc.want)
		require.True(t, IsBadQuery(err))
	}
}

func TestWhatIf(t *testing.T) {
	tr, _, _ := newTracer(t)
	at := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	conn := func(sec int, src, dst string, sport, dport uint32, srcPod, dstPod string) *flowpb.Flow {
		ep := func(p string) *flowpb.Endpoint {
			return &flowpb.Endpoint{Namespace: "shop", PodName: p, Workloads: []*flowpb.Workload{{Kind: "Deployment", Name: strings.Split(p, "-")[0]}}}
		}
		return &flowpb.Flow{Time: timestamppb.New(at.Add(time.Duration(sec) * time.Second)), Verdict: flowpb.Verdict_FORWARDED,
			IP: &flowpb.IP{Source: src, Destination: dst}, Source: ep(srcPod), Destination: ep(dstPod),
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport}}}}
	}
	flows := []*flowpb.Flow{
		conn(1, "10.0.1.1", "10.0.1.2", 40001, 8080, "frontend-x", "api-1"),
		conn(2, "10.0.1.1", "10.0.2.2", 40002, 8080, "frontend-x", "api-2"),
		conn(3, "10.0.1.1", "10.0.2.2", 40002, 8080, "frontend-x", "api-2"), // the same connection again
		conn(4, "10.0.1.2", "10.0.2.3", 40003, 5432, "api-1", "db"),
	}
	// Replacing api-ingress by a deny-all denies the frontend's
	// connections to both api pods, and the trace shows it.
	manifest := "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api-ingress, namespace: shop}\n" +
		"spec:\n  podSelector: {matchLabels: {app: api}}\n  policyTypes: [Ingress]\n"
	w, err := tr.WhatIf("lockdown.yaml", []byte(manifest), &Query{From: "shop/frontend", To: "shop/api", Port: 80}, flows)
	require.NoError(t, err)
	require.Equal(t, []string{"shop/api-ingress"}, w.Replaced)
	require.Equal(t, 3, w.Connections)
	require.Len(t, w.Denied, 1, "%+v", w.Denied)
	g := w.Denied[0]
	require.Equal(t, "shop/frontend (Deployment)", g.From)
	require.Equal(t, "shop/api (Deployment)", g.To)
	require.Equal(t, 2, g.Count)
	require.Equal(t, "ingress (default-deny)", g.At)
	require.Equal(t, "allowed by shop/api-ingress ingress[0]", g.Now)
	require.Equal(t, at.Add(time.Second), g.First)
	require.Equal(t, at.Add(2*time.Second), g.Last)
	require.Equal(t, VerdictDenied, w.Trace.Verdict)

	// The live state is untouched.
	res, err := tr.Trace(Query{From: "shop/frontend", To: "shop/api", Port: 80})
	require.NoError(t, err)
	require.Equal(t, VerdictAllowed, res.Verdict)

	_, err = tr.WhatIf("bad.yaml", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {containers: [{name: c, image: i}]}\n"), nil, nil)
	require.EqualError(t, err, "--what-if bad.yaml: Pod shop/p: only NetworkPolicy and ClusterNetworkPolicy objects can be evaluated")

	// An Admin ClusterNetworkPolicy denying the api tier from the
	// frontend denies its connections though api-ingress admits them, and
	// names the rule; api to db stays.
	guard := "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: guard}\nspec:\n" +
		"  tier: Admin\n  priority: 5\n  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}\n" +
		"  ingress:\n  - action: Deny\n    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: frontend}}}}]\n"
	w, err = tr.WhatIf("guard.yaml", []byte(guard), &Query{From: "shop/frontend", To: "shop/api", Port: 80}, flows)
	require.NoError(t, err)
	require.Equal(t, []string{"cnp/guard"}, w.Policies)
	require.Len(t, w.Denied, 1, "%+v", w.Denied)
	require.Equal(t, "ingress (cnp/guard ingress[0])", w.Denied[0].At)
	require.Equal(t, 2, w.Denied[0].Count)
	for _, p := range w.Trace.Paths {
		require.Equal(t, "Admin", p.Ingress.Tier, "the tier that decides at each backend")
	}
}
