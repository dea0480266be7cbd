package policy

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// clusterOracle decides a connection the way the network-policy-api
// documents ClusterNetworkPolicy, straight from the model's objects:
// Admin policies by priority (then name) and their rules in order, the
// first match deciding (Pass: on to NetworkPolicy); NetworkPolicy, where
// one covers the pod, deciding alone (oracle); else Baseline in the same
// order (Pass: the default); else allowed.
func clusterOracle(s *model.State, nodeName string, ep *model.Pod, dir Direction, addr netip.Addr, proto uint8, port uint16) bool {
	nodeOwned, hostOwned := false, false
	for _, n := range s.Nodes {
		for _, na := range n.Addresses {
			if a, err := netip.ParseAddr(na.Address); err == nil && a == addr &&
				(na.Type == model.NodeInternalIP || na.Type == model.NodeExternalIP) {
				nodeOwned = true
				hostOwned = hostOwned || n.Name == nodeName
			}
		}
	}
	// The pods holding addr, and the one the ipcache gives it to (none
	// when a node has it).
	var owner *model.Pod
	var holders []*model.Pod
	for _, p := range s.Pods {
		if identity.HasIdentity(p) && slices.Contains(p.IPs, addr) {
			holders = append(holders, p)
		}
	}
	slices.SortFunc(holders, func(a, b *model.Pod) int { return compareNames(a.Key().NamespacedName(), b.Key().NamespacedName()) })
	if len(holders) > 0 && !nodeOwned {
		owner = holders[0]
	}
	var admin, baseline []*model.ClusterNetworkPolicy
	for _, p := range s.ClusterPolicies {
		if !p.Subject.MatchesPod(ep.Labels, s.NamespaceLabels(ep.Namespace)) {
			continue
		}
		if p.Tier == model.TierAdmin {
			admin = append(admin, p)
		} else {
			baseline = append(baseline, p)
		}
	}
	byPriority := func(a, b *model.ClusterNetworkPolicy) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	}
	slices.SortFunc(admin, byPriority)
	slices.SortFunc(baseline, byPriority)
	rulesOf := func(p *model.ClusterNetworkPolicy) []model.ClusterRule {
		if dir == Egress {
			return p.Egress
		}
		return p.Ingress
	}
	if dir == Ingress && hostOwned && (len(admin)+len(baseline) > 0) {
		return true // the node reaches its pods
	}
	peerMatches := func(peer *model.ClusterPeer, owner *model.Pod) bool {
		switch {
		case peer.SelectsPods():
			return owner != nil && peer.MatchesPod(owner.Labels, s.NamespaceLabels(owner.Namespace))
		case peer.Nodes != nil:
			for _, n := range s.Nodes {
				if !peer.Nodes.Matches(n.Labels) {
					continue
				}
				for _, na := range n.Addresses {
					if a, err := netip.ParseAddr(na.Address); err == nil && a == addr &&
						(na.Type == model.NodeInternalIP || na.Type == model.NodeExternalIP) {
						return true
					}
				}
			}
			return false
		}
		for _, p := range peer.Networks {
			if p.Contains(addr) {
				return true
			}
		}
		return false
	}
	portMatches := func(pp *model.ClusterPort, owner *model.Pod) bool {
		if pp.Name != "" {
			// The destination's container port: the endpoint's own for
			// ingress, the peer pod's for egress.
			dst := ep
			if dir == Egress {
				dst = owner
			}
			if dst == nil {
				return false
			}
			for _, cp := range dst.Ports {
				if n, ok := protoNumber(cp.Protocol); ok && cp.Name == pp.Name && n == proto && cp.Port == port {
					return true
				}
			}
			return false
		}
		if n, ok := protoNumber(pp.Protocol); !ok || n != proto {
			return false
		}
		if pp.EndPort != 0 {
			return port >= pp.Port && port <= pp.EndPort
		}
		return port == pp.Port
	}
	// A rule matches with the address's owner, or, for an egress named
	// port, with any pod holding the address (as for NetworkPolicy).
	matchesWith := func(r *model.ClusterRule, owner *model.Pod, named bool) bool {
		if !slices.ContainsFunc(r.Peers, func(p model.ClusterPeer) bool { return peerMatches(&p, owner) }) {
			return false
		}
		return (len(r.Ports) == 0 && !named) || slices.ContainsFunc(r.Ports, func(p model.ClusterPort) bool {
			return (p.Name != "" && dir == Egress) == named && portMatches(&p, owner)
		})
	}
	ruleMatches := func(r *model.ClusterRule) bool {
		if matchesWith(r, owner, false) {
			return true
		}
		if dir == Egress {
			for _, h := range holders {
				if matchesWith(r, h, true) {
					return true
				}
			}
		}
		return false
	}
