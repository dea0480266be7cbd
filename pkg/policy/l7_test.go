package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// l7pol builds an L7 policy: ports are l7port values.
func l7pol(name string, subject *model.LabelSelector, ports ...model.L7Port) *model.L7Policy {
	n := nn(name)
	return &model.L7Policy{Namespace: n.Namespace, Name: n.Name, PodSelector: *subject, Ports: ports}
}

// l7port is a port entry allowing method on every path, for peers from.
func l7port(port model.PortRef, method string, from ...model.Peer) model.L7Port {
	return model.L7Port{Port: port, Protocol: model.ProtocolTCP, From: from, HTTP: []model.HTTPRule{{Method: method}}}
}

// verdictOf describes what the datapath does with a TCP connection from
// peer to endpoint ep's port: "deny", "allow", or "redirect to RULES"
// where RULES are the listener's port entries ("ns/policy#index", or
// "deny-all" for a listener without rules), with " audit" for one in
// audit mode.
func verdictOf(t *testing.T, e *Engine, ep string, peer netip.Addr, port uint16) string {
	t.Helper()
	p, ok := e.Endpoint(nn(ep))
	require.True(t, ok, "%s is an endpoint", ep)
	en, enforced, ok := decideEntry(p, e.IPCache(), Ingress, peer, ProtoTCP, port)
	switch {
	case !enforced:
		return "allow (not enforced)"
	case !ok, en.Verdict == Deny:
		return "deny"
	case en.Verdict == Allow:
		return "allow"
	}
	require.NotZero(t, en.ProxyPort, "a redirect without a proxy port")
	return "redirect to " + describeListener(e, en.ProxyPort)
}

func describeListener(e *Engine, port uint16) string {
	ls := e.listeners[port]
	if ls == nil {
		return fmt.Sprintf("no listener on %d", port)
	}
	var parts []string
	for _, en := range ls.rules {
		parts = append(parts, en.pol.String()+"#"+fmt.Sprint(en.index))
	}
	if len(parts) == 0 {
		parts = []string{"deny-all"}
	}
	s := strings.Join(parts, " ")
	if ls.audit {
		s += " audit"
	}
	return s
}

