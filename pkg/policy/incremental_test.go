package policy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// gen makes random objects from small pools, so that objects collide:
// pods share label sets, addresses and named ports, policies share
// selectors, ipBlocks cover pod and node addresses.
type gen struct{ r *rand.Rand }

func (g gen) pick(ss ...string) string { return ss[g.r.IntN(len(ss))] }

func (g gen) namespace() *model.Namespace {
	name := g.pick("a", "b", "c")
	labels := []string{"team", g.pick("x", "y")}
	if g.r.IntN(2) == 0 {
		labels = append(labels, "env", g.pick("prod", "dev"))
	}
	if g.r.IntN(6) == 0 {
		labels = append(labels, AuditLabel, "true")
	}
	return namespace(name, labels...)
}

func (g gen) node() *model.Node {
	n := &model.Node{Name: g.pick("n1", "n2", "n3")}
	for range g.r.IntN(3) {
		n.Addresses = append(n.Addresses, model.NodeAddress{
			Type:    model.NodeAddressType(g.pick(string(model.NodeInternalIP), string(model.NodeExternalIP), string(model.NodeHostname))),
			Address: g.pick("10.0.0.1", "10.0.0.2", "192.168.0.1", "192.168.0.2", "node.example"),
		})
	}
	return n
}

func (g gen) pod() *model.Pod {
	p := &model.Pod{
		Namespace: g.pick("a", "b", "c"),
		Name:      fmt.Sprint("p", g.r.IntN(10)),
		NodeName:  g.pick("n1", "n1", "n2", ""),
		Phase:     model.PodPhase(g.pick("Running", "Running", "Pending", "Succeeded", "Unknown")),
		Labels:    map[string]string{"app": g.pick("web", "db", "api")},
	}
	if g.r.IntN(2) == 0 {
		p.Labels["tier"] = g.pick("fe", "be")
	}
	p.HostNetwork = g.r.IntN(10) == 0
	for range g.r.IntN(3) {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + g.r.IntN(16))})
		if !slices.Contains(p.IPs, a) {
			p.IPs = append(p.IPs, a)
		}
	}
	if len(p.IPs) > 0 && g.r.IntN(5) == 0 {
		p.IPs = append(p.IPs, netip.MustParseAddr(fmt.Sprintf("fd00::%d", 1+g.r.IntN(4))))
	}
	if g.r.IntN(3) > 0 {
		p.Ports = append(p.Ports, model.ContainerPort{Name: "http", Port: uint16(g.pick2(80, 8080)), Protocol: model.ProtocolTCP})
	}
	if g.r.IntN(2) == 0 {
		p.Ports = append(p.Ports, model.ContainerPort{Name: "dns", Port: 53, Protocol: model.Protocol(g.pick("UDP", "UDP", "TCP"))})
	}
	return p
}

func (g gen) pick2(a, b int) int {
	if g.r.IntN(2) == 0 {
		return a
	}
	return b
}

func (g gen) selector() *model.LabelSelector {
	switch g.r.IntN(6) {
	case 0:
		return sel()
	case 1:
		return sel("app", g.pick("web", "db", "api"))
	case 2:
		return sel("team", g.pick("x", "y"))
	case 3:
		return expr("tier", model.SelectorOperator(g.pick("In", "NotIn", "Exists", "DoesNotExist")), "fe")
	case 4:
		return expr("env", model.SelectorOpIn, "prod")
	default:
		return sel("tier", "be")
	}
}

