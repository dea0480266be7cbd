package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/l7"
	"github.com/sluice-net/sluice/pkg/model"
)

// L7 policy (SluiceL7Policy) on top of NetworkPolicy: see the package
// documentation. The kernel classifies, the node's proxy enforces: every
// peer NetworkPolicy admits on a port with L7 rules gets a Redirect entry
// to the proxy listener of the rules that apply to it, one listener (and
// proxy port) per distinct rule set, so the proxy never learns identities.

// l7State is a SluiceL7Policy with the selectors of its port entries'
// peers acquired in the cache.
type l7State struct {
	p *model.L7Policy
	// peers parallels p.Ports, and each p.Ports[i].From.
	peers [][]*identity.CachedSelector
}

// l7Entry is one port entry of one policy that applies to a port of an
// endpoint.
type l7Entry struct {
	pol   nsName
	index int
	st    *l7State
}

func (x l7Entry) port() *model.L7Port { return &x.st.p.Ports[x.index] }

func (x l7Entry) ref() RuleRef {
	return RuleRef{Policy: x.pol, Direction: Ingress, Index: x.index, L7: true}
}

// forAll reports whether the entry applies to every peer (no from).
func (x l7Entry) forAll() bool { return len(x.port().From) == 0 }

// applies reports whether the entry's rules apply to peers of identity id.
func (x l7Entry) applies(id identity.ID) bool {
	if x.forAll() {
		return true
	}
	for _, cs := range x.st.peers[x.index] {
		if cs.Selects(id) {
			return true
		}
	}
	return false
}

func compareL7Entries(a, b l7Entry) int {
	if c := compareNames(a.pol, b.pol); c != 0 {
		return c
	}
	return cmp.Compare(a.index, b.index)
}

// listenerState is a listener in use: the rule set one or more endpoints
// redirect peers to, on proxy port port.
type listenerState struct {
	key string
	// port is the endpoint port the rules are for.
	port  uint16
	audit bool
	// rules are the entries whose rules the listener enforces; empty for
	// a listener that denies every request (peers none of the port's
	// entries names), whose entries are then in denied.
	rules, denied []l7Entry
}

// endpointL7 is what an endpoint's L7 policy left besides its entries.
type endpointL7 struct {
	applied []nsName // L7 policies that select the endpoint, sorted
	// failed are the listeners that got no proxy port: their peers fail
	// closed (Redirect to port 0).
	failed map[string]error
}

// updateL7Policy replaces an L7 policy's compiled form and dirties the
// endpoints it applied to and those it applies to now.
func (e *Engine) updateL7Policy(nn nsName, t *txn) {
	old := e.l7[nn]
	p := e.state.L7Policies[nn]
	for ep := range e.l7Endpoints[nn] {
		t.dirty[ep] = struct{}{}
	}
	var st *l7State
	if p != nil {
		for ep, es := range e.nsEndpoints[nn.Namespace] {
			if p.PodSelector.Matches(es.pod.Labels) {
				t.dirty[ep] = struct{}{}
			}
		}
		st = &l7State{p: p, peers: make([][]*identity.CachedSelector, len(p.Ports))}
		for i, port := range p.Ports {
			for _, peer := range port.From {
				st.peers[i] = append(st.peers[i], e.acquirePeer(e.l7SelUsers, nn, peer))
			}
		}
	}
	if old != nil {
		for i, peers := range old.peers {
			for _, cs := range peers {
				e.releasePeer(e.l7SelUsers, nn, cs)
			}
			if st == nil || i >= len(st.p.Ports) {
				ref := RuleRef{Policy: nn, Direction: Ingress, Index: i, L7: true}
				if id, ok := e.ruleIDs[ref]; ok {
					delete(e.ruleIDs, ref)
					delete(e.ruleRefs, id)
				}
			}
		}
	}
	if st == nil {
		delete(e.l7, nn)
		deleteIn(e.nsL7, nn.Namespace, nn)
		return
	}
	e.l7[nn] = st
	putIn(e.nsL7, nn.Namespace, nn, st)
}

// l7Ports returns the L7 port entries that apply to pod, by the pod's
// port number, sorted, and the policies they come from.
func (e *Engine) l7Ports(pod *model.Pod) (map[uint16][]l7Entry, []nsName) {
	var out map[uint16][]l7Entry
	var applied []nsName
	for pnn, st := range e.nsL7[pod.Namespace] {
		if !st.p.PodSelector.Matches(pod.Labels) {
			continue
		}
		applied = append(applied, pnn)
		for i := range st.p.Ports {
			port := &st.p.Ports[i]
			var nums []uint16
			if port.Port.Name == "" {
				nums = append(nums, port.Port.Number)
			} else {
				// A name the pod does not give TCP matches nothing, as in
				// NetworkPolicy.
				for _, cp := range pod.Ports {
					if cp.Name == port.Port.Name && cp.Protocol == model.ProtocolTCP && cp.Port != 0 && !slices.Contains(nums, cp.Port) {
						nums = append(nums, cp.Port)
					}
				}
			}
			for _, n := range nums {
				if out == nil {
					out = map[uint16][]l7Entry{}
				}
				out[n] = append(out[n], l7Entry{pol: pnn, index: i, st: st})
			}
		}
	}
	for _, xs := range out {
		slices.SortFunc(xs, compareL7Entries)
	}
	slices.SortFunc(applied, compareNames)
	return out, applied
}