// The cases of the issue, on the upstream network-policy layout (pods a, b
// and c in namespaces x, y and z, all on this node, labelled pod=NAME).
func TestL7Redirects(t *testing.T) {
	world := addr("203.0.113.5")
	podAddr := func(s *model.State, p string) netip.Addr { a, _ := endpointAddr(s, p); return a }
	type probe struct {
		from string // a pod, or "world"
		port uint16
		want string
	}
	tests := []struct {
		name   string
		objs   []model.Object
		probes []probe
	}{
		{
			name: "no NetworkPolicy: every peer is redirected on the L7 port, the others stay open",
			objs: []model.Object{l7pol("x/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET"))},
			probes: []probe{
				{"x/b", 80, "redirect to x/api#0"},
				{"y/c", 80, "redirect to x/api#0"},
				{"world", 80, "redirect to x/api#0"},
				{"x/b", 81, "allow"},
			},
		},
		{
			name: "L4 first: a peer NetworkPolicy denies gets no redirect",
			objs: []model.Object{
				netpol("x/np", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))), tcp(80))).build(),
				l7pol("x/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET")),
			},
			probes: []probe{
				{"x/b", 80, "redirect to x/api#0"},
				{"x/c", 80, "deny"},
				{"world", 80, "deny"},
				{"x/b", 81, "deny"},
			},
		},
		{
			name: "different from sets, different listeners: the union of what applies",
			objs: []model.Object{
				netpol("x/np", sel("pod", "a")).ingress(rl(nil, tcp(80))).build(),
				l7pol("x/api", sel("pod", "a"),
					l7port(model.PortNumber(80), "GET", podPeer(sel("pod", "b"))),
					l7port(model.PortNumber(80), "DELETE", podPeer(sel("pod", "c")), nsPeer(sel("ns", "y")))),
				l7pol("x/health", sel(), l7port(model.PortNumber(80), "HEAD")),
			},
			probes: []probe{
				{"x/b", 80, "redirect to x/api#0 x/health#0"},
				{"x/c", 80, "redirect to x/api#1 x/health#0"},
				{"y/c", 80, "redirect to x/api#1 x/health#0"},
				{"z/b", 80, "redirect to x/health#0"},
				{"world", 80, "redirect to x/health#0"},
			},
		},
		{
			name: "a peer no entry names gets a listener that denies every request",
			objs: []model.Object{l7pol("x/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET", podPeer(sel("pod", "b"))))},
			probes: []probe{
				{"x/b", 80, "redirect to x/api#0"},
				{"x/c", 80, "redirect to deny-all"},
				{"world", 80, "redirect to deny-all"},
			},
		},
		{
			name:   "named port, resolved against the pod",
			objs:   []model.Object{l7pol("x/api", sel("pod", "a"), l7port(model.PortName("serve-81-tcp"), "GET"))},
			probes: []probe{{"x/b", 81, "redirect to x/api#0"}, {"x/b", 80, "allow"}},
		},
		{
			name: "audit: the policy's, or the namespace's",
			objs: []model.Object{
				&model.L7Policy{Namespace: "x", Name: "api", PodSelector: *sel("pod", "a"), Audit: true,
					Ports: []model.L7Port{l7port(model.PortNumber(80), "GET")}},
				l7pol("y/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET")),
				&model.Namespace{Name: "y", Labels: map[string]string{"ns": "y", "kubernetes.io/metadata.name": "y"},
					Annotations: map[string]string{AuditAnnotation: "true"}},
			},
			probes: []probe{{"x/b", 80, "redirect to x/api#0 audit"}},
		},
		{
			name: "ipBlock peers are matched as the world is",
			objs: []model.Object{
				netpol("x/np", sel("pod", "a")).ingress(rl(peers(ipPeer("10.244.0.0/16"), ipPeer("203.0.113.0/24")), tcp(80))).build(),
				l7pol("x/api", sel("pod", "a"),
					l7port(model.PortNumber(80), "GET", podPeer(sel("pod", "b"))),
					l7port(model.PortNumber(80), "HEAD")),
			},
			probes: []probe{
				{"x/b", 80, "redirect to x/api#1"},
				{"world", 80, "redirect to x/api#1"},
				{"x/b", 81, "deny"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := netpolCluster()
			for _, o := range tt.objs {
				s.Upsert(o)
			}
			e := newEngine(t, s)
			for _, pr := range tt.probes {
				from := world
				if pr.from != "world" {
					from = podAddr(s, pr.from)
				}
				assert.Equal(t, pr.want, verdictOf(t, e, "x/a", from, pr.port), "%s to x/a:%d", pr.from, pr.port)
			}
			checkBookkeeping(t, e)
		})
	}
}

