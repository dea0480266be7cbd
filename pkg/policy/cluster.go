package policy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) compiled into
// the same per-endpoint entries, so that the datapath still decides a new
// connection with its three lookups (peer identity, CIDR class, any peer)
// and no chain of tiers at packet time.
//
// A direction of an endpoint that some ClusterNetworkPolicy rule applies
// to is compiled "with tiers": the compiler decides every (peer, protocol,
// port) as the API evaluates it (tieredRules.decide) and writes the final
// verdict, Allow or Deny (or Redirect, on an L7 port), with the deciding
// rule into the entries:
//
//   - The ports of every rule of the direction (all tiers, NetworkPolicy
//     included) cut each protocol's port space into intervals; within one
//     interval every rule matches all ports or none. Identity 0 (any peer)
//     gets an entry for every interval, split into port prefixes, plus an
//     any-protocol entry for the protocols no rule names; every other
//     bucket (identity, CIDR class) gets the same entries, of the same
//     lengths, but only for the intervals where it decides otherwise than
//     the bucket it would fall through to (an identity: the class of its
//     pods' addresses, else any peer; a class: any peer). So the buckets
//     that match a packet match it with equally long keys, the datapath's
//     tie-break (the more specific peer: identity, then class, then any)
//     picks the most specific, and where a bucket has no entry the next
//     one decides the same. Each bucket only has to be right for the
//     peers that reach it.
//   - Identities some selector of the direction selects get their own
//     entries, decided with the CIDR class their pods' addresses have (a
//     networks or ipBlock rule matches pod addresses too). An identity
//     whose pods' addresses fall in different classes, or (egress) that a
//     rule with named ports selects, is decided per address instead: each
//     address becomes a /32 (/128) CIDR class decided for that pod, and
//     the identity gets no entries.
//   - Every CIDR prefix of the direction (networks, the addresses of nodes
//     peers, NetworkPolicy ipBlocks and their excepts) is a class, decided
//     for a peer no selector selects at an address whose longest prefix it
//     is; identity 0 is decided for a peer at no prefix.
//   - Ingress from this node (identity Host) is always allowed, as for
//     NetworkPolicy.
//   - On an endpoint port with SluiceL7Policy entries (ingress, a unit of
//     its own) the tiers decide first, then an Allow becomes a Redirect to
//     the listener of the L7 rules that apply to the peer's identity
//     (l7Listeners, as without tiers; Unknown: the rules without from).
//     The listener is part of the bucket's decision, so an identity some
//     entry's from selects is decided on its own too. A Redirect must not
//     win a tie at equal length here, as it does without tiers: the
//     entries of a tiered direction carry SL_POLICY_F_TIERED (see
//     EndpointPolicy.Tiered and Decide).
//
// The decision (decide) is the API's: Admin rules by priority, then
// policy name (the API leaves equal priorities to the implementation),
// then rule order; the first match's Accept or Deny is final and Pass
// goes on with NetworkPolicy. A direction some NetworkPolicy covers
// admits what one of its rules admits and denies the rest (default deny,
// rule 0); otherwise Baseline rules decide in the same order (Pass:
// default), and what nothing decides is allowed (RuleDefaultAllow).

// tier numbers, in the order of evaluation.
const (
	tierAdmin = iota
	tierNetworkPolicy
	tierBaseline
)

// clusterState is a ClusterNetworkPolicy and its compiled rules.
type clusterState struct {
	p     *model.ClusterNetworkPolicy
	rules [3][]*clusterRuleState // by Direction
}

type clusterRuleState struct {
	rule *model.ClusterRule
	r    rule
	// peers parallels rule.Peers: the cached selector of each pods or
	// namespaces peer, nil for nodes and networks.
	peers []*identity.CachedSelector
}

func clusterKey(name string) nsName { return nsName{Name: name} }

func (cs *clusterState) hasNodesPeer() bool {
	for _, rs := range cs.rules[Egress] {
		for _, p := range rs.rule.Peers {
			if p.Nodes != nil {
				return true
			}
		}
	}
	return false
}