// ingressPeersAt returns the peers the builder's ingress entries admit on
// pk (identity 0 for any peer, identities, CIDR classes), sorted, this
// node (Host) left out: its own connections are never handed to the
// proxy.
func (b *builder) ingressPeersAt(pk portKey) []identity.ID {
	seen := map[identity.ID]struct{}{}
	for packed, v := range b.entries {
		k := unpackEntryKey(packed)
		if k.dir != Ingress || k.id == identity.Host || v.verdict != Allow || !k.portKey.covers(pk) {
			continue
		}
		seen[k.id] = struct{}{}
	}
	return slices.Sorted(maps.Keys(seen))
}

// l7Listeners assigns the listeners of one endpoint's L7 ports to peers:
// a peer gets the listener of the union of the port's entries that apply
// to its identity (identity.Unknown, any peer or a CIDR class: the entries
// without from), or a listener that denies every request when none does.
// Both compilers use it: compileL7 (NetworkPolicy) and compileTiered.
type l7Listeners struct {
	e     *Engine
	ep    *EndpointPolicy
	ports map[uint16][]l7Entry // by endpoint port, sorted
	x     *endpointL7
}

// rules returns the entries of port p that apply to peers of identity id.
func (l *l7Listeners) rules(p uint16, id identity.ID) []l7Entry {
	var out []l7Entry
	for _, en := range l.ports[p] {
		if en.forAll() || (id != identity.Unknown && en.applies(id)) {
			out = append(out, en)
		}
	}
	return out
}

// redirect returns the Redirect entry value for peers of identity id on
// port p.
func (l *l7Listeners) redirect(p uint16, id identity.ID) entryVal {
	port, r := l.e.listener(l.ep, p, l.rules(p, id), l.ports[p], l.x)
	return entryVal{verdict: Redirect, proxy: port, rule: r}
}

// named returns the identities some entry's from selects, on any port:
// those whose rules may differ from any peer's.
func (l *l7Listeners) named() map[identity.ID]struct{} {
	out := map[identity.ID]struct{}{}
	for _, entries := range l.ports {
		for _, en := range entries {
			for _, cs := range en.st.peers[en.index] {
				for _, id := range cs.Selected() {
					out[id] = struct{}{}
				}
			}
		}
	}
	return out
}

// compileL7 adds, for each port of the endpoint with L7 port entries, a
// Redirect entry for every peer NetworkPolicy admits there (already in b):
// to the listener of the union of the entries that apply to the peer.
//
// Which entries apply depends on the peer's identity, so:
//
//   - an identity NetworkPolicy admits by identity gets its own entry;
//   - when NetworkPolicy admits any peer (identity 0), identity 0 gets the
//     entries without from (what applies to the world), and each identity
//     some entry's from selects, if its entries differ, its own entry;
//   - a CIDR class (ipBlock) gets the entries without from: its addresses
//     are matched as the world is, since a class holds addresses, not
//     identities (Kubernetes means ipBlock for addresses outside the
//     cluster anyway).
//
// All these entries are exact ports, so they are longer than every entry
// NetworkPolicy made for the port, and nothing else decides it. A peer
// whose identity no entry names gets a listener with no rules: every
// request denied.
func (e *Engine) compileL7(b *builder, l *l7Listeners) {
	for _, p := range slices.Sorted(maps.Keys(l.ports)) {
		pk := portKey{proto: ProtoTCP, port: p, plen: 16}
		world := l.rules(p, identity.Unknown)
		put := func(id identity.ID) {
			b.put(entryKey{id: id, dir: Ingress, portKey: pk}, l.redirect(p, id))
		}
		anyPeer := false
		for _, id := range b.ingressPeersAt(pk) {
			switch {
			case id == identity.Unknown:
				anyPeer = true
				put(id)
			case id.IsLocalCIDR():
				b.put(entryKey{id: id, dir: Ingress, portKey: pk}, l.redirect(p, identity.Unknown))
			default:
				put(id)
			}
		}
		if !anyPeer {
			continue
		}
		for _, id := range slices.Sorted(maps.Keys(l.named())) {
			if rules := l.rules(p, id); !slices.EqualFunc(rules, world, func(a, b l7Entry) bool { return compareL7Entries(a, b) == 0 }) {
				put(id)
			}
		}
	}
}