func (g gen) peer() model.Peer {
	switch g.r.IntN(4) {
	case 0:
		return podPeer(g.selector())
	case 1:
		return nsPeer(g.selector())
	case 2:
		return bothPeer(g.selector(), g.selector())
	default:
		cidr := g.pick("10.0.0.0/28", "10.0.0.4/30", "10.0.0.0/8", "0.0.0.0/0", "192.168.0.0/16", "fd00::/64")
		var except []string
		if g.r.IntN(2) == 0 && !strings.Contains(cidr, ":") {
			except = append(except, g.pick("10.0.0.5/32", "10.0.0.8/29", "10.0.0.4/31", "192.168.0.1/32"))
		}
		p := ipPeer(cidr)
		for _, e := range except {
			if pe := prefix(e); p.IPBlock.CIDR.Bits() <= pe.Bits() && p.IPBlock.CIDR.Contains(pe.Addr()) {
				p.IPBlock.Except = append(p.IPBlock.Except, pe)
			}
		}
		return p
	}
}

func (g gen) ports() []model.PolicyPort {
	var out []model.PolicyPort
	for range g.r.IntN(3) {
		switch g.r.IntN(8) {
		case 7:
			out = append(out, named(model.ProtocolTCP, "dns"))
		case 0:
			out = append(out, tcp(80))
		case 1:
			out = append(out, udp(53))
		case 2:
			out = append(out, named(model.ProtocolTCP, "http"))
		case 3:
			out = append(out, named(model.ProtocolUDP, "dns"))
		case 4:
			out = append(out, portRangeOf(model.ProtocolTCP, 8000, 8100))
		case 5:
			out = append(out, model.PolicyPort{Protocol: model.ProtocolSCTP})
		default:
			out = append(out, tcp(8080))
		}
	}
	return out
}

func (g gen) rules() []model.Rule {
	var out []model.Rule
	for range g.r.IntN(3) {
		var ps []model.Peer
		for range g.r.IntN(3) {
			ps = append(ps, g.peer())
		}
		out = append(out, rl(ps, g.ports()...))
	}
	return out
}

func (g gen) policy() *model.NetworkPolicy {
	np := &model.NetworkPolicy{
		Namespace: g.pick("a", "b", "c"), Name: fmt.Sprint("q", g.r.IntN(6)),
		PodSelector: *g.selector(),
	}
	switch g.r.IntN(3) {
	case 0:
		np.PolicyTypes = []model.PolicyType{model.PolicyTypeIngress}
	case 1:
		np.PolicyTypes = []model.PolicyType{model.PolicyTypeEgress}
	default:
		np.PolicyTypes = []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress}
	}
	np.Ingress, np.Egress = g.rules(), g.rules()
	return np
}

// l7policy is a SluiceL7Policy with one to three port entries on ports
// NetworkPolicies name too, with selector peers (or none).
func (g gen) l7policy() *model.L7Policy {
	p := &model.L7Policy{
		Namespace: g.pick("a", "b", "c"), Name: fmt.Sprint("l", g.r.IntN(4)),
		PodSelector: *g.selector(), Audit: g.r.IntN(4) == 0,
	}
	for range 1 + g.r.IntN(3) {
		port := model.L7Port{Protocol: model.ProtocolTCP, HTTP: []model.HTTPRule{{Method: g.pick("GET", "POST")}}}
		switch g.r.IntN(4) {
		case 0:
			port.Port = model.PortName("http")
		case 1:
			port.Port = model.PortNumber(80)
		case 2:
			port.Port = model.PortNumber(8080)
		default:
			port.Port = model.PortNumber(8050)
		}
		for range g.r.IntN(3) {
			switch g.r.IntN(3) {
			case 0:
				port.From = append(port.From, podPeer(g.selector()))
			case 1:
				port.From = append(port.From, nsPeer(g.selector()))
			default:
				port.From = append(port.From, bothPeer(g.selector(), g.selector()))
			}
		}
		p.Ports = append(p.Ports, port)
	}
	return p
}