// updateClusterPolicy replaces a ClusterNetworkPolicy's compiled form. It
// can select pods of any namespace, so every local endpoint is marked: such
// policies change rarely.
func (e *Engine) updateClusterPolicy(name string, t *txn) {
	key := clusterKey(name)
	old := e.cluster[name]
	p := e.state.ClusterPolicies[name]
	for ep := range e.endpoints {
		t.dirty[ep] = struct{}{}
	}
	var cs *clusterState
	if p != nil {
		cs = &clusterState{p: p}
		for _, dir := range []Direction{Ingress, Egress} {
			rules := p.Ingress
			if dir == Egress {
				rules = p.Egress
			}
			for i := range rules {
				ref := RuleRef{Policy: key, Direction: dir, Index: i, Cluster: true}
				rs := &clusterRuleState{rule: &rules[i], r: rule{id: e.ruleID(ref), ref: ref},
					peers: make([]*identity.CachedSelector, len(rules[i].Peers))}
				for j, peer := range rules[i].Peers {
					if peer.SelectsPods() {
						rs.peers[j] = e.acquirePeer(e.clusterSelUsers, key,
							model.Peer{PodSelector: peer.PodSelector, NamespaceSelector: peer.NamespaceSelector})
					}
				}
				cs.rules[dir] = append(cs.rules[dir], rs)
			}
		}
	}
	if old != nil {
		for _, dir := range []Direction{Ingress, Egress} {
			for i, rs := range old.rules[dir] {
				e.releaseRule(e.clusterSelUsers, key, rs.peers, rs.r, cs != nil && i < len(cs.rules[dir]))
			}
		}
	}
	if cs == nil {
		delete(e.cluster, name)
		return
	}
	e.cluster[name] = cs
}

// tieredRule is one rule of any tier as the tiered compiler matches it.
type tieredRule struct {
	tier   int
	action model.ClusterAction // Accept for NetworkPolicy rules
	r      rule
	// any: the rule matches every peer (NetworkPolicy's empty from/to).
	any bool
	// ids are the identities its selector peers select.
	ids map[identity.ID]struct{}
	// blocks are its address peers: networks, nodes' addresses (/32,
	// /128) and ipBlocks.
	blocks []model.IPBlock
	// ports are its numbered ports (anyPort: every protocol and port);
	// named its named ports, resolved against the endpoint (ingress,
	// already in ports) or the destination pod (egress).
	ports []portKey
	named []namedPort
	// noPorts: the rule has ports but none resolves, so it matches
	// nothing.
	noPorts bool
}

// tieredDir is what the tiered compiler knows of one direction of one
// endpoint.
type tieredDir struct {
	dir      Direction
	rules    []*tieredRule // in order of precedence
	isolated bool          // some NetworkPolicy covers the direction
	// l7 are the endpoint's L7 ports (ingress only; nil: none): an Allow
	// there becomes a Redirect to the peer's listener.
	l7 *l7Listeners
}

// anyProto marks a named port that any protocol may carry
// (destinationNamedPort names a container port of any protocol).
const anyProto = 0

// clusterRulesFor returns the ClusterNetworkPolicy rules that apply to
// a pod, per direction and tier in order of precedence, and the policies
// that select it.
func (e *Engine) clusterRulesFor(pod *model.Pod) (admin, baseline [3][]*clusterRuleState, applied []nsName) {
	nsLabels := e.state.NamespaceLabels(pod.Namespace)
	var sel []*clusterState
	for _, cs := range e.cluster {
		if cs.p.Subject.MatchesPod(pod.Labels, nsLabels) {
			sel = append(sel, cs)
		}
	}
	slices.SortFunc(sel, func(a, b *clusterState) int {
		if c := cmp.Compare(a.p.Priority, b.p.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.p.Name, b.p.Name)
	})
	for _, cs := range sel {
		applied = append(applied, clusterKey(cs.p.Name))
		for _, dir := range []Direction{Ingress, Egress} {
			if cs.p.Tier == model.TierAdmin {
				admin[dir] = append(admin[dir], cs.rules[dir]...)
			} else {
				baseline[dir] = append(baseline[dir], cs.rules[dir]...)
			}
		}
	}
	return admin, baseline, applied
}

