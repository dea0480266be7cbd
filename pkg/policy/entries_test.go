package policy

import (
	"net/netip"

	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

func endpoint(t *testing.T, e *Engine, name string) *EndpointPolicy {
	t.Helper()
	p, ok := e.Endpoint(nn(name))
	require.True(t, ok, "%s is not an endpoint", name)
	return p
}

func podID(t *testing.T, e *Engine, name string) identity.ID {
	t.Helper()
	ps := e.pods[nn(name)]
	require.NotNil(t, ps)
	return ps.id()
}

func entriesFor(p *EndpointPolicy, id identity.ID, dir Direction) []Entry {
	var out []Entry
	for _, en := range p.Entries {
		if en.Identity == id && en.Direction == dir {
			out = append(out, en)
		}
	}
	return out
}

func hostAllow() Entry {
	return Entry{Identity: identity.Host, Direction: Ingress, Verdict: Allow, Rule: RuleHostAllow}
}

func TestPortRange(t *testing.T) {
	tests := []struct {
		lo, hi uint16
		want   []portKey
	}{
		{80, 80, []portKey{{6, 80, 16}}},
		{80, 81, []portKey{{6, 80, 15}}},
		{8000, 8080, []portKey{{6, 8000, 10}, {6, 8064, 12}, {6, 8080, 16}}},
		{0, 65535, []portKey{{6, 0, 0}}},
		{65535, 65535, []portKey{{6, 65535, 16}}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, portRange(nil, ProtoTCP, tt.lo, tt.hi), "%d-%d", tt.lo, tt.hi)
	}
	// Every range is covered exactly, with at most 2*16 prefixes.
	for _, r := range [][2]uint16{{1, 65535}, {1024, 65535}, {3, 60000}, {32767, 32768}} {
		keys := portRange(nil, ProtoTCP, r[0], r[1])
		assert.LessOrEqual(t, len(keys), 30)
		n := 0
		for port := 0; port <= 65535; port++ {
			in := 0
			for _, k := range keys {
				if maskPort(uint16(port), k.plen) == k.port {
					in++
				}
			}
			want := 0
			if port >= int(r[0]) && port <= int(r[1]) {
				want = 1
			}
			if in != want {
				n++
			}
		}
		assert.Zero(t, n, "range %v covered inexactly", r)
	}
}

func TestEntriesEndPortFullRange(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/all-ports", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))), portRangeOf(model.ProtocolTCP, 1, 65535))).build())
	e := newEngine(t, s)
	p := endpoint(t, e, "x/a")
	got := entriesFor(p, podID(t, e, "x/b"), Ingress)
	assert.Len(t, got, 16, "1-65535 is 16 prefixes, not 65535 entries")
	assert.Equal(t, Entry{Identity: podID(t, e, "x/b"), Direction: Ingress, Protocol: ProtoTCP, Port: 1, PortPrefixLen: 16, Verdict: Allow, Rule: got[0].Rule}, got[0])
	assert.Len(t, p.Entries, 17) // and host-allow
}

func TestEntriesHostAllowOnlyWhenIngressEnforced(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/egress", sel("pod", "a")).types(model.PolicyTypeEgress).build())
	s.Upsert(netpol("x/ingress", sel("pod", "b")).build())
	e := newEngine(t, s)

	a := endpoint(t, e, "x/a")
	assert.False(t, a.IngressEnforced)
	assert.True(t, a.EgressEnforced)
	assert.Empty(t, a.Entries, "deny all egress: no entries at all")

	b := endpoint(t, e, "x/b")
	assert.True(t, b.IngressEnforced)
	assert.Equal(t, []Entry{hostAllow()}, b.Entries)

	c := endpoint(t, e, "x/c")
	assert.False(t, c.IngressEnforced || c.EgressEnforced)
	assert.Empty(t, c.Entries)
}

func TestEntriesRedundantOnesDropped(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/narrow", sel("pod", "a")).ingress(
		rl(peers(podPeer(sel("pod", "b"))), tcp(80), portRangeOf(model.ProtocolTCP, 8000, 8080)),
		rl(peers(podPeer(sel("pod", "b"))), model.PolicyPort{Protocol: model.ProtocolTCP}),
		rl(peers(ipPeer("10.0.0.0/8")), udp(53)),
	).build())
	e := newEngine(t, s)
	b := podID(t, e, "x/b")
	p := endpoint(t, e, "x/a")
	assert.Equal(t, []Entry{
		hostAllow(),
		{Identity: b, Direction: Ingress, Protocol: ProtoTCP, Verdict: Allow, Rule: e.ruleIDs[RuleRef{Policy: nn("x/narrow"), Direction: Ingress, Index: 1}]},
		{Identity: identity.LocalCIDRBase, Direction: Ingress, Protocol: ProtoUDP, Port: 53, PortPrefixLen: 16, Verdict: Allow, Rule: e.ruleIDs[RuleRef{Policy: nn("x/narrow"), Direction: Ingress, Index: 2}]},
	}, p.Entries)

	// An allow-all rule makes every other entry, and the CIDRs, redundant.
	s.Upsert(netpol("x/all", sel("pod", "a")).ingress(rl(nil)).build())
	e.Sync(s)
	p = endpoint(t, e, "x/a")
	assert.Equal(t, []Entry{
		{Identity: 0, Direction: Ingress, Verdict: Allow, Rule: e.ruleIDs[RuleRef{Policy: nn("x/all"), Direction: Ingress, Index: 0}]},
		hostAllow(),
	}, p.Entries)
	assert.Empty(t, p.CIDRs)
}

