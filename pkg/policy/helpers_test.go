package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

const localNode = "n1"

func nn(s string) model.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return model.NamespacedName{Namespace: ns, Name: name}
}

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func kv(pairs ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return m
}

func namespace(name string, labels ...string) *model.Namespace {
	l := kv(labels...)
	l["kubernetes.io/metadata.name"] = name
	return &model.Namespace{Name: name, Labels: l}
}

func node(name, ip string) *model.Node {
	return &model.Node{Name: name, Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: ip}}}
}

// netpolPorts are the container ports of the pods of the upstream
// network-policy e2e suite: 80 and 81 on TCP, UDP and SCTP, named
// serve-PORT-PROTO.
func netpolPorts() []model.ContainerPort {
	var out []model.ContainerPort
	for _, port := range []uint16{80, 81} {
		for _, proto := range []model.Protocol{model.ProtocolTCP, model.ProtocolUDP, model.ProtocolSCTP} {
			out = append(out, model.ContainerPort{
				Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), Port: port, Protocol: proto,
			})
		}
	}
	return out
}

func pod(name, nodeName, ip string, labels ...string) *model.Pod {
	n := nn(name)
	p := &model.Pod{
		Namespace: n.Namespace, Name: n.Name, NodeName: nodeName, Phase: model.PodRunning,
		Labels: kv(labels...), Ports: netpolPorts(),
	}
	if ip != "" {
		p.IPs = []netip.Addr{addr(ip)}
	}
	return p
}

// netpolCluster is the upstream e2e layout: namespaces x, y, z with pods
// a, b, c each (labelled pod=NAME), all on this node, pod N/M at
// 10.244.<1+index of N>.<1+index of M>; nodes n1 (this one) and n2.
func netpolCluster() *model.State {
	s := &model.State{}
	s.Upsert(node("n1", "192.168.1.1"))
	s.Upsert(node("n2", "192.168.1.2"))
	for i, ns := range []string{"x", "y", "z"} {
		s.Upsert(namespace(ns, "ns", ns))
		for j, p := range []string{"a", "b", "c"} {
			s.Upsert(pod(ns+"/"+p, localNode, fmt.Sprintf("10.244.%d.%d", i+1, j+1), "pod", p))
		}
	}
	return s
}

// policyBuilder builds network policies tersely.
type policyBuilder struct{ np *model.NetworkPolicy }

func netpol(name string, subject *model.LabelSelector) *policyBuilder {
	n := nn(name)
	b := &policyBuilder{np: &model.NetworkPolicy{Namespace: n.Namespace, Name: n.Name}}
	if subject != nil {
		b.np.PodSelector = *subject
	}
	return b
}

func (b *policyBuilder) ingress(rules ...model.Rule) *policyBuilder {
	b.np.Ingress = append(b.np.Ingress, rules...)
	return b.types(model.PolicyTypeIngress)
}

func (b *policyBuilder) egress(rules ...model.Rule) *policyBuilder {
	b.np.Egress = append(b.np.Egress, rules...)
	return b.types(model.PolicyTypeEgress)
}

func (b *policyBuilder) types(ts ...model.PolicyType) *policyBuilder {
	for _, t := range ts {
		if !b.np.Covers(t) {
			b.np.PolicyTypes = append(b.np.PolicyTypes, t)
		}
	}
	return b
}

func (b *policyBuilder) build() *model.NetworkPolicy {
	if len(b.np.PolicyTypes) == 0 {
		b.np.PolicyTypes = []model.PolicyType{model.PolicyTypeIngress}
	}
	return b.np
}

func sel(pairs ...string) *model.LabelSelector {
	return &model.LabelSelector{MatchLabels: kv(pairs...)}
}