// tieredRules gathers the rules of all tiers for one direction of endpoint
// self: Admin, then the NetworkPolicy rules (nps, in RuleRef order, so the
// first that matches is the one NetworkPolicy alone would report), then
// Baseline.
func (e *Engine) tieredRules(self *podState, dir Direction, admin, baseline []*clusterRuleState, nps []*ruleState, isolated bool) *tieredDir {
	td := &tieredDir{dir: dir, isolated: isolated}
	for _, rs := range admin {
		td.rules = append(td.rules, e.clusterRule(self, dir, tierAdmin, rs))
	}
	slices.SortFunc(nps, func(a, b *ruleState) int { return compareRuleRefs(a.r.ref, b.r.ref) })
	for _, rs := range nps {
		tr := &tieredRule{tier: tierNetworkPolicy, action: model.ActionAccept, r: rs.r, ids: map[identity.ID]struct{}{}}
		tr.any = len(rs.rule.Peers) == 0
		for i, peer := range rs.rule.Peers {
			if peer.IPBlock != nil {
				tr.blocks = append(tr.blocks, *peer.IPBlock)
				continue
			}
			for _, id := range rs.peers[i].Selected() {
				tr.ids[id] = struct{}{}
			}
		}
		rp := resolvePorts(rs.rule.Ports, dir, self.pod)
		tr.ports, tr.named = rp.keys, rp.named
		tr.noPorts = len(tr.ports) == 0 && len(tr.named) == 0
		td.rules = append(td.rules, tr)
	}
	for _, rs := range baseline {
		td.rules = append(td.rules, e.clusterRule(self, dir, tierBaseline, rs))
	}
	return td
}

// clusterRule resolves one ClusterNetworkPolicy rule for endpoint self.
func (e *Engine) clusterRule(self *podState, dir Direction, tier int, rs *clusterRuleState) *tieredRule {
	tr := &tieredRule{tier: tier, action: rs.rule.Action, r: rs.r, ids: map[identity.ID]struct{}{}}
	for i, peer := range rs.rule.Peers {
		switch {
		case rs.peers[i] != nil:
			for _, id := range rs.peers[i].Selected() {
				tr.ids[id] = struct{}{}
			}
		case peer.Nodes != nil:
			for _, n := range e.state.Nodes {
				if !peer.Nodes.Matches(n.Labels) {
					continue
				}
				for _, na := range n.Addresses {
					if na.Type != model.NodeInternalIP && na.Type != model.NodeExternalIP {
						continue
					}
					if a, err := netip.ParseAddr(na.Address); err == nil {
						a = a.Unmap()
						tr.blocks = append(tr.blocks, model.IPBlock{CIDR: netip.PrefixFrom(a, a.BitLen())})
					}
				}
			}
		default:
			for _, p := range peer.Networks {
				tr.blocks = append(tr.blocks, model.IPBlock{CIDR: p.Masked()})
			}
		}
	}
	if len(rs.rule.Ports) == 0 {
		tr.ports = []portKey{anyPort}
		return tr
	}
	for _, p := range rs.rule.Ports {
		if p.Name != "" {
			np := namedPort{proto: anyProto, name: p.Name}
			if dir == Ingress {
				tr.ports = np.resolveAny(tr.ports, self.pod)
			} else {
				tr.named = append(tr.named, np)
			}
			continue
		}
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			continue
		}
		if p.EndPort == 0 {
			tr.ports = append(tr.ports, portKey{proto: proto, port: p.Port, plen: 16})
		} else {
			tr.ports = portRange(tr.ports, proto, p.Port, p.EndPort)
		}
	}
	tr.noPorts = len(tr.ports) == 0 && len(tr.named) == 0
	return tr
}

// resolveAny is resolve for a name of any protocol (anyProto) or of the
// name's own protocol.
func (n namedPort) resolveAny(out []portKey, pod *model.Pod) []portKey {
	if n.proto != anyProto {
		return n.resolve(out, pod)
	}
	for _, cp := range pod.Ports {
		if proto, ok := protoNumber(cp.Protocol); ok && cp.Name == n.name && cp.Port != 0 {
			out = append(out, portKey{proto: proto, port: cp.Port, plen: 16})
		}
	}
	return out
}

// tpeer is a peer as a bucket sees it: its identity (Unknown: one no
// selector of the direction selects), the longest CIDR prefix of the
// direction holding its address (invalid: none, or not known), and for
// an address decided on its own the pods holding it (named ports resolve
// against each, as for NetworkPolicy).
type tpeer struct {
	id      identity.ID
	pfx     netip.Prefix
	holders []*podState
}

// unit is a set of (protocol, port) every rule of the direction matches
// wholly or not at all: a port interval of a protocol some rule names, or
// (proto ProtoAny) every protocol no rule names.
type unit struct {
	proto  uint8
	lo, hi uint16
}