func TestEntriesIPBlockClasses(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/cidr", sel("pod", "a")).egress(
		rl(peers(ipPeer("10.244.2.2/4", "10.244.2.2/32"))),
		rl(peers(ipPeer("10.244.0.0/16", "10.244.3.0/24")), tcp(443)),
		rl(peers(ipPeer("192.0.2.0/24", "192.0.2.128/25"))),
	).build())
	e := newEngine(t, s)
	p := endpoint(t, e, "x/a")
	r := func(i int) RuleID { return e.ruleIDs[RuleRef{Policy: nn("x/cidr"), Direction: Egress, Index: i}] }
	c := identity.LocalCIDRBase
	// 0.0.0.0/4: rule 0. 10.244.0.0/16: rules 0 and 1. 10.244.2.2/32: rule
	// 1 only (it is rule 0's except). 10.244.3.0/24: rule 0 only (rule 1's
	// except), which differs from its /16 parent, so it stays and shares the
	// /4's class. 192.0.2.128/25: no rule; it must hide its /24 parent, so
	// it gets a class without entries.
	assert.Equal(t, []CIDREntry{
		{Egress, prefix("0.0.0.0/4"), c},
		{Egress, prefix("10.244.0.0/16"), c + 1},
		{Egress, prefix("10.244.2.2/32"), c + 2},
		{Egress, prefix("10.244.3.0/24"), c},
		{Egress, prefix("192.0.2.0/24"), c + 3},
		{Egress, prefix("192.0.2.128/25"), c + 4},
	}, p.CIDRs)
	assert.Equal(t, []Entry{
		{Identity: c, Direction: Egress, Verdict: Allow, Rule: r(0)},
		{Identity: c + 1, Direction: Egress, Verdict: Allow, Rule: r(0)},
		{Identity: c + 2, Direction: Egress, Protocol: ProtoTCP, Port: 443, PortPrefixLen: 16, Verdict: Allow, Rule: r(1)},
		{Identity: c + 3, Direction: Egress, Verdict: Allow, Rule: r(2)},
	}, p.Entries, "class c+1's TCP/443 is redundant under its any-port entry; class c+4 is empty")
}

