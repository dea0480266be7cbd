package policysuggest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policy"
	"github.com/sluice-net/sluice/pkg/source/files"
)

// A three-tier app, as flows show it:
//
//	world 203.0.113.7 ──► frontend (Deployment, 2 pods) :8080
//	frontend ──► svc api ──► api (Deployment, 2 pods) :8080 ──► db (StatefulSet) :5432
//	frontend, api ──► kube-system/kube-dns :53 UDP
//	api ──► world 198.51.100.10 :443
//	node ──► api :8080 (kubelet probe)
type fakePod struct {
	ns, name, ip  string
	kind, owner   string
	labels        map[string]string
	volatileLabel map[string]string
}

var (
	frontend1 = fakePod{"shop", "frontend-7d9f-a", "10.244.1.2", "Deployment", "frontend", map[string]string{"app": "frontend"}, map[string]string{"pod-template-hash": "7d9f"}}
	frontend2 = fakePod{"shop", "frontend-7d9f-b", "10.244.1.3", "Deployment", "frontend", map[string]string{"app": "frontend"}, map[string]string{"pod-template-hash": "7d9f"}}
	api1      = fakePod{"shop", "api-5c4b-a", "10.244.1.4", "Deployment", "api", map[string]string{"app": "api", "tier": "backend"}, map[string]string{"pod-template-hash": "5c4b"}}
	// The second api pod is of the next revision: another hash, and a
	// label the new template added.
	api2 = fakePod{"shop", "api-6f1e-b", "10.244.1.5", "Deployment", "api", map[string]string{"app": "api", "tier": "backend"}, map[string]string{"pod-template-hash": "6f1e", "version": "2"}}
	db0  = fakePod{"shop", "db-0", "10.244.1.6", "StatefulSet", "db", map[string]string{"app": "db"},
		map[string]string{"statefulset.kubernetes.io/pod-name": "db-0", "controller-revision-hash": "db-8b"}}
	dns   = fakePod{"kube-system", "coredns-1-a", "10.244.1.10", "Deployment", "coredns", map[string]string{"k8s-app": "kube-dns"}, map[string]string{"pod-template-hash": "1"}}
	world = netip.MustParseAddr("203.0.113.7")
	out   = netip.MustParseAddr("198.51.100.10")
	node  = netip.MustParseAddr("192.168.0.1")
	t0    = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
)

func (p fakePod) endpoint() *flowpb.Endpoint {
	ep := &flowpb.Endpoint{Namespace: p.ns, PodName: p.name, Identity: 300,
		Workloads: []*flowpb.Workload{{Kind: p.kind, Name: p.owner}}}
	for k, v := range p.labels {
		ep.Labels = append(ep.Labels, "k8s:"+k+"="+v)
	}
	for k, v := range p.volatileLabel {
		ep.Labels = append(ep.Labels, "k8s:"+k+"="+v)
	}
	ep.Labels = append(ep.Labels, "k8s:io.kubernetes.pod.namespace="+p.ns, "k8s:io.cilium.k8s.namespace.labels.team=a")
	return ep
}

func (p fakePod) modelPod() *model.Pod {
	labels := map[string]string{}
	for k, v := range p.labels {
		labels[k] = v
	}
	for k, v := range p.volatileLabel {
		labels[k] = v
	}
	return &model.Pod{Namespace: p.ns, Name: p.name, NodeName: "n1", Phase: model.PodRunning, Labels: labels,
		IPs: []netip.Addr{netip.MustParseAddr(p.ip)}}
}

type end struct {
	pod  *fakePod
	addr netip.Addr
	ep   *flowpb.Endpoint
}