// listener returns the proxy port of the listener for rules on endpoint
// port p (all the port's entries: entries) and the rule its entries
// report. A listener is in audit mode when the endpoint is, or when every
// policy that decides it is (those of rules, or of entries when no rule
// applies).
func (e *Engine) listener(ep *EndpointPolicy, p uint16, rules, entries []l7Entry, x *endpointL7) (uint16, rule) {
	deciding := rules
	if len(deciding) == 0 {
		deciding = entries
	}
	audit := ep.Audit || !slices.ContainsFunc(deciding, func(en l7Entry) bool { return !en.st.p.Audit })
	ref := deciding[0].ref()
	r := rule{id: e.ruleID(ref), ref: ref}

	var b strings.Builder
	b.WriteString("TCP/" + strconv.Itoa(int(p)))
	if audit {
		b.WriteString(" audit")
	}
	if len(rules) == 0 {
		b.WriteString(" deny")
	}
	for _, en := range deciding {
		b.WriteString(" " + en.pol.String() + "#" + strconv.Itoa(en.index))
	}
	key := b.String()
	port, err := e.ports.Get(key)
	if err != nil {
		if x.failed == nil {
			x.failed = map[string]error{}
		}
		x.failed[key] = err
		return 0, r
	}
	ls := &listenerState{key: key, port: p, audit: audit}
	if len(rules) > 0 {
		ls.rules = rules
	} else {
		ls.denied = entries
	}
	e.listeners[port] = ls
	return port, r
}

// retainListeners frees the proxy ports no endpoint's entries use any more.
func (e *Engine) retainListeners() {
	if len(e.listeners) == 0 && e.ports.Len() == 0 {
		return
	}
	used := map[uint16]struct{}{}
	for _, es := range e.endpoints {
		for _, en := range es.policy.Entries {
			if en.Verdict == Redirect && en.ProxyPort != 0 {
				used[en.ProxyPort] = struct{}{}
			}
		}
	}
	for port := range e.listeners {
		if _, ok := used[port]; !ok {
			delete(e.listeners, port)
		}
	}
	keys := make(map[string]struct{}, len(e.listeners))
	for _, ls := range e.listeners {
		keys[ls.key] = struct{}{}
	}
	e.ports.Retain(func(key string) bool { _, ok := keys[key]; return ok })
}

// L7Config is the compiled L7 policy of the node: a listener for each
// proxy port the endpoints' entries redirect to, with its rules as the
// model holds them now.
func (e *Engine) L7Config() l7.Config {
	cfg := l7.Config{Listeners: []l7.Listener{}}
	for _, port := range slices.Sorted(maps.Keys(e.listeners)) {
		ls := e.listeners[port]
		out := l7.Listener{Port: port, Name: "l7-" + strconv.Itoa(int(port)), Audit: ls.audit, Rules: []l7.Rule{}}
		sources := ls.rules
		if len(sources) == 0 {
			sources = ls.denied
		}
		for _, en := range sources {
			out.Sources = append(out.Sources, l7.PortRef{
				Namespace: en.pol.Namespace, Policy: en.pol.Name, Port: ls.port, Protocol: string(model.ProtocolTCP),
			})
		}
		for _, en := range ls.rules {
			st := e.l7[en.pol]
			if st == nil || en.index >= len(st.p.Ports) {
				continue // cannot happen after an Apply: its endpoints were recomputed
			}
			out.Rules = append(out.Rules, l7Rules(en.pol, en.index, &st.p.Ports[en.index])...)
		}
		cfg.Listeners = append(cfg.Listeners, out)
	}
	return cfg
}

// l7Rules are the rules of one port entry in their compiled form.
func l7Rules(pol nsName, index int, port *model.L7Port) []l7.Rule {
	out := make([]l7.Rule, 0, len(port.HTTP))
	for j, r := range port.HTTP {
		lr := l7.Rule{
			Ref:    l7.RuleRef{Namespace: pol.Namespace, Policy: pol.Name, PortIndex: index, RuleIndex: j},
			Method: r.Method, Path: r.Path, Host: r.Host, Headers: slices.Clone(r.Headers),
		}
		if r.RateLimit != nil {
			rl := *r.RateLimit
			lr.RateLimit = &rl
		}
		if j := port.JWT; j != nil {
			lr.JWT = &l7.JWTRequirement{
				Provider: jwtProvider(j), Issuer: j.Issuer, Audiences: slices.Clone(j.Audiences), JWKS: j.JWKS,
				Claims: append(slices.Clone(j.Claims), r.JWTClaims...),
			}
		}
		out = append(out, lr)
	}
	return out
}

// jwtProvider names a provider by its content: equal providers share the
// name, in every policy.
func jwtProvider(j *model.JWTProvider) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q", j.Issuer, j.Audiences, j.JWKS)
	return "jwt-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// L7Errors are the listeners that got no proxy port (the range is
// exhausted): their peers fail closed.
func (e *Engine) L7Errors() []error {
	var out []error
	seen := map[string]bool{}
	for _, nn := range slices.SortedFunc(maps.Keys(e.endpoints), compareNames) {
		for _, key := range slices.Sorted(maps.Keys(e.endpoints[nn].l7.failed)) {
			if !seen[key] {
				seen[key] = true
				out = append(out, fmt.Errorf("L7 rule set %q of endpoint %s: %w; its peers fail closed", key, nn, e.endpoints[nn].l7.failed[key]))
			}
		}
	}
	return out
}