// Two destination pods share an identity but give the port name different
// numbers: each gets its own /32 class with its own number, and the
// identity gets nothing for the name.
func TestEntriesNamedEgressPortPerDestinationPod(t *testing.T) {
	s := netpolCluster()
	web := func(name, ip string, port uint16) *model.Pod {
		p := pod(name, "n2", ip, "app", "web")
		p.Ports = []model.ContainerPort{{Name: "http", Port: port, Protocol: model.ProtocolTCP}}
		return p
	}
	s.Upsert(web("y/web-1", "10.244.2.10", 8080))
	s.Upsert(web("y/web-2", "10.244.2.11", 9090))
	s.Upsert(netpol("x/to-web", sel("pod", "a")).egress(
		rl(peers(nsPeer(sel("ns", "y"))), named(model.ProtocolTCP, "http"), udp(53)),
	).build())
	e := newEngine(t, s)
	p := endpoint(t, e, "x/a")
	webID := podID(t, e, "y/web-1")
	require.Equal(t, webID, podID(t, e, "y/web-2"))
	r := e.ruleIDs[RuleRef{Policy: nn("x/to-web"), Direction: Egress, Index: 0}]
	c := identity.LocalCIDRBase

	assert.Equal(t, []Entry{{Identity: webID, Direction: Egress, Protocol: ProtoUDP, Port: 53, PortPrefixLen: 16, Verdict: Allow, Rule: r}},
		entriesFor(p, webID, Egress))
	assert.Equal(t, []CIDREntry{
		{Egress, prefix("10.244.2.10/32"), c},
		{Egress, prefix("10.244.2.11/32"), c + 1},
	}, p.CIDRs)
	assert.Equal(t, []Entry{{Identity: c, Direction: Egress, Protocol: ProtoTCP, Port: 8080, PortPrefixLen: 16, Verdict: Allow, Rule: r}}, entriesFor(p, c, Egress))
	assert.Equal(t, []Entry{{Identity: c + 1, Direction: Egress, Protocol: ProtoTCP, Port: 9090, PortPrefixLen: 16, Verdict: Allow, Rule: r}}, entriesFor(p, c+1, Egress))

	assert.True(t, reach(e, s, "x/a", "y/web-1", "TCP/8080"))
	assert.False(t, reach(e, s, "x/a", "y/web-1", "TCP/9090"))
	assert.True(t, reach(e, s, "x/a", "y/web-2", "TCP/9090"))
	assert.False(t, reach(e, s, "x/a", "y/web-2", "TCP/8080"))

	// The port of one destination changes: only its class follows.
	s.Upsert(web("y/web-2", "10.244.2.11", 7070))
	res := e.Sync(s)
	require.Len(t, res.Endpoints, 1)
	assert.Equal(t, nn("x/a"), res.Endpoints[0].Pod)
	assert.Empty(t, res.IPCacheUpserts)
	assert.True(t, reach(e, s, "x/a", "y/web-2", "TCP/7070"))
	assert.False(t, reach(e, s, "x/a", "y/web-2", "TCP/9090"))
}

func TestEntriesSameKeyFromTwoRulesKeepsTheFirstRule(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/zz", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))), tcp(80))).build())
	e := newEngine(t, s)
	s.Upsert(netpol("x/aa", sel("pod", "a")).ingress(rl(peers(podPeer(sel("pod", "b"))), tcp(80))).build())
	e.Sync(s)
	_, rule := lookup(e, nn("x/a"), Ingress, addr("10.244.1.2"), ProtoTCP, 80)
	ref, ok := e.Rule(rule)
	require.True(t, ok)
	assert.Equal(t, "x/aa ingress[0]", ref.String(), "x/aa sorts first although its ID is newer")
	_, rule = lookup(e, nn("x/a"), Ingress, addr("192.168.1.1"), ProtoTCP, 80)
	assert.Equal(t, RuleHostAllow, rule)
	ref, _ = e.Rule(rule)
	assert.Equal(t, "host-allow", ref.String())
}