admin:
	for _, p := range admin {
		for _, r := range rulesOf(p) {
			if !ruleMatches(&r) {
				continue
			}
			switch r.Action {
			case model.ActionAccept:
				return true
			case model.ActionDeny:
				return false
			}
			break admin
		}
	}
	pt := model.PolicyTypeIngress
	if dir == Egress {
		pt = model.PolicyTypeEgress
	}
	for _, np := range s.NetworkPolicies {
		if np.Namespace == ep.Namespace && np.Covers(pt) && np.PodSelector.Matches(ep.Labels) {
			return oracle(s, nodeName, ep, dir, addr, proto, port)
		}
	}
	for _, p := range baseline {
		for _, r := range rulesOf(p) {
			if ruleMatches(&r) {
				return r.Action != model.ActionDeny
			}
		}
	}
	return true
}

// clusterPolicy is a random ClusterNetworkPolicy over the gen's
// namespaces, pods, nodes and addresses.
func (g gen) clusterPolicy() *model.ClusterNetworkPolicy {
	p := &model.ClusterNetworkPolicy{
		Name: fmt.Sprint("c", g.r.IntN(5)), Tier: model.ClusterTier(g.pick("Admin", "Admin", "Baseline")),
		Priority: int32(g.r.IntN(3) * 10),
	}
	if g.r.IntN(2) == 0 {
		p.Subject = model.ClusterPeer{NamespaceSelector: g.selector()}
	} else {
		p.Subject = model.ClusterPeer{NamespaceSelector: g.selector(), PodSelector: g.selector()}
	}
	rules := func(egress bool) []model.ClusterRule {
		var out []model.ClusterRule
		for range g.r.IntN(4) {
			r := model.ClusterRule{Action: model.ClusterAction(g.pick("Accept", "Deny", "Pass"))}
			for range 1 + g.r.IntN(2) {
				switch k := g.r.IntN(5); {
				case k == 0:
					r.Peers = append(r.Peers, model.ClusterPeer{NamespaceSelector: g.selector()})
				case k == 1 || !egress:
					r.Peers = append(r.Peers, model.ClusterPeer{NamespaceSelector: g.selector(), PodSelector: g.selector()})
				case k == 2:
					r.Peers = append(r.Peers, model.ClusterPeer{Nodes: g.selector()})
				default:
					n := model.ClusterPeer{}
					for range 1 + g.r.IntN(2) {
						n.Networks = append(n.Networks, prefix(g.pick("10.0.0.0/28", "10.0.0.4/30", "10.0.0.5/32", "10.0.0.0/8", "0.0.0.0/0", "192.168.0.0/16", "fd00::/64")))
					}
					r.Peers = append(r.Peers, n)
				}
			}
			namedOK := !slices.ContainsFunc(r.Peers, func(p model.ClusterPeer) bool { return !p.SelectsPods() })
			for range g.r.IntN(3) {
				switch g.r.IntN(6) {
				case 0:
					r.Ports = append(r.Ports, model.ClusterPort{Protocol: model.ProtocolTCP, Port: 80})
				case 1:
					r.Ports = append(r.Ports, model.ClusterPort{Protocol: model.ProtocolUDP, Port: 53})
				case 2:
					r.Ports = append(r.Ports, model.ClusterPort{Protocol: model.ProtocolTCP, Port: 8000, EndPort: 8063})
				case 3:
					if namedOK {
						r.Ports = append(r.Ports, model.ClusterPort{Name: g.pick("http", "dns")})
					}
				case 4:
					r.Ports = append(r.Ports, model.ClusterPort{Protocol: model.ProtocolTCP, Port: 8050, EndPort: 9000})
				default:
					r.Ports = append(r.Ports, model.ClusterPort{Protocol: model.ProtocolSCTP, Port: 7})
				}
			}
			out = append(out, r)
		}
		return out
	}
	p.Ingress, p.Egress = rules(false), rules(true)
	return p
}