func podEnd(p fakePod) end { return end{pod: &p, addr: netip.MustParseAddr(p.ip), ep: p.endpoint()} }
func addrEnd(a netip.Addr, reserved string) end {
	return end{addr: a, ep: &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:" + reserved}}}
}

type conn struct {
	from, to end
	proto    model.Protocol
	port     uint16
}

var observed = []conn{
	{addrEnd(world, "world"), podEnd(frontend1), model.ProtocolTCP, 8080},
	{podEnd(frontend1), podEnd(api1), model.ProtocolTCP, 8080},
	{podEnd(frontend2), podEnd(api2), model.ProtocolTCP, 8080},
	{podEnd(api1), podEnd(db0), model.ProtocolTCP, 5432},
	{podEnd(api2), podEnd(db0), model.ProtocolTCP, 5432},
	{podEnd(frontend1), podEnd(dns), model.ProtocolUDP, 53},
	{podEnd(api2), podEnd(dns), model.ProtocolUDP, 53},
	{podEnd(api1), addrEnd(out, "world"), model.ProtocolTCP, 443},
	{addrEnd(node, "host"), podEnd(api1), model.ProtocolTCP, 8080},
}

// flows are what observers report of a connection: its new-connection
// flow, a reply, its end; some twice (two nodes' views).
func flowsOf(cs []conn) []*flowpb.Flow {
	var out []*flowpb.Flow
	for i, c := range cs {
		at := t0.Add(time.Duration(i) * time.Minute)
		l4 := func(s, d uint16) *flowpb.Layer4 {
			if c.proto == model.ProtocolUDP {
				return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: uint32(s), DestinationPort: uint32(d)}}}
			}
			return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: uint32(s), DestinationPort: uint32(d)}}}
		}
		sport := uint16(40000 + i)
		fwd := &flowpb.Flow{Time: timestamppb.New(at), Verdict: flowpb.Verdict_FORWARDED, IsReply: wrapperspb.Bool(false),
			IP: &flowpb.IP{Source: c.from.addr.String(), Destination: c.to.addr.String()}, L4: l4(sport, c.port),
			Source: c.from.ep, Destination: c.to.ep}
		reply := &flowpb.Flow{Time: timestamppb.New(at.Add(time.Millisecond)), Verdict: flowpb.Verdict_FORWARDED, IsReply: wrapperspb.Bool(true),
			IP: &flowpb.IP{Source: c.to.addr.String(), Destination: c.from.addr.String()}, L4: l4(c.port, sport),
			Source: c.to.ep, Destination: c.from.ep}
		drop := &flowpb.Flow{Time: timestamppb.New(at), Verdict: flowpb.Verdict_DROPPED,
			IP: &flowpb.IP{Source: c.from.addr.String(), Destination: c.to.addr.String()}, L4: l4(sport+1000, c.port+1),
			Source: c.from.ep, Destination: c.to.ep}
		out = append(out, fwd, reply, fwd, drop)
	}
	return out
}

// state is the cluster the flows come from, with the policies applied.
func state(t *testing.T, objs []model.Object) *model.State {
	s := &model.State{}
	s.Upsert(&model.Node{Name: "n1", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: node.String()}}})
	for _, ns := range []string{"shop", "kube-system"} {
		s.Upsert(&model.Namespace{Name: ns, Labels: map[string]string{"kubernetes.io/metadata.name": ns, "team": "a"}})
	}
	for _, p := range []fakePod{frontend1, frontend2, api1, api2, db0, dns} {
		s.Upsert(p.modelPod())
	}
	for _, o := range objs {
		s.Upsert(o)
	}
	return s
}

// allowed decides a connection on the policies as the datapath would.
func allowed(t *testing.T, e *policy.Engine, s *model.State, c conn) bool {
	proto, _ := c.proto.Number()
	ok := func(p *fakePod, dir policy.Direction, peer netip.Addr) bool {
		if p == nil {
			return true
		}
		ep, found := e.Endpoint(model.NamespacedName{Namespace: p.ns, Name: p.name})
		require.True(t, found)
		if (dir == policy.Ingress && !ep.IngressEnforced) || (dir == policy.Egress && !ep.EgressEnforced) {
			return true
		}
		return ep.Decide(dir, proto, c.port, e.IdentityOf(peer), peer).Found
	}
	return ok(c.from.pod, policy.Egress, c.to.addr) && ok(c.to.pod, policy.Ingress, c.from.addr)
}

func suggest(t *testing.T, opts Options, flows []*flowpb.Flow) (string, []model.Object) {
	t.Helper()
	b := New(opts)
	for _, f := range flows {
		b.Add(f)
	}
	var sb strings.Builder
	_, err := b.WriteYAML(&sb)
	require.NoError(t, err)
	objs, err := files.Decode("suggested.yaml", []byte(sb.String()))
	require.NoError(t, err, "the files source takes the output as it is:\n%s", sb.String())
	return sb.String(), objs
}