func TestRuleIDsStable(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/p", sel("pod", "a")).ingress(rl(nil, tcp(80)), rl(nil, tcp(81))).build())
	e := newEngine(t, s)
	r0 := e.ruleIDs[RuleRef{Policy: nn("x/p"), Direction: Ingress, Index: 0}]
	r1 := e.ruleIDs[RuleRef{Policy: nn("x/p"), Direction: Ingress, Index: 1}]
	require.NotZero(t, r0)
	require.NotEqual(t, r0, r1)

	// Changing the policy keeps the IDs of the rules still there.
	s.Upsert(netpol("x/p", sel("pod", "a")).ingress(rl(nil, tcp(8080))).build())
	e.Sync(s)
	assert.Equal(t, r0, e.ruleIDs[RuleRef{Policy: nn("x/p"), Direction: Ingress, Index: 0}])
	_, ok := e.Rule(r1)
	assert.False(t, ok, "the removed rule's ID is released")

	// A new rule does not get the released ID.
	s.Upsert(netpol("x/p", sel("pod", "a")).ingress(rl(nil, tcp(8080)), rl(nil, tcp(9090))).build())
	e.Sync(s)
	assert.NotEqual(t, r1, e.ruleIDs[RuleRef{Policy: nn("x/p"), Direction: Ingress, Index: 1}])
}

func TestOverflow(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/many", sel("pod", "a")).ingress(rl(peers(nsPeer(sel())), tcp(80), tcp(81), udp(53))).build())
	e := newEngine(t, s, func(o *Options) { o.MaxEntriesPerEndpoint = 10 })
	p := endpoint(t, e, "x/a")
	require.Error(t, p.Overflow)
	var oe *OverflowError
	require.ErrorAs(t, p.Overflow, &oe)
	assert.Equal(t, 28, oe.Count) // 9 identities × 3 ports + host-allow
	assert.Contains(t, p.Overflow.Error(), "endpoint x/a needs 28 policy entries, more than the limit of 10")
	assert.NoError(t, endpoint(t, e, "x/b").Overflow)
	assert.False(t, reach(e, s, "x/b", "x/a", "TCP/80"), "an overflowing endpoint fails closed")
}

func TestAudit(t *testing.T) {
	s := netpolCluster()
	s.Upsert(namespace("y", "ns", "y", AuditLabel, "true"))
	e := newEngine(t, s)
	assert.False(t, endpoint(t, e, "x/a").Audit)
	assert.True(t, endpoint(t, e, "y/a").Audit)

	e = newEngine(t, s, func(o *Options) { o.Audit = true })
	assert.True(t, endpoint(t, e, "x/a").Audit)

	// The annotation: audit without touching identities.
	s = netpolCluster()
	z := namespace("z", "ns", "z")
	z.Annotations = map[string]string{AuditAnnotation: "true"}
	s.Upsert(z)
	e = newEngine(t, s)
	assert.True(t, endpoint(t, e, "z/a").Audit)
	assert.Equal(t, endpoint(t, newEngine(t, netpolCluster()), "z/a").Identity, endpoint(t, e, "z/a").Identity,
		"an annotation is not part of the identity")
}

func TestOptionsValidate(t *testing.T) {
	_, err := NewEngine(Options{}, nil)
	assert.ErrorContains(t, err, "node name")
	_, err = NewEngine(Options{NodeName: "n1", MaxEntriesPerEndpoint: -1}, nil)
	assert.ErrorContains(t, err, "max entries")
}