// clusterChange is gen.change with ClusterNetworkPolicies, and
// SluiceL7Policies more often.
func (g gen) clusterChange(s *model.State) model.Change {
	c := g.change(s)
	if g.r.IntN(6) == 0 {
		return model.Change{Op: model.OpUpsert, Object: g.l7policy()}
	}
	if g.r.IntN(4) == 0 {
		var obj model.Object = g.clusterPolicy()
		if g.r.IntN(4) == 0 {
			if cur, ok := s.Get(obj.Key()); ok {
				obj = cur
			}
			return model.Change{Op: model.OpDelete, Object: obj}
		}
		return model.Change{Op: model.OpUpsert, Object: obj}
	}
	if n, ok := c.Object.(*model.Node); ok && c.Op == model.OpUpsert {
		m := *n
		m.Labels = map[string]string{"role": g.pick("worker", "infra")}
		c.Object = &m
	}
	return c
}

// TestClusterEntriesMatchOracle checks, on random states with
// ClusterNetworkPolicies of both tiers, NetworkPolicies and
// SluiceL7Policies, applied one change at a time, that the datapath's
// lookup on the computed entries decides every probe as the API's rules do
// (clusterOracle), and on an L7 port hands what they admit to the listener
// of the peer's rules (oracleL7Tiered).
func TestClusterEntriesMatchOracle(t *testing.T) {
	var addrs []netip.Addr
	for i := 1; i <= 16; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	for _, a := range []string{"fd00::1", "fd00::2", "192.168.0.1", "192.168.0.2", "203.0.113.5", "10.1.2.3"} {
		addrs = append(addrs, addr(a))
	}
	type pp struct {
		proto uint8
		port  uint16
	}
	ports := []pp{{ProtoTCP, 80}, {ProtoTCP, 8080}, {ProtoTCP, 8050}, {ProtoTCP, 8063}, {ProtoTCP, 9000},
		{ProtoUDP, 53}, {ProtoTCP, 53}, {ProtoSCTP, 7}, {ProtoUDP, 80}, {1, 0}}

	seeds, steps := 6, 150
	if testing.Short() {
		seeds, steps = 2, 60
	}
	probes, denied, redirects, tieredRedirects := 0, 0, 0, 0
	for seed := range seeds {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 1919))}
		state := &model.State{}
		e := newEngine(t, state)
		for step := range steps {
			c := g.clusterChange(state)
			if c.Op == model.OpDelete {
				state.Delete(c.Object.Key())
			} else {
				state.Upsert(c.Object)
			}
			res := e.Apply([]model.Change{c})
			require.Empty(t, res.Errors, "seed %d step %d", seed, step)
			ipc := e.IPCache()
			for _, p := range e.Endpoints() {
				pod := state.Pods[p.Pod]
				for _, dir := range []Direction{Ingress, Egress} {
					for _, a := range addrs {
						for _, q := range ports {
							got, rule := decide(p, ipc, dir, a, q.proto, q.port)
							want := clusterOracle(state, localNode, pod, dir, a, q.proto, q.port)
							probes++
							if !want {
								denied++
							}
							if got != want {
								require.Equal(t, want, got, "seed %d step %d: %s %s peer %s %s (rule %s)\n%s",
									seed, step, p.Pod, dir, a, entryPorts(q.proto, q.port, 16), e.RuleName(rule), describe(state, a)+fmt.Sprintf("cidrs %v ipcache %v", p.CIDRs, longestMatch(ipc, a)))
							}
							if dir != Ingress || q.proto != ProtoTCP || nodeAddress(state, a) {
								continue // the node's own connections are never handed over
							}
							wantL7 := oracleL7(state, pod, p.Audit, a, q.port)
							if p.IngressTiered {
								wantL7 = oracleL7Tiered(state, pod, p.Audit, a, q.port)
							}
							if wantL7 == "" {
								continue
							}
							gotL7 := verdictOf(t, e, p.Pod.String(), a, q.port)
							if strings.HasPrefix(gotL7, "redirect") {
								redirects++
								if p.IngressTiered {
									tieredRedirects++
								}
							}
							require.Equal(t, wantL7, gotL7, "seed %d step %d: %s from %s TCP/%d (tiered %v)\n%s",
								seed, step, p.Pod, a, q.port, p.IngressTiered, describe(state, a))
						}
					}
				}
			}
		}
	}
	t.Logf("%d probes, %d denied, %d redirected (%d by tiered ingress)", probes, denied, redirects, tieredRedirects)
	require.Positive(t, tieredRedirects, "the generator makes redirects under tiers")
}

// describe prints what a failed probe needs: the pods holding the
// address, and the policies.
func describe(s *model.State, a netip.Addr) string {
	out := ""
	for _, p := range s.Pods {
		if slices.Contains(p.IPs, a) {
			out += fmt.Sprintf("pod %s %+v\n", p.Key(), *p)
		}
	}
	for _, np := range s.NetworkPolicies {
		out += fmt.Sprintf("np %s %+v\n", np.Key(), *np)
	}
	for _, cp := range s.ClusterPolicies {
		out += fmt.Sprintf("cnp %+v\n", *cp)
	}
	return out
}