// tweak changes one field of an existing pod or namespace, the kind of
// update that must not be lost among bigger ones.
func (g gen) tweak(s *model.State) (model.Object, bool) {
	if g.r.IntN(2) == 0 {
		ns, ok := s.Namespaces[g.pick("a", "b", "c")]
		if !ok {
			return nil, false
		}
		c := *ns
		c.Labels = maps.Clone(ns.Labels)
		if c.Labels[AuditLabel] == "" {
			c.Labels[AuditLabel] = "true"
		} else {
			delete(c.Labels, AuditLabel)
		}
		return &c, true
	}
	p, ok := s.Pods[model.NamespacedName{Namespace: g.pick("a", "b", "c"), Name: fmt.Sprint("p", g.r.IntN(10))}]
	if !ok {
		return nil, false
	}
	c := *p
	switch g.r.IntN(4) {
	case 0:
		c.Ports = g.pod().Ports
	case 1:
		c.IPs = g.pod().IPs
	case 2:
		c.Labels = g.pod().Labels
	default:
		c.Phase = g.pod().Phase
	}
	return &c, true
}

func (g gen) change(s *model.State) model.Change {
	if g.r.IntN(4) == 0 {
		if obj, ok := g.tweak(s); ok {
			return model.Change{Op: model.OpUpsert, Object: obj}
		}
	}
	var obj model.Object
	switch g.r.IntN(10) {
	case 0:
		obj = g.namespace()
	case 1:
		obj = g.node()
	case 2, 3, 4:
		obj = g.pod()
	case 5, 6:
		obj = g.l7policy()
	default:
		obj = g.policy()
	}
	if g.r.IntN(4) == 0 {
		if cur, ok := s.Get(obj.Key()); ok {
			obj = cur // delete what is there, with the object Diff would pass
		}
		return model.Change{Op: model.OpDelete, Object: obj}
	}
	return model.Change{Op: model.OpUpsert, Object: obj}
}

// normalize renders an engine's output with identities as label sets and
// rule IDs as rule names, which do not depend on allocation history.
func normalize(e *Engine) (endpoints []string, ipcache []string) {
	idName := func(id identity.ID) string {
		if id == identity.Unknown || id.IsLocalCIDR() {
			return id.String()
		}
		ls, ok := e.alloc.Labels(id)
		if !ok {
			return fmt.Sprintf("dangling identity %d", id)
		}
		return "[" + ls.String() + "]"
	}
	for _, p := range e.Endpoints() {
		var b strings.Builder
		fmt.Fprintf(&b, "%s id=%s in=%v eg=%v audit=%v overflow=%v\n", p.Pod, idName(p.Identity), p.IngressEnforced, p.EgressEnforced, p.Audit, p.Overflow)
		var lines []string
		for _, en := range p.Entries {
			ref, ok := e.Rule(en.Rule)
			if !ok {
				lines = append(lines, fmt.Sprintf("dangling rule %d", en.Rule))
			}
			verdict := en.Verdict.String()
			if en.Verdict == Redirect {
				// The port depends on history; the listener's rule set
				// does not.
				verdict += " to [" + e.listeners[en.ProxyPort].key + "]"
			}
			lines = append(lines, fmt.Sprintf("  %s %s %s %s %s", en.Direction, idName(en.Identity),
				entryPorts(en.Protocol, en.Port, en.PortPrefixLen), verdict, ref))
		}
		slices.Sort(lines)
		b.WriteString(strings.Join(lines, "\n"))
		for _, c := range p.CIDRs {
			fmt.Fprintf(&b, "\n  cidr %s %s %d", c.Direction, c.Prefix, c.Class)
		}
		endpoints = append(endpoints, b.String())
	}
	for p, id := range e.IPCache() {
		ipcache = append(ipcache, p.String()+" "+idName(id))
	}
	slices.Sort(ipcache)
	return endpoints, ipcache
}

