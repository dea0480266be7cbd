package policy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// A pod of another node: its policy computed here decides every peer and
// port as the policy its own node's agent computes, rule for rule.
func TestPolicyOfRemotePodDecidesAsItsNode(t *testing.T) {
	s := netpolCluster()
	for _, p := range s.Pods {
		if p.Namespace == "y" { // y/a, y/b, y/c live on n2
			q := *p
			q.NodeName = "n2"
			s.Upsert(&q)
		}
	}
	s.Upsert(netpol("y/allow-from-x", sel("pod", "a")).ingress(rl(peers(nsPeer(sel("ns", "x"))), tcp(80))).build())
	s.Upsert(netpol("y/egress", sel()).egress(
		rl(peers(bothPeer(sel("ns", "z"), sel("pod", "b"))), named(model.ProtocolTCP, "serve-81-tcp")),
		rl(peers(ipPeer("203.0.113.0/24", "203.0.113.128/25")), udp(53)),
	).build())
	here := newEngine(t, s)
	there := newEngine(t, s, func(o *Options) { o.NodeName = "n2" })

	peersToTry := []netip.Addr{addr("203.0.113.7"), addr("203.0.113.200"), addr("198.51.100.1")}
	for _, p := range s.Pods {
		peersToTry = append(peersToTry, p.IPs...)
	}
	ports := []struct {
		proto uint8
		port  uint16
	}{{ProtoTCP, 80}, {ProtoTCP, 81}, {ProtoUDP, 53}, {ProtoUDP, 80}}
	checked := 0
	for _, name := range []string{"y/a", "y/b", "y/c"} {
		_, local := here.Endpoint(nn(name))
		require.False(t, local, "%s is not an endpoint of n1", name)
		mine, err := here.PolicyOf(nn(name))
		require.NoError(t, err)
		theirs, ok := there.Endpoint(nn(name))
		require.True(t, ok)
		require.Equal(t, theirs.IngressEnforced, mine.IngressEnforced, name)
		require.Equal(t, theirs.EgressEnforced, mine.EgressEnforced, name)
		for _, dir := range []Direction{Ingress, Egress} {
			for _, a := range peersToTry {
				for _, pp := range ports {
					m1 := mine.Decide(dir, pp.proto, pp.port, here.IdentityOf(a), a)
					m2 := theirs.Decide(dir, pp.proto, pp.port, there.IdentityOf(a), a)
					what := fmt.Sprintf("%s %s peer %s %s", name, dir, a, entryPorts(pp.proto, pp.port, 16))
					require.Equal(t, m2.Found, m1.Found, what)
					if m1.Found {
						require.Equal(t, there.RuleName(m2.Entry.Rule), here.RuleName(m1.Entry.Rule), what)
						require.Equal(t, m2.Peer, m1.Peer, what)
					}
					checked++
				}
			}
		}
	}
	t.Logf("%d decisions compared", checked)

	_, err := here.PolicyOf(nn("y/nope"))
	require.ErrorContains(t, err, "y/nope is not in the model")
}

func TestIdentityOf(t *testing.T) {
	s := netpolCluster()
	e := newEngine(t, s)
	id, ok := e.PodIdentity(nn("x/a"))
	require.True(t, ok)
	require.Equal(t, id, e.IdentityOf(addr("10.244.1.1")))
	require.Equal(t, identity.Host, e.IdentityOf(addr("192.168.1.1")), "this node")
	require.Equal(t, identity.RemoteNode, e.IdentityOf(addr("192.168.1.2")), "another node")
	require.Equal(t, identity.World, e.IdentityOf(addr("8.8.8.8")))
	require.Equal(t, identity.World, e.IdentityOf(netip.Addr{}))
}

// Decide's precedence is the datapath's (bpf/lib/policy.h): the longest
// match, then redirect over allow, then the more specific peer.
func TestDecidePrecedence(t *testing.T) {
	const peer identity.ID = 300
	class := identity.LocalCIDRBase
	p := &EndpointPolicy{
		IngressEnforced: true,
		CIDRs:           []CIDREntry{{Direction: Ingress, Prefix: prefix("10.0.0.0/8"), Class: class}},
		Entries: []Entry{
			{Identity: 0, Direction: Ingress, Protocol: ProtoTCP, Port: 80, PortPrefixLen: 16, Verdict: Allow, Rule: 10},
			{Identity: peer, Direction: Ingress, Protocol: ProtoAny, Verdict: Allow, Rule: 11},
			{Identity: peer, Direction: Ingress, Protocol: ProtoTCP, Port: 8080, PortPrefixLen: 16, Verdict: Allow, Rule: 12},
			{Identity: class, Direction: Ingress, Protocol: ProtoTCP, Port: 8080, PortPrefixLen: 16, Verdict: Redirect, ProxyPort: 15001, Rule: 13},
			{Identity: class, Direction: Ingress, Protocol: ProtoUDP, Port: 0, PortPrefixLen: 0, Verdict: Allow, Rule: 14},
		},
	}
	for _, tc := range []struct {
		name  string
		peer  identity.ID
		addr  string
		proto uint8
		port  uint16
		rule  RuleID
		kind  int
	}{
		{"any peer's port beats the identity's any port", peer, "192.0.2.1", ProtoTCP, 80, 10, PeerAny},
		{"identity, any port", peer, "192.0.2.1", ProtoTCP, 443, 11, PeerIdentity},
		{"equal length: redirect beats the identity's allow", peer, "10.1.1.1", ProtoTCP, 8080, 13, PeerCIDR},
		{"identity's port outside the block", peer, "192.0.2.1", ProtoTCP, 8080, 12, PeerIdentity},
		{"class protocol beats identity any", peer, "10.1.1.1", ProtoUDP, 53, 14, PeerCIDR},
		{"nothing for another identity", 400, "192.0.2.1", ProtoTCP, 443, RuleNone, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := p.Decide(Ingress, tc.proto, tc.port, tc.peer, addr(tc.addr))
			require.Equal(t, tc.rule != RuleNone, m.Found, "%+v", m)
			require.Equal(t, tc.rule, m.Entry.Rule, "%+v", m)
			require.Equal(t, tc.kind, m.Peer)
		})
	}
}