// verdictRule is a decision.
type verdictRule struct {
	verdict Verdict
	r       rule
	proxy   uint16 // Redirect: the listener's proxy port
}

// decide is the API's evaluation of a connection with peer p on unit u.
func (td *tieredDir) decide(p tpeer, u unit) verdictRule {
	passed := false // the Admin tier passed
	for _, tr := range td.rules {
		switch {
		case tr.tier == tierAdmin && passed:
			continue
		case tr.tier == tierNetworkPolicy && !td.isolated:
			continue
		case tr.tier == tierBaseline && td.isolated:
			// NetworkPolicy decided: what it did not admit is denied.
			return verdictRule{verdict: Deny}
		}
		if !tr.matches(p, u) {
			continue
		}
		switch tr.action {
		case model.ActionAccept:
			return verdictRule{verdict: Allow, r: tr.r}
		case model.ActionDeny:
			return verdictRule{verdict: Deny, r: tr.r}
		}
		if tr.tier == tierBaseline {
			break // Pass in Baseline: the default decides
		}
		passed = true
	}
	if td.isolated {
		return verdictRule{verdict: Deny}
	}
	return verdictRule{verdict: Allow, r: rule{id: RuleDefaultAllow, ref: DefaultAllowRef}}
}

func (tr *tieredRule) matches(p tpeer, u unit) bool {
	if tr.noPorts {
		return false
	}
	peer := tr.any
	if !peer && p.id != identity.Unknown {
		_, peer = tr.ids[p.id]
	}
	if !peer && p.pfx.IsValid() {
		peer = blocksHold(tr.blocks, p.pfx)
	}
	if !peer && len(p.holders) == 0 {
		return false
	}
	for _, k := range tr.ports {
		if peer && k.matchesUnit(u) {
			return true
		}
	}
	for _, h := range p.holders {
		if len(tr.named) == 0 {
			break
		}
		if !tr.any && !blocksHold(tr.blocks, p.pfx) {
			if _, ok := tr.ids[h.id()]; !ok {
				continue
			}
		}
		for _, np := range tr.named {
			for _, k := range np.resolveAny(nil, h.pod) {
				if k.matchesUnit(u) {
					return true
				}
			}
		}
	}
	return false
}

func blocksHold(blocks []model.IPBlock, p netip.Prefix) bool {
	for i := range blocks {
		if blockHolds(&blocks[i], p) {
			return true
		}
	}
	return false
}

// blockHolds reports whether every address of prefix p is in the block
// (p is a prefix of the direction's set, so it lies wholly inside or
// outside the block and each except).
func blockHolds(b *model.IPBlock, p netip.Prefix) bool {
	if !prefixIn(p, b.CIDR) {
		return false
	}
	for _, ex := range b.Except {
		if prefixIn(p, ex) {
			return false
		}
	}
	return true
}

func prefixIn(p, outer netip.Prefix) bool {
	return outer.IsValid() && outer.Bits() <= p.Bits() && outer.Contains(p.Addr())
}

func (k portKey) matchesUnit(u unit) bool {
	if k.proto == ProtoAny {
		return true
	}
	if u.proto != k.proto {
		return false
	}
	return k.covers(portKey{proto: u.proto, port: u.lo, plen: 16})
}

// units cuts the port space of the direction at every rule's ports (and
// at the named ports as any pod of the cluster resolves them).
func (e *Engine) units(td *tieredDir) []unit {
	cuts := map[uint8]map[uint32]struct{}{}
	add := func(k portKey) {
		if k.proto == ProtoAny {
			return
		}
		m := cuts[k.proto]
		if m == nil {
			m = map[uint32]struct{}{0: {}, 1 << 16: {}}
			cuts[k.proto] = m
		}
		lo := uint32(k.port)
		m[lo] = struct{}{}
		m[lo+1<<(16-k.plen)] = struct{}{}
	}
	if td.l7 != nil {
		// Each L7 port is a unit of its own, so its Redirect entries are
		// exact ports.
		for p := range td.l7.ports {
			add(portKey{proto: ProtoTCP, port: p, plen: 16})
		}
	}
	for _, tr := range td.rules {
		for _, k := range tr.ports {
			add(k)
		}
		for _, np := range tr.named {
			for _, ps := range e.pods {
				for _, k := range np.resolveAny(nil, ps.pod) {
					add(k)
				}
			}
		}
	}
	out := []unit{{proto: ProtoAny}}
	for _, proto := range slices.Sorted(maps.Keys(cuts)) {
		bounds := slices.Sorted(maps.Keys(cuts[proto]))
		for i := 0; i+1 < len(bounds); i++ {
			out = append(out, unit{proto: proto, lo: uint16(bounds[i]), hi: uint16(bounds[i+1] - 1)})
		}
	}
	return out
}