// The compiled form: the entries, the listeners and their rules.
func TestL7Config(t *testing.T) {
	s := netpolCluster()
	limit := &l7.RateLimit{Requests: 10, Per: time.Second, Burst: 20, PerClient: true}
	jwt := &model.JWTProvider{Issuer: "https://issuer", Audiences: []string{"api"}, JWKS: `{"keys":[{}]}`,
		Claims: []l7.ClaimMatch{{Claim: "scope", Values: []string{"read"}}}}
	s.Upsert(&model.L7Policy{Namespace: "x", Name: "api", PodSelector: *sel("pod", "a"), Ports: []model.L7Port{{
		Port: model.PortNumber(80), Protocol: model.ProtocolTCP, JWT: jwt,
		HTTP: []model.HTTPRule{
			{Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}, RateLimit: limit},
			{Method: "DELETE", JWTClaims: []l7.ClaimMatch{{Claim: "groups", Values: []string{"admins"}}}},
		},
	}}})
	// The same policy's pods share its listener.
	s.Upsert(l7pol("x/other", sel("pod", "c"), l7port(model.PortNumber(8080), "POST")))
	e := newEngine(t, s)

	a, _ := e.Endpoint(nn("x/a"))
	assert.True(t, a.IngressEnforced)
	assert.Equal(t, []Entry{
		{Identity: 0, Direction: Ingress, Verdict: Allow, Rule: RuleL7Open},
		{Identity: 0, Direction: Ingress, Protocol: ProtoTCP, Port: 80, PortPrefixLen: 16, Verdict: Redirect, ProxyPort: 15000,
			Rule: e.ruleIDs[RuleRef{Policy: nn("x/api"), Direction: Ingress, Index: 0, L7: true}]},
		hostAllow(),
	}, a.Entries)
	ref, ok := e.Rule(a.Entries[1].Rule)
	require.True(t, ok)
	assert.Equal(t, "x/api l7 ports[0]", ref.String())

	provider := jwtProvider(jwt)
	assert.Equal(t, l7.Config{Listeners: []l7.Listener{
		{
			Port: 15000, Name: "l7-15000",
			Sources: []l7.PortRef{{Namespace: "x", Policy: "api", Port: 80, Protocol: "TCP"}},
			Rules: []l7.Rule{
				{
					Ref:    l7.RuleRef{Namespace: "x", Policy: "api", PortIndex: 0, RuleIndex: 0},
					Method: "GET", Path: l7.PathMatch{Kind: l7.PathPrefix, Value: "/api/"}, RateLimit: limit,
					JWT: &l7.JWTRequirement{Provider: provider, Issuer: "https://issuer", Audiences: []string{"api"}, JWKS: `{"keys":[{}]}`,
						Claims: []l7.ClaimMatch{{Claim: "scope", Values: []string{"read"}}}},
				},
				{
					Ref:    l7.RuleRef{Namespace: "x", Policy: "api", PortIndex: 0, RuleIndex: 1},
					Method: "DELETE",
					JWT: &l7.JWTRequirement{Provider: provider, Issuer: "https://issuer", Audiences: []string{"api"}, JWKS: `{"keys":[{}]}`,
						Claims: []l7.ClaimMatch{{Claim: "scope", Values: []string{"read"}}, {Claim: "groups", Values: []string{"admins"}}}},
				},
			},
		},
		{
			Port: 15001, Name: "l7-15001",
			Sources: []l7.PortRef{{Namespace: "x", Policy: "other", Port: 8080, Protocol: "TCP"}},
			Rules:   []l7.Rule{{Ref: l7.RuleRef{Namespace: "x", Policy: "other"}, Method: "POST"}},
		},
	}}, e.L7Config())

	// Two pods of one policy share its listener.
	s.Upsert(pod("x/c2", localNode, "10.244.1.9", "pod", "c"))
	e.Sync(s)
	c, _ := e.Endpoint(nn("x/c"))
	c2, _ := e.Endpoint(nn("x/c2"))
	assert.Equal(t, proxyPorts(c), proxyPorts(c2))
	assert.Len(t, e.L7Config().Listeners, 2)

	// A rule's change keeps its listener's port (Envoy updates routes, not
	// listeners); removing the policy frees it.
	s.Upsert(l7pol("x/other", sel("pod", "c"), l7port(model.PortNumber(8080), "PUT")))
	e.Sync(s)
	assert.Equal(t, []uint16{15001}, proxyPorts(mustEndpoint(t, e, "x/c")))
	assert.Equal(t, "PUT", e.L7Config().Listeners[1].Rules[0].Method)
	s.Delete(model.Key{Kind: model.KindL7Policy, Namespace: "x", Name: "other"})
	e.Sync(s)
	assert.Empty(t, proxyPorts(mustEndpoint(t, e, "x/c")))
	assert.False(t, mustEndpoint(t, e, "x/c").IngressEnforced, "no policy left: not enforced")
	assert.Len(t, e.L7Config().Listeners, 1)
	assert.Equal(t, 1, e.ports.Len())
	checkBookkeeping(t, e)
}

func mustEndpoint(t *testing.T, e *Engine, pod string) *EndpointPolicy {
	t.Helper()
	p, ok := e.Endpoint(nn(pod))
	require.True(t, ok)
	return p
}

func proxyPorts(p *EndpointPolicy) []uint16 {
	var out []uint16
	for _, en := range p.Entries {
		if en.Verdict == Redirect && !slices.Contains(out, en.ProxyPort) {
			out = append(out, en.ProxyPort)
		}
	}
	return out
}