func TestSuggestAllowsWhatWasSeenAndNothingElse(t *testing.T) {
	y, objs := suggest(t, Options{}, flowsOf(observed))
	t.Logf("suggested:\n%s", y)
	s := state(t, objs)
	e, err := policy.NewEngine(policy.Options{NodeName: "n1"}, nil)
	require.NoError(t, err)
	require.Empty(t, e.Sync(s).Errors)
	for _, np := range []string{"shop/frontend-suggested", "shop/api-suggested", "shop/db-suggested", "kube-system/coredns-suggested"} {
		require.Contains(t, s.NetworkPolicies, nnOf(np), "one policy per workload")
	}
	require.Len(t, s.NetworkPolicies, 4)

	for _, c := range observed {
		require.True(t, allowed(t, e, s, c), "observed %s -> %s %s/%d is allowed", c.from.addr, c.to.addr, c.proto, c.port)
	}
	// Every pod of a workload is covered, not only those seen.
	require.True(t, allowed(t, e, s, conn{podEnd(frontend2), podEnd(api1), model.ProtocolTCP, 8080}))
	for _, c := range []conn{
		{podEnd(frontend1), podEnd(db0), model.ProtocolTCP, 5432},          // skips a tier
		{addrEnd(world, "world"), podEnd(api1), model.ProtocolTCP, 8080},   // world into the api
		{podEnd(api1), podEnd(frontend1), model.ProtocolTCP, 8080},         // backwards
		{podEnd(api1), podEnd(db0), model.ProtocolTCP, 5433},               // another port
		{podEnd(frontend1), addrEnd(out, "world"), model.ProtocolTCP, 443}, // the api's world peer
		{podEnd(db0), podEnd(dns), model.ProtocolUDP, 53},                  // db never resolved
		{addrEnd(netip.MustParseAddr("203.0.113.8"), "world"), podEnd(frontend1), model.ProtocolTCP, 8080},
	} {
		require.False(t, allowed(t, e, s, c), "unobserved %s -> %s %s/%d is denied", c.from.addr, c.to.addr, c.proto, c.port)
	}
	// TCP/53 beside UDP/53.
	require.True(t, allowed(t, e, s, conn{podEnd(api1), podEnd(dns), model.ProtocolTCP, 53}))

	// Selectors are the workloads' stable labels; comments name the flows.
	for _, volatile := range []string{"pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name", "version",
		"io.kubernetes.pod.namespace", "io.cilium"} {
		require.NotContains(t, y, volatile+":")
	}
	require.Contains(t, y, "kubernetes.io/metadata.name: kube-system")
	require.Contains(t, y, "cidr: 203.0.113.7/32")
	require.Contains(t, y, "# from shop/frontend (Deployment)\n")
	require.Contains(t, y, "#   TCP/8080: 2 connections, first 2026-05-04T10:01:00Z, last 2026-05-04T10:02:00Z, e.g. shop/frontend-7d9f-a 10.244.1.2:40001 -> shop/api-5c4b-a 10.244.1.4:8080 TCP")
	require.Contains(t, y, "#   TCP/53: not seen: added beside UDP/53")
	require.Contains(t, y, "Connections from the pods' own node (kubelet probes, 1 seen) need no rule")
	require.Contains(t, y, "from 36 flows: 9 connections")
}

func TestSuggestNamespaceAndAudit(t *testing.T) {
	y, objs := suggest(t, Options{Namespaces: []string{"kube-system"}, Audit: true}, flowsOf(observed))
	require.Len(t, objs, 2, "%s", y)
	ns, ok := objs[0].(*model.Namespace)
	require.True(t, ok, "the namespace's audit annotation comes first")
	require.Equal(t, "kube-system", ns.Name)
	require.Equal(t, "true", ns.Annotations[policy.AuditAnnotation])
	np := objs[1].(*model.NetworkPolicy)
	require.Equal(t, "coredns-suggested", np.Name)
	require.Empty(t, np.Egress, "coredns opened nothing")
	require.Len(t, np.Ingress, 2, "from the frontend and from the api")
	require.True(t, np.Covers(model.PolicyTypeEgress))
	require.Contains(t, y, "no egress connection was seen: egress is denied")

	// With the namespace in audit mode, what the policy does not allow
	// is reported, not dropped.
	s := state(t, objs)
	e, err := policy.NewEngine(policy.Options{NodeName: "n1"}, nil)
	require.NoError(t, err)
	require.Empty(t, e.Sync(s).Errors)
	p, _ := e.Endpoint(model.NamespacedName{Namespace: "kube-system", Name: dns.name})
	require.True(t, p.Audit)
}

func TestSuggestAggregatesManyWorldAddresses(t *testing.T) {
	var cs []conn
	for i := range 20 {
		cs = append(cs, conn{addrEnd(netip.AddrFrom4([4]byte{203, 0, byte(113 + i%3), byte(1 + i)}), "world"), podEnd(frontend1), model.ProtocolTCP, 8080})
	}
	y, objs := suggest(t, Options{Namespaces: []string{"shop"}, MaxAddresses: 4}, flowsOf(cs))
	require.Contains(t, y, "20 addresses aggregated into 3 /24 (IPv6 /64) prefixes: more than 4 in one rule")
	np := objs[0].(*model.NetworkPolicy)
	require.Len(t, np.Ingress, 1)
	var got []string
	for _, p := range np.Ingress[0].Peers {
		got = append(got, p.IPBlock.CIDR.String())
	}
	require.Equal(t, []string{"203.0.113.0/24", "203.0.114.0/24", "203.0.115.0/24"}, got)
	s := state(t, objs)
	e, err := policy.NewEngine(policy.Options{NodeName: "n1"}, nil)
	require.NoError(t, err)
	require.Empty(t, e.Sync(s).Errors)
	for _, c := range cs {
		require.True(t, allowed(t, e, s, c))
	}
	require.Equal(t, identity.World, e.IdentityOf(cs[0].from.addr))
}

func nnOf(s string) model.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return model.NamespacedName{Namespace: ns, Name: name}
}