// A pod with SluiceL7Policy ports whose ingress ClusterNetworkPolicy
// rules decide keeps its L7 rules: the tiers decide first (an Admin Deny
// stays a Deny, on the L7 port too), and what they allow there (an Admin
// Accept included) is redirected to the listener of the rules that apply
// to the peer, an entry's from selecting as without tiers.
func TestClusterPolicyWithL7OnTheSamePod(t *testing.T) {
	s := netpolCluster()
	s.Upsert(l7pol("x/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(l7pol("x/admin", sel("pod", "a"), l7port(model.PortNumber(80), "DELETE", model.Peer{PodSelector: sel("pod", "b")})))
	s.Upsert(l7pol("z/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(&model.ClusterNetworkPolicy{Name: "guard", Tier: model.TierAdmin, Priority: 1,
		Subject: model.ClusterPeer{NamespaceSelector: sel("ns", "x")},
		Ingress: []model.ClusterRule{{Action: model.ActionDeny, Peers: []model.ClusterPeer{{NamespaceSelector: sel("ns", "y")}}}}})
	s.Upsert(&model.ClusterNetworkPolicy{Name: "trust-z", Tier: model.TierAdmin, Priority: 2,
		Subject: model.ClusterPeer{NamespaceSelector: sel("ns", "x")},
		Ingress: []model.ClusterRule{{Action: model.ActionAccept, Peers: []model.ClusterPeer{{NamespaceSelector: sel("ns", "z")}}}}})
	e, err := NewEngine(Options{NodeName: localNode}, nil)
	require.NoError(t, err)
	res := e.Sync(s)
	require.Empty(t, res.Errors)
	p := mustEndpoint(t, e, "x/a")
	require.True(t, p.IngressTiered)
	podAddr := func(p string) netip.Addr { a, _ := endpointAddr(s, p); return a }
	for _, tc := range []struct {
		peer string
		port uint16
		want string
	}{
		{"y/b", 80, "deny"}, // the Admin Deny holds on the L7 port
		{"y/b", 81, "deny"},
		{"z/b", 80, "redirect to x/api#0"}, // an Admin Accept does not bypass the proxy
		{"z/b", 81, "allow"},
		{"x/c", 80, "redirect to x/api#0"},           // the default allow, through the proxy
		{"x/b", 80, "redirect to x/admin#0 x/api#0"}, // x/admin's from selects x/b
		{"x/b", 81, "allow"},
		{"203.0.113.5", 80, "redirect to x/api#0"},
	} {
		require.Equal(t, tc.want, verdictOf(t, e, "x/a", podAddr(tc.peer), tc.port), "%s to x/a port %d", tc.peer, tc.port)
	}
	m := p.Decide(Ingress, ProtoTCP, 80, e.IdentityOf(podAddr("y/b")), podAddr("y/b"))
	require.Equal(t, "cnp/guard ingress[0]", e.RuleName(m.Entry.Rule))
	require.Equal(t, "Admin", e.RuleTier(m.Entry.Rule))
	m = p.Decide(Ingress, ProtoTCP, 80, e.IdentityOf(podAddr("z/b")), podAddr("z/b"))
	require.Equal(t, Redirect, m.Entry.Verdict)
	require.Equal(t, "x/api l7 ports[0]", e.RuleName(m.Entry.Rule), "a redirect names the L7 rules")
	require.Empty(t, e.RuleTier(m.Entry.Rule), "not the tier that allowed it")
	require.Equal(t, "redirect to z/api#0", verdictOf(t, e, "z/a", podAddr("x/b"), 80),
		"a pod no ClusterNetworkPolicy selects keeps its L7 rules")
}

// The shape of the compiled entries for a documented guardrail (an Admin
// Deny from namespace y on TCP/80): any peer and the node get an entry per
// port interval (TCP 0-79, 80, 81-65535, split into prefixes, and the
// other protocols), the denied identities one entry each, where they
// differ from any peer.
func TestClusterEntriesOnlyWhereTheyDiffer(t *testing.T) {
	s := netpolCluster()
	s.Upsert(&model.ClusterNetworkPolicy{Name: "no-y", Tier: model.TierAdmin, Priority: 1,
		Subject: model.ClusterPeer{NamespaceSelector: sel("ns", "x")},
		Ingress: []model.ClusterRule{{Action: model.ActionDeny, Peers: []model.ClusterPeer{{NamespaceSelector: sel("ns", "y")}},
			Ports: []model.ClusterPort{{Protocol: model.ProtocolTCP, Port: 80}}}}})
	e := newEngine(t, s)
	p, ok := e.Endpoint(nn("x/a"))
	require.True(t, ok)
	require.True(t, p.IngressTiered)
	require.False(t, p.EgressEnforced, "no rule for egress: not tiered, not enforced")
	count := map[identity.ID]int{}
	for _, en := range p.Entries {
		count[en.Identity]++
		if en.Identity != identity.Unknown && en.Identity != identity.Host {
			require.Equal(t, Entry{Identity: en.Identity, Direction: Ingress, Protocol: ProtoTCP, Port: 80, PortPrefixLen: 16,
				Verdict: Deny, Rule: en.Rule}, en, "y's identities: one deny entry each")
			require.Equal(t, "cnp/no-y ingress[0]", e.RuleName(en.Rule))
		}
	}
	// 1 any-protocol + TCP 0-63, 64-79, 80, and 14 prefixes for 81-65535.
	require.Equal(t, 18, count[identity.Unknown])
	require.Equal(t, 18, count[identity.Host])
	require.Len(t, count, 2+3, "any peer, the node, y/a, y/b, y/c")
	require.Empty(t, p.CIDRs)
}

// Egress named ports are resolved per destination pod, so every pod's
// address is decided on its own; an address that decides as the prefix
// holding it needs no CIDR entry. Here the Admin tier decides every pod
// address (Accept y's /24, Deny the rest of 10/8) before the named port
// could matter: two prefixes, no /32.
func TestClusterCIDRsOnlyWhereTheyDiffer(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/named", sel("pod", "a")).egress(rl(peers(nsPeer(sel("ns", "y"))), named(model.ProtocolTCP, "serve-80-tcp"))).build())
	s.Upsert(&model.ClusterNetworkPolicy{Name: "nets", Tier: model.TierAdmin, Priority: 1,
		Subject: model.ClusterPeer{NamespaceSelector: sel("ns", "x")},
		Egress: []model.ClusterRule{
			{Action: model.ActionAccept, Peers: []model.ClusterPeer{{Networks: []netip.Prefix{prefix("10.244.2.0/24")}}}},
			{Action: model.ActionDeny, Peers: []model.ClusterPeer{{Networks: []netip.Prefix{prefix("10.0.0.0/8")}}}},
		}})
	e := newEngine(t, s)
	p, ok := e.Endpoint(nn("x/a"))
	require.True(t, ok)
	var got []string
	for _, c := range p.CIDRs {
		got = append(got, c.Prefix.String())
	}
	require.Equal(t, []string{"10.0.0.0/8", "10.244.2.0/24"}, got)
	ok, rule := decide(p, e.IPCache(), Egress, addr("10.244.2.2"), ProtoTCP, 81)
	require.True(t, ok)
	require.Equal(t, "cnp/nets egress[0]", e.RuleName(rule))
	ok, rule = decide(p, e.IPCache(), Egress, addr("10.244.3.2"), ProtoTCP, 80)
	require.False(t, ok)
	require.Equal(t, "cnp/nets egress[1]", e.RuleName(rule))

	// Without the Admin tier, y's pods are decided per address: the named
	// port admits them on 80 only.
	s.Delete(model.Key{Kind: model.KindClusterNetworkPolicy, Name: "nets"})
	s.Upsert(&model.ClusterNetworkPolicy{Name: "nets", Tier: model.TierBaseline, Priority: 1,
		Subject: model.ClusterPeer{NamespaceSelector: sel("ns", "x")},
		Egress:  []model.ClusterRule{{Action: model.ActionDeny, Peers: []model.ClusterPeer{{Networks: []netip.Prefix{prefix("192.0.2.0/24")}}}}}})
	e = newEngine(t, s)
	p, _ = e.Endpoint(nn("x/a"))
	got = nil
	for _, c := range p.CIDRs {
		got = append(got, c.Prefix.String())
	}
	require.Equal(t, []string{"10.244.2.1/32", "10.244.2.2/32", "10.244.2.3/32"}, got, "y's pods, and not the Baseline's network: NetworkPolicy isolates x/a")
	ok, _ = decide(p, e.IPCache(), Egress, addr("10.244.2.2"), ProtoTCP, 80)
	require.True(t, ok)
	ok, _ = decide(p, e.IPCache(), Egress, addr("10.244.2.2"), ProtoTCP, 81)
	require.False(t, ok)
}