// Proxy ports are kept across restarts (the saved allocation), and a
// range too small fails the rule sets without a port closed.
func TestL7ProxyPorts(t *testing.T) {
	s := netpolCluster()
	s.Upsert(l7pol("x/one", sel("pod", "a"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(l7pol("x/two", sel("pod", "b"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(l7pol("x/three", sel("pod", "c"), l7port(model.PortNumber(80), "GET")))
	e := newEngine(t, s)
	saved := e.ports.Snapshot()
	before := map[string][]uint16{}
	for _, p := range []string{"x/a", "x/b", "x/c"} {
		before[p] = proxyPorts(mustEndpoint(t, e, p))
	}

	// A restart where the policies come in the other order.
	ports, err := l7.NewPorts(l7.DefaultPortRange)
	require.NoError(t, err)
	require.NoError(t, ports.Restore(saved))
	s.Delete(model.Key{Kind: model.KindL7Policy, Namespace: "x", Name: "one"})
	e2 := newEngine(t, s, func(o *Options) { o.ProxyPorts = ports })
	assert.Equal(t, before["x/b"], proxyPorts(mustEndpoint(t, e2, "x/b")))
	assert.Equal(t, before["x/c"], proxyPorts(mustEndpoint(t, e2, "x/c")))
	assert.Equal(t, 2, ports.Len(), "the unused restored port is freed")
	s.Upsert(l7pol("x/four", sel("pod", "a"), l7port(model.PortNumber(80), "GET")))
	e2.Sync(s)
	assert.Equal(t, before["x/a"], proxyPorts(mustEndpoint(t, e2, "x/a")), "the lowest free port")

	// Two ports for three rule sets.
	small, err := l7.NewPorts(l7.PortRange{Min: 15000, Max: 15001})
	require.NoError(t, err)
	e3, err := NewEngine(Options{NodeName: localNode, ProxyPorts: small}, nil)
	require.NoError(t, err)
	res := e3.Sync(s)
	require.Len(t, res.Errors, 1)
	assert.ErrorIs(t, res.Errors[0], l7.ErrPortsExhausted)
	assert.Contains(t, res.Errors[0].Error(), "endpoint x/c: proxy port range exhausted: all 2 ports of 15000-15001 are taken by other rule sets; widen --proxy-port-range")
	c := mustEndpoint(t, e3, "x/c")
	assert.Equal(t, []uint16{0}, proxyPorts(c), "redirected to no port: fails closed")
	require.Len(t, e3.L7Errors(), 1)
	assert.Contains(t, e3.L7Errors()[0].Error(), `L7 rule set "TCP/80 x/three#0" of endpoint x/c`)
}

// oracleL7 is what the datapath should do with a TCP connection from addr
// to endpoint ep's port, from the model alone: "" when no L7 entry applies
// to the port (NetworkPolicy alone decides), "deny" when NetworkPolicy
// denies it, else the listener's rules as verdictOf describes them.
func oracleL7(s *model.State, ep *model.Pod, audit bool, addr netip.Addr, port uint16) string {
	admitted := func() bool { return oracle(s, localNode, ep, Ingress, addr, ProtoTCP, port) }
	// Is addr admitted as an identity (a selector peer, or any peer), or
	// only as an address (an ipBlock)?
	byIdentity := func() bool {
		return oracleVia(s, localNode, ep, Ingress, addr, ProtoTCP, port, func(peer *model.Peer) bool { return peer == nil || peer.IPBlock == nil })
	}
	return oracleL7Listener(s, ep, audit, addr, port, admitted, byIdentity)
}

// oracleL7Tiered is oracleL7 for an endpoint whose ingress
// ClusterNetworkPolicy tiers decide (clusterOracle): the peer's identity
// picks its rules, whichever rule admitted it.
func oracleL7Tiered(s *model.State, ep *model.Pod, audit bool, addr netip.Addr, port uint16) string {
	admitted := func() bool { return clusterOracle(s, localNode, ep, Ingress, addr, ProtoTCP, port) }
	return oracleL7Listener(s, ep, audit, addr, port, admitted, func() bool { return true })
}

// oracleL7Listener is oracleL7 with the L4 decision (admitted) and whether
// the peer's identity picks its rules (byIdentity; else only the rules
// without from apply) given.
func oracleL7Listener(s *model.State, ep *model.Pod, audit bool, addr netip.Addr, port uint16, admitted, byIdentity func() bool) string {
	var entries []l7Entry
	for _, p := range s.L7Policies {
		if p.Namespace != ep.Namespace || !p.PodSelector.Matches(ep.Labels) {
			continue
		}
		for i, lp := range p.Ports {
			match := lp.Port.Number == port
			for _, cp := range ep.Ports {
				match = match || (lp.Port.Name != "" && cp.Name == lp.Port.Name && cp.Protocol == model.ProtocolTCP && cp.Port == port)
			}
			if match {
				entries = append(entries, l7Entry{pol: p.Key().NamespacedName(), index: i, st: &l7State{p: p}})
			}
		}
	}
	if len(entries) == 0 {
		return ""
	}
	slices.SortFunc(entries, compareL7Entries)
	if !admitted() {
		return "deny"
	}
	// Whose identity is addr?
	var owner *model.Pod
	for _, p := range s.Pods {
		if identity.HasIdentity(p) && slices.Contains(p.IPs, addr) && (owner == nil || compareNames(p.Key().NamespacedName(), owner.Key().NamespacedName()) < 0) {
			owner = p
		}
	}
	identified := byIdentity()
	var rules []string
	deciding := false // a rule applies
	allAudit := true
	for _, en := range entries {
		lp := en.port()
		applies := len(lp.From) == 0
		if identified && owner != nil {
			sub := identity.SubjectOf(owner, s.NamespaceLabels(owner.Namespace))
			for _, peer := range lp.From {
				ps := identity.PeerSelector{Namespace: en.pol.Namespace, PodSelector: peer.PodSelector, NamespaceSelector: peer.NamespaceSelector}
				applies = applies || ps.Matches(&sub)
			}
		}
		if applies {
			rules = append(rules, en.pol.String()+"#"+fmt.Sprint(en.index))
			deciding = true
			allAudit = allAudit && en.st.p.Audit
		}
	}
	if !deciding {
		rules = []string{"deny-all"}
		for _, en := range entries {
			allAudit = allAudit && en.st.p.Audit
		}
	}
	out := "redirect to " + strings.Join(rules, " ")
	if audit || allAudit {
		out += " audit"
	}
	return out
}

// TestL7MatchesOracle checks, on random states, that the datapath's lookup
// on the computed entries, and the listener it leads to, decide every
// probe of an L7 port as the straightforward evaluation does.
func TestL7MatchesOracle(t *testing.T) {
	var addrs []netip.Addr
	for i := 1; i <= 16; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	addrs = append(addrs, addr("203.0.113.5"), addr("10.1.2.3"))
	seeds, steps := 6, 200
	if testing.Short() {
		seeds, steps = 2, 60
	}
	probes, redirects := 0, 0
	for seed := range seeds {
		g := gen{rand.New(rand.NewPCG(uint64(seed), 16))}
		state := &model.State{}
		e := newEngine(t, state)
		for step := range steps {
			c := g.change(state)
			if g.r.IntN(2) == 0 {
				c = model.Change{Op: model.OpUpsert, Object: g.l7policy()} // more L7 than change gives
			}
			if c.Op == model.OpDelete {
				state.Delete(c.Object.Key())
			} else {
				state.Upsert(c.Object)
			}
			require.Empty(t, e.Apply([]model.Change{c}).Errors)
			for _, p := range e.Endpoints() {
				pod := state.Pods[p.Pod]
				for _, a := range addrs {
					if nodeAddress(state, a) {
						continue // the node's own connections are never handed over (see TestL7FromTheNode)
					}
					for _, port := range []uint16{80, 8080, 8050} {
						want := oracleL7(state, pod, p.Audit, a, port)
						if want == "" {
							continue
						}
						got := verdictOf(t, e, p.Pod.String(), a, port)
						probes++
						if strings.HasPrefix(got, "redirect") {
							redirects++
						}
						if got != want {
							x, _ := e.Explain(p.Pod)
							require.Equal(t, want, got, "seed %d step %d: %s from %s port %d\n%+v", seed, step, p.Pod, a, port, x)
						}
					}
				}
			}
			checkBookkeeping(t, e)
		}
	}
	t.Logf("%d probes of L7 ports, %d redirected", probes, redirects)
	require.Greater(t, redirects, probes/4, "the generator makes enough redirects to mean something")
}

func nodeAddress(s *model.State, a netip.Addr) bool {
	for _, n := range s.Nodes {
		for _, na := range n.Addresses {
			if na.Address == a.String() {
				return true
			}
		}
	}
	return false
}

// The node's own connections (kubelet probes) are admitted by the
// host-allow entry, and are never handed to the proxy (nothing on their
// path can): a port with L7 rules that NetworkPolicy opens to any peer
// takes them to the redirect at the pod's own interface, which fails them
// closed (PROXY_UNAVAILABLE). A port open to some peers only stays open to
// the node.
func TestL7FromTheNode(t *testing.T) {
	s := netpolCluster()
	s.Upsert(l7pol("x/api", sel("pod", "a"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(l7pol("x/api2", sel("pod", "b"), l7port(model.PortNumber(80), "GET")))
	s.Upsert(netpol("x/np", sel("pod", "b")).ingress(rl(peers(podPeer(sel("pod", "c"))), tcp(80))).build())
	e := newEngine(t, s)
	host := addr("192.168.1.1")
	assert.Equal(t, "redirect to x/api#0", verdictOf(t, e, "x/a", host, 80))
	assert.Equal(t, "allow", verdictOf(t, e, "x/b", host, 80))
}