// keys are the entry keys of a unit.
func (u unit) keys() []portKey {
	if u.proto == ProtoAny {
		return []portKey{anyPort}
	}
	return portRange(nil, u.proto, u.lo, u.hi)
}

// compileTiered writes the entries and CIDR classes of one direction
// compiled with tiers into b; classes are numbered from next, and the
// CIDR entries returned. usesAddrs reports whether the result depends on
// pods' addresses (so that a pod's address change must recompute it).
func (e *Engine) compileTiered(b *builder, td *tieredDir, next identity.ID) (cidrs []CIDREntry, usesAddrs bool) {
	dir := td.dir
	units := e.units(td)
	put := func(id identity.ID, u unit, vr verdictRule) {
		for _, k := range u.keys() {
			b.entries[entryKey{id: id, dir: dir, portKey: k}.pack()] = entryVal{verdict: vr.verdict, rule: vr.r, proxy: vr.proxy}
		}
	}
	// decisions are a peer's, unit by unit. On an L7 port the tiers
	// decide first, as NetworkPolicy does without tiers: a Deny stays, an
	// Allow (Admin Accept, NetworkPolicy, Baseline or the default) hands
	// the connection to the listener of the L7 rules that apply to the
	// peer's identity (Unknown: those without from). The Redirect then
	// belongs to the peer's bucket like any decision, so the buckets stay
	// complete and equally long, and the datapath ranks these entries by
	// peer alone (SL_POLICY_F_TIERED), never a Redirect over a Deny.
	decisions := func(p tpeer) []verdictRule {
		out := make([]verdictRule, len(units))
		for i, u := range units {
			out[i] = td.decide(p, u)
			if td.l7 != nil && out[i].verdict == Allow && u.proto == ProtoTCP && u.lo == u.hi && td.l7.ports[u.lo] != nil {
				v := td.l7.redirect(u.lo, p.id)
				out[i] = verdictRule{verdict: v.verdict, r: v.rule, proxy: v.proxy}
			}
		}
		return out
	}
	// generic are the decisions for a peer no selector selects, at an
	// address whose longest prefix is pfx (invalid: none): what the class
	// and any-peer entries give. A more specific bucket needs no entry
	// for a unit where it decides the same: the lookup falls through to
	// those (see the package documentation).
	genericOf := map[netip.Prefix][]verdictRule{}
	generic := func(pfx netip.Prefix) []verdictRule {
		g, ok := genericOf[pfx]
		if !ok {
			g = decisions(tpeer{id: identity.Unknown, pfx: pfx})
			genericOf[pfx] = g
		}
		return g
	}
	// emit writes a bucket's entries for the units where it decides
	// otherwise than fallback (nil: every unit).
	emit := func(id identity.ID, own, fallback []verdictRule) {
		for i, u := range units {
			if fallback == nil || own[i] != fallback[i] {
				put(id, u, own[i])
			}
		}
	}

	// The CIDR prefixes of the direction, and the longest holding an
	// address.
	prefixSet := map[netip.Prefix]struct{}{}
	named := false
	selected := map[identity.ID]struct{}{}
	for _, tr := range td.rules {
		for _, blk := range tr.blocks {
			if blk.CIDR.IsValid() {
				prefixSet[blk.CIDR.Masked()] = struct{}{}
			}
			for _, ex := range blk.Except {
				if ex.IsValid() {
					prefixSet[ex.Masked()] = struct{}{}
				}
			}
		}
		named = named || len(tr.named) > 0
		for id := range tr.ids {
			selected[id] = struct{}{}
		}
	}
	if td.l7 != nil {
		// An identity an L7 entry's from names may get other rules than
		// any peer: it is decided on its own too.
		maps.Copy(selected, td.l7.named())
	}
	longest := func(a netip.Addr) netip.Prefix {
		for bits := a.BitLen(); bits >= 0; bits-- {
			p := netip.PrefixFrom(a, bits).Masked()
			if _, ok := prefixSet[p]; ok {
				return p
			}
		}
		return netip.Prefix{}
	}

	// Identities: their own entries, or per address.
	type addrPeer struct {
		id      identity.ID
		pod     *model.Pod
		holders []*podState
	}
	perAddr := map[netip.Prefix]addrPeer{}
	if named && dir == Egress {
		// Named ports resolve per destination pod: every pod is decided
		// on its own addresses.
		for id := range e.ids {
			selected[id] = struct{}{}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(selected)) {
		is := e.ids[id]
		if is == nil {
			continue
		}
		var pfx netip.Prefix
		mixed, first := false, true
		for _, ps := range is.pods {
			for _, a := range ps.pod.IPs {
				if !a.IsValid() {
					continue
				}
				usesAddrs = true
				lp := longest(a.Unmap())
				if first {
					pfx, first = lp, false
				} else if lp != pfx {
					mixed = true
				}
			}
		}
		if mixed || (named && dir == Egress) {
			for _, ps := range is.pods {
				for _, a := range ps.pod.IPs {
					if !a.IsValid() {
						continue
					}
					a = a.Unmap()
					p := netip.PrefixFrom(a, a.BitLen())
					// The ipcache gives an address claimed twice to the
					// first pod by name (identity.IPCache).
					cur, ok := perAddr[p]
					if !ok || podName(ps.pod) < podName(cur.pod) {
						cur.id, cur.pod = id, ps.pod
					}
					cur.holders = append(cur.holders, ps)
					perAddr[p] = cur
				}
			}
			continue
		}
		emit(id, decisions(tpeer{id: id, pfx: pfx}), generic(pfx))
	}
	if dir == Ingress {
		hostAllow := make([]verdictRule, len(units))
		for i := range hostAllow {
			hostAllow[i] = verdictRule{verdict: Allow, r: rule{id: RuleHostAllow, ref: HostAllowRef}}
		}
		emit(identity.Host, hostAllow, nil)
	}
	base := generic(netip.Prefix{})
	emit(identity.Unknown, base, nil)

	// CIDR classes: every prefix of the direction, and the addresses
	// decided on their own, as the peer the ipcache makes of the address
	// (a node's address is no pod's, whatever pod claims it too; named
	// ports still resolve against the pods holding it, as for
	// NetworkPolicy); classes with the same decisions are shared.
	for p, ap := range perAddr {
		if id, ok := e.ipc.Lookup(p); !ok || e.ids[id] == nil {
			ap.id = identity.Unknown
		} else {
			ap.id = id
		}
		perAddr[p] = ap
		prefixSet[p] = struct{}{}
	}
	// Shorter prefixes first, so that a prefix deciding as its nearest
	// kept ancestor does (or, without one, as any peer) is left out: the
	// LPM then finds that ancestor, with the same decisions.
	kept := map[netip.Prefix][]verdictRule{}
	for _, p := range slices.SortedFunc(maps.Keys(prefixSet), func(x, y netip.Prefix) int {
		if c := cmp.Compare(x.Bits(), y.Bits()); c != 0 {
			return c
		}
		return x.Addr().Compare(y.Addr())
	}) {
		own := generic(p)
		if ap, ok := perAddr[p]; ok {
			own = decisions(tpeer{id: ap.id, pfx: p, holders: ap.holders})
		}
		fallback := base
		for bits := p.Bits() - 1; bits >= 0; bits-- {
			if d, ok := kept[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
				fallback = d
				break
			}
		}
		if !slices.Equal(own, fallback) {
			kept[p] = own
		}
	}
	classes := map[string]identity.ID{}
	for _, p := range slices.SortedFunc(maps.Keys(kept), comparePrefixes) {
		own := kept[p]
		// A class's content is what differs from the any-peer entries.
		var content []byte
		for i := range units {
			if own[i] == base[i] {
				content = append(content, 0xff)
				continue
			}
			content = append(content, byte(own[i].verdict), byte(own[i].r.id>>24), byte(own[i].r.id>>16),
				byte(own[i].r.id>>8), byte(own[i].r.id), byte(own[i].proxy>>8), byte(own[i].proxy))
		}
		id, ok := classes[string(content)]
		if !ok {
			id = next
			next++
			classes[string(content)] = id
			emit(id, own, base)
		}
		cidrs = append(cidrs, CIDREntry{Direction: dir, Prefix: p, Class: id})
	}
	b.tiered[dir] = true
	return cidrs, usesAddrs
}

func podName(p *model.Pod) string { return p.Namespace + "/" + p.Name }

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