// TestIncrementalMatchesFullRecompute applies random batches of changes
// and checks after each that the engine equals one built from scratch from
// the same state, that the reported deltas add up to its state, and that
// its bookkeeping is consistent.
func TestIncrementalMatchesFullRecompute(t *testing.T) {
	seeds := 8
	steps := 250
	if testing.Short() {
		seeds, steps = 2, 100
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			g := gen{rand.New(rand.NewPCG(uint64(seed), 7))}
			opts := func(o *Options) { o.MaxEntriesPerEndpoint = 60 }
			state := &model.State{}
			e := newEngine(t, state, opts)
			published := map[model.NamespacedName]*EndpointPolicy{}
			ipcache := e.IPCache() // the World defaults, reported by the first Sync

			for step := range steps {
				var batch []model.Change
				for range 1 + g.r.IntN(4) {
					c := g.change(state)
					batch = append(batch, c)
					if c.Op == model.OpDelete {
						state.Delete(c.Object.Key())
					} else {
						state.Upsert(c.Object)
					}
				}
				res := e.Apply(batch)
				require.Empty(t, res.Errors)
				for _, p := range res.Endpoints {
					published[p.Pod] = p
				}
				for _, n := range res.Removed {
					delete(published, n)
				}
				for _, m := range res.IPCacheUpserts {
					ipcache[m.Prefix] = m.ID
				}
				for _, p := range res.IPCacheDeletes {
					delete(ipcache, p)
				}

				fresh := newEngine(t, state, opts)
				gotEP, gotIPC := normalize(e)
				wantEP, wantIPC := normalize(fresh)
				require.Equal(t, wantEP, gotEP, "step %d endpoints, after %v", step, batch)
				require.Equal(t, wantIPC, gotIPC, "step %d ipcache", step)

				all := map[model.NamespacedName]*EndpointPolicy{}
				for _, p := range e.Endpoints() {
					all[p.Pod] = p
				}
				require.Equal(t, all, published, "step %d: reported endpoint changes do not add up", step)
				require.Equal(t, e.IPCache(), ipcache, "step %d: reported ipcache changes do not add up", step)

				checkBookkeeping(t, e)
			}
		})
	}
}

func checkBookkeeping(t *testing.T, e *Engine) {
	t.Helper()
	refs := map[identity.ID]int{}
	for nn, ps := range e.pods {
		if id := ps.id(); id != identity.Unknown {
			refs[id]++
			require.Same(t, ps, e.ids[id].pods[nn])
		}
	}
	require.Equal(t, len(refs), len(e.ids), "identities without pods")
	require.Equal(t, len(refs), e.alloc.Len(), "allocator holds identities without pods")
	for id, n := range refs {
		require.Equal(t, n, e.alloc.Refs(id), "refs of %d", id)
	}
	n := 0
	for _, pol := range e.policies {
		for _, dir := range []Direction{Ingress, Egress} {
			n += len(pol.rules[dir])
		}
	}
	for ref := range e.ruleIDs {
		if !ref.L7 {
			continue
		}
		st := e.l7[ref.Policy]
		require.True(t, st != nil && ref.Index < len(st.p.Ports), "rule ID of an L7 port entry that is gone: %s", ref)
		n++
	}
	require.Equal(t, n, len(e.ruleIDs), "rule IDs of rules that are gone")
	require.Equal(t, n, len(e.ruleRefs))

	// Every listener is in use, and holds its port.
	used := map[uint16]bool{}
	for _, p := range e.Endpoints() {
		for _, en := range p.Entries {
			if en.Verdict == Redirect {
				require.NotZero(t, en.ProxyPort, "%s: a redirect without a port", p.Pod)
				require.Contains(t, e.listeners, en.ProxyPort, "%s: a redirect to no listener", p.Pod)
				used[en.ProxyPort] = true
			}
		}
	}
	require.Len(t, e.listeners, len(used), "listeners no endpoint uses")
	require.Equal(t, len(used), e.ports.Len(), "ports allocated to no listener")
	for port, ls := range e.listeners {
		k, ok := e.ports.Key(port)
		require.True(t, ok)
		require.Equal(t, ls.key, k)
	}
}