func TestLocalEndpointsAndIPCache(t *testing.T) {
	s := netpolCluster()
	remote := pod("y/remote", "n2", "10.244.8.1", "pod", "a")
	hostNet := pod("y/hostnet", localNode, "192.168.1.1", "pod", "h")
	hostNet.HostNetwork = true
	done := pod("y/done", localNode, "10.244.8.2", "pod", "a")
	done.Phase = model.PodSucceeded
	pending := pod("y/pending", localNode, "", "pod", "a")
	pending.Phase = model.PodPending
	for _, p := range []*model.Pod{remote, hostNet, done, pending} {
		s.Upsert(p)
	}
	e := newEngine(t, s)
	var names []string
	for _, p := range e.Endpoints() {
		names = append(names, p.Pod.String())
	}
	assert.Equal(t, []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}, names)

	ipc := e.IPCache()
	ya := podID(t, e, "y/a")
	assert.Equal(t, ya, ipc[prefix("10.244.8.1/32")], "same labels, same identity, on any node")
	assert.Equal(t, ya, podID(t, e, "y/pending"), "a pod without an address has its identity already")
	assert.Equal(t, identity.Host, ipc[prefix("192.168.1.1/32")])
	assert.Equal(t, identity.RemoteNode, ipc[prefix("192.168.1.2/32")])
	assert.Equal(t, identity.World, ipc[prefix("0.0.0.0/0")])
	_, ok := ipc[prefix("10.244.8.2/32")]
	assert.False(t, ok, "finished pods give their address up")
	assert.Len(t, ipc, 2+2+10)

	want := identity.ComputeIPCache(s, localNode, func(p *model.Pod) identity.ID { return e.pods[p.Key().NamespacedName()].id() })
	assert.Equal(t, want, ipc)

	// The pending pod gets its address: only the ipcache and its own
	// endpoint change.
	started := pod("y/pending", localNode, "10.244.8.3", "pod", "a")
	s.Upsert(started)
	res := e.Sync(s)
	require.Len(t, res.Endpoints, 1)
	assert.Equal(t, nn("y/pending"), res.Endpoints[0].Pod)
	assert.Equal(t, []identity.Mapping{{Prefix: prefix("10.244.8.3/32"), ID: ya}}, res.IPCacheUpserts)
	assert.Empty(t, res.IPCacheDeletes)

	s.Delete(started.Key())
	res = e.Sync(s)
	assert.Equal(t, []model.NamespacedName{nn("y/pending")}, res.Removed)
	assert.Equal(t, []netip.Prefix{prefix("10.244.8.3/32")}, res.IPCacheDeletes)
}

func TestEntriesSamePrefixBothDirections(t *testing.T) {
	s := netpolCluster()
	s.Upsert(netpol("x/cidr", sel("pod", "a")).
		ingress(rl(peers(ipPeer("10.244.2.0/24")), tcp(80))).
		egress(rl(peers(ipPeer("10.244.2.0/24")), udp(53))).build())
	e := newEngine(t, s)
	assert.True(t, reach(e, s, "y/a", "x/a", "TCP/80"))
	assert.False(t, reach(e, s, "y/a", "x/a", "UDP/53"))
	assert.True(t, reach(e, s, "x/a", "y/a", "UDP/53"))
	assert.False(t, reach(e, s, "x/a", "y/a", "TCP/80"))
}

// After a restart with the saved allocator, pods keep their identity
// numbers, so the datapath's pinned maps stay valid while the agent catches
// up.
func TestRestoredIdentitiesSurviveRestart(t *testing.T) {
	s := netpolCluster()
	e := newEngine(t, s)
	before := e.IPCache()
	snap := e.alloc.Snapshot()
	s.Delete(model.Key{Kind: model.KindPod, Namespace: "z", Name: "c"})

	alloc := identity.NewAllocator()
	require.NoError(t, alloc.Restore(snap))
	e2, err := NewEngine(Options{NodeName: localNode}, alloc)
	require.NoError(t, err)
	e2.Sync(s)
	for p, id := range e2.IPCache() {
		assert.Equal(t, before[p], id, "%s", p)
	}
	zc := before[prefix("10.244.3.3/32")]
	_, ok := alloc.Labels(zc)
	assert.False(t, ok, "the identity of the pod deleted while down is freed")
	assert.Equal(t, 8, alloc.Len())
}