func expr(key string, op model.SelectorOperator, values ...string) *model.LabelSelector {
	return &model.LabelSelector{MatchExpressions: []model.SelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func rl(peers []model.Peer, ports ...model.PolicyPort) model.Rule {
	return model.Rule{Peers: peers, Ports: ports}
}

func peers(ps ...model.Peer) []model.Peer { return ps }

func podPeer(s *model.LabelSelector) model.Peer { return model.Peer{PodSelector: s} }
func nsPeer(s *model.LabelSelector) model.Peer  { return model.Peer{NamespaceSelector: s} }
func bothPeer(nsSel, podSel *model.LabelSelector) model.Peer {
	return model.Peer{NamespaceSelector: nsSel, PodSelector: podSel}
}
func ipPeer(cidr string, except ...string) model.Peer {
	b := &model.IPBlock{CIDR: prefix(cidr)}
	for _, e := range except {
		b.Except = append(b.Except, prefix(e))
	}
	return model.Peer{IPBlock: b}
}

func tcp(port uint16) model.PolicyPort {
	return model.PolicyPort{Protocol: model.ProtocolTCP, Port: model.PortNumber(port)}
}
func udp(port uint16) model.PolicyPort {
	return model.PolicyPort{Protocol: model.ProtocolUDP, Port: model.PortNumber(port)}
}
func sctp(port uint16) model.PolicyPort {
	return model.PolicyPort{Protocol: model.ProtocolSCTP, Port: model.PortNumber(port)}
}
func named(proto model.Protocol, name string) model.PolicyPort {
	return model.PolicyPort{Protocol: proto, Port: model.PortName(name)}
}
func portRangeOf(proto model.Protocol, lo, hi uint16) model.PolicyPort {
	return model.PolicyPort{Protocol: proto, Port: model.PortNumber(lo), EndPort: hi}
}

func newEngine(t testing.TB, s *model.State, opts ...func(*Options)) *Engine {
	t.Helper()
	o := Options{NodeName: localNode}
	for _, f := range opts {
		f(&o)
	}
	e, err := NewEngine(o, nil)
	require.NoError(t, err)
	res := e.Sync(s)
	require.Empty(t, res.Errors)
	return e
}

// The datapath's decision, as the contract on Entry describes it.

// lookup decides one packet of endpoint ep in direction dir with the given
// peer address: the verdict, and the deciding rule (RuleNone when no policy
// enforces the direction or nothing matched).
func lookup(e *Engine, ep model.NamespacedName, dir Direction, peer netip.Addr, proto uint8, port uint16) (bool, RuleID) {
	p, ok := e.Endpoint(ep)
	if !ok {
		panic(fmt.Sprintf("%s is not a local endpoint", ep))
	}
	return decide(p, e.IPCache(), dir, peer, proto, port)
}

// decide is lookup for a given endpoint policy and ipcache.
func decide(p *EndpointPolicy, ipc map[netip.Prefix]identity.ID, dir Direction, peer netip.Addr, proto uint8, port uint16) (bool, RuleID) {
	en, enforced, ok := decideEntry(p, ipc, dir, peer, proto, port)
	if !enforced {
		return true, RuleNone
	}
	return ok && en.Verdict != Deny, en.Rule
}

// decideEntry is the entry the datapath's lookup finds (bpf/lib/policy.h):
// of the three lookups (the peer's identity, its CIDR class, any peer),
// the longest match, then Redirect over Allow, then the more specific
// peer. enforced is false when no policy enforces the direction; ok false
// when nothing matched (or the policy overflowed).
func decideEntry(p *EndpointPolicy, ipc map[netip.Prefix]identity.ID, dir Direction, peer netip.Addr, proto uint8, port uint16) (en Entry, enforced, ok bool) {
	if (dir == Ingress && !p.IngressEnforced) || (dir == Egress && !p.EgressEnforced) {
		return Entry{}, false, true
	}
	if p.Overflow != nil {
		return Entry{}, true, false
	}
	// Decide is what `sluice policy trace` evaluates; the oracle tests
	// hold it to the rules' meaning.
	m := p.Decide(dir, proto, port, longestMatch(ipc, peer), peer)
	if !m.Found {
		return Entry{}, true, false
	}
	return m.Entry, true, true
}

func longestMatch(m map[netip.Prefix]identity.ID, a netip.Addr) identity.ID {
	best, bits := identity.Unknown, -1
	for p, id := range m {
		if p.Contains(a) && p.Bits() > bits {
			best, bits = id, p.Bits()
		}
	}
	return best
}

// endpointAddr resolves a probe end: "ns/name" (a pod), "node:NAME" (a
// node's first address) or an IP literal.
func endpointAddr(s *model.State, end string) (netip.Addr, *model.Pod) {
	if name, ok := strings.CutPrefix(end, "node:"); ok {
		a, err := netip.ParseAddr(s.Nodes[name].Addresses[0].Address)
		if err != nil {
			panic(err)
		}
		return a, nil
	}
	if a, err := netip.ParseAddr(end); err == nil {
		return a, nil
	}
	p := s.Pods[nn(end)]
	if p == nil {
		panic("no pod " + end)
	}
	return p.IPs[0], p
}

// reach reports whether a connection from one probe end to another on
// "PROTO/PORT" is allowed: by the client's egress policy if it is a local
// endpoint, and by the server's ingress policy if it is one.
func reach(e *Engine, s *model.State, from, to, port string) bool {
	fromAddr, fromPod := endpointAddr(s, from)
	toAddr, toPod := endpointAddr(s, to)
	protoName, num, _ := strings.Cut(port, "/")
	n, err := strconv.Atoi(num)
	if err != nil {
		panic(err)
	}
	proto := map[string]uint8{"TCP": ProtoTCP, "UDP": ProtoUDP, "SCTP": ProtoSCTP}[protoName]
	if fromPod != nil && e.isLocal(fromPod) {
		if ok, _ := lookup(e, nn(from), Egress, toAddr, proto, uint16(n)); !ok {
			return false
		}
	}
	if toPod != nil && e.isLocal(toPod) {
		if ok, _ := lookup(e, nn(to), Ingress, fromAddr, proto, uint16(n)); !ok {
			return false
		}
	}
	return true
}
