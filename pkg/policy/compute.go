package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/identity"
)

// rule is what an entry remembers of the rule that made it.
type rule struct {
	id  RuleID
	ref RuleRef
}

// better reports whether a value made by rule a should replace one made by
// rule b for the same key: Redirect over Allow, then the first rule in
// RuleRef order, so the choice does not depend on how IDs were allocated.
func better(av Verdict, a rule, bv Verdict, b rule) bool {
	if av != bv {
		return av == Redirect
	}
	return compareRuleRefs(a.ref, b.ref) < 0
}

type entryKey struct {
	id  identity.ID
	dir Direction
	portKey
}

// pack encodes the key in an integer, which hashes much faster than the
// padded struct and sorts in compareEntries order: from the top, dir 2 bits,
// id 32, proto 8, port 16, plen 5.
func (k entryKey) pack() uint64 {
	return uint64(k.dir&3)<<61 | uint64(k.id)<<29 | uint64(k.proto)<<21 | uint64(k.port)<<5 | uint64(k.plen&31)
}

func unpackEntryKey(v uint64) entryKey {
	return entryKey{
		dir:     Direction(v >> 61),
		id:      identity.ID(v >> 29),
		portKey: portKey{proto: uint8(v >> 21), port: uint16(v >> 5), plen: uint8(v & 31)},
	}
}

type entryVal struct {
	verdict Verdict
	proxy   uint16
	rule    rule
}

// cidrItem is one contribution to a CIDR LPM: the rule's ports for the
// addresses in the item's prefix (the map key) outside except.
type cidrItem struct {
	except []netip.Prefix
	ports  []portKey
	rule   rule
}

// builder collects the entries of one endpoint.
type builder struct {
	entries map[uint64]entryVal // by entryKey.pack
	// items are the CIDR contributions per direction (index Direction),
	// grouped by prefix; excepts holds every except prefix.
	items   [3]map[netip.Prefix][]cidrItem
	excepts [3]map[netip.Prefix]struct{}
	// tiered marks the directions compiled with ClusterNetworkPolicy
	// tiers (cluster.go), whose entries must all stay.
	tiered [3]bool
}

func newBuilder() *builder {
	return &builder{entries: map[uint64]entryVal{}}
}

// reset empties the builder for the next endpoint, keeping its maps' room.
func (b *builder) reset() {
	clear(b.entries)
	b.tiered = [3]bool{}
	for i := range b.items {
		clear(b.items[i])
		clear(b.excepts[i])
	}
}

func (b *builder) put(k entryKey, v entryVal) {
	pk := k.pack()
	if old, ok := b.entries[pk]; ok && !better(v.verdict, v.rule, old.verdict, old.rule) {
		return
	}
	b.entries[pk] = v
}

// allow adds Allow entries for peer id and every port key.
func (b *builder) allow(id identity.ID, dir Direction, ports []portKey, r rule) {
	for _, pk := range ports {
		b.put(entryKey{id: id, dir: dir, portKey: pk}, entryVal{verdict: Allow, rule: r})
	}
}

// allowCIDR adds a CIDR contribution: ports are allowed to addresses in p
// that are not in except.
func (b *builder) allowCIDR(dir Direction, p netip.Prefix, except []netip.Prefix, ports []portKey, r rule) {
	if !p.IsValid() || len(ports) == 0 {
		return
	}
	p = p.Masked()
	if b.items[dir] == nil {
		b.items[dir] = map[netip.Prefix][]cidrItem{}
		b.excepts[dir] = map[netip.Prefix]struct{}{}
	}
	b.items[dir][p] = append(b.items[dir][p], cidrItem{except: except, ports: ports, rule: r})
	for _, e := range except {
		if e.IsValid() {
			b.excepts[dir][e.Masked()] = struct{}{}
		}
	}
}

// compileCIDRs turns the CIDR contributions into LPM entries and CIDR-class
// entries.
//
// The prefixes are every contributed prefix and every except. An address
// belongs to a rule's block exactly when its longest matching prefix P in
// that set lies inside the block and inside none of its excepts (all three
// are in the set, and prefixes containing one address are nested), so each
// P gets the union of the contributions that hold for it. A prefix whose
// contributions equal those of its nearest emitted ancestor (none: the
// empty set) is left out, since the LPM then finds the same thing; an
// except that is still needed to hide its ancestor's rules gets a class with
// no entries. Prefixes with the same contributions share a class. Classes
// are numbered from identity.LocalCIDRBase in the order of the sorted CIDR
// list, so the numbering depends only on the result.
func (b *builder) compileCIDRs() []CIDREntry {
	type dirPrefix struct {
		dir Direction
		p   netip.Prefix
	}
	var out []CIDREntry
	contents := map[dirPrefix][]entryPort{}
	for _, dir := range []Direction{Ingress, Egress} {
		items := b.items[dir]
		if len(items) == 0 {
			continue
		}
		prefixes := make([]netip.Prefix, 0, len(items)+len(b.excepts[dir]))
		for p := range items {
			prefixes = append(prefixes, p)
		}
		for p := range b.excepts[dir] {
			if _, ok := items[p]; !ok {
				prefixes = append(prefixes, p)
			}
		}
		// Shorter prefixes first, so a prefix's ancestors are decided
		// before it.
		slices.SortFunc(prefixes, func(x, y netip.Prefix) int {
			if c := cmp.Compare(x.Bits(), y.Bits()); c != 0 {
				return c
			}
			return x.Addr().Compare(y.Addr())
		})
		emitted := map[netip.Prefix]string{}
		for _, p := range prefixes {
			acc := map[uint32]entryVal{} // by portKey.pack
			for bits := p.Bits(); bits >= 0; bits-- {
				anc := netip.PrefixFrom(p.Addr(), bits).Masked()
				for _, it := range items[anc] {
					if inAny(p, it.except) {
						continue
					}
					for _, pk := range it.ports {
						v := entryVal{verdict: Allow, rule: it.rule}
						k := pk.pack()
						if old, ok := acc[k]; ok && !better(v.verdict, v.rule, old.verdict, old.rule) {
							continue
						}
						acc[k] = v
					}
				}
			}
			content := sortedContent(acc)
			key := contentKey(content)
			parent := ""
			for bits := p.Bits() - 1; bits >= 0; bits-- {
				if k, ok := emitted[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
					parent = k
					break
				}
			}
			if key == parent {
				continue
			}
			emitted[p] = key
			contents[dirPrefix{dir, p}] = content
			out = append(out, CIDREntry{Direction: dir, Prefix: p})
		}
	}
	slices.SortFunc(out, compareCIDRs)
	classes := map[string]identity.ID{}
	next := identity.LocalCIDRBase
	for i := range out {
		c := &out[i]
		content := contents[dirPrefix{c.Direction, c.Prefix}]
		k := string(rune(c.Direction)) + contentKey(content)
		id, ok := classes[k]
		if !ok {
			id = next
			next++
			classes[k] = id
			for _, e := range content {
				b.put(entryKey{id: id, dir: c.Direction, portKey: e.key}, e.val)
			}
		}
		c.Class = id
	}
	return out
}

// inAny reports whether p lies inside one of the prefixes.
func inAny(p netip.Prefix, prefixes []netip.Prefix) bool {
	for _, e := range prefixes {
		if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

type entryPort struct {
	key portKey
	val entryVal
}

func sortedContent(m map[uint32]entryVal) []entryPort {
	out := make([]entryPort, 0, len(m))
	for k, v := range m {
		out = append(out, entryPort{unpackPortKey(k), v})
	}
	slices.SortFunc(out, func(a, b entryPort) int {
		if c := cmp.Compare(a.key.proto, b.key.proto); c != 0 {
			return c
		}
		if c := cmp.Compare(a.key.port, b.key.port); c != 0 {
			return c
		}
		return cmp.Compare(a.key.plen, b.key.plen)
	})
	return out
}

// contentKey encodes a sorted content; equal contents give equal keys.
func contentKey(c []entryPort) string {
	buf := make([]byte, 0, len(c)*11)
	for _, e := range c {
		buf = append(buf, e.key.proto, e.key.plen, byte(e.val.verdict))
		buf = binary.BigEndian.AppendUint16(buf, e.key.port)
		buf = binary.BigEndian.AppendUint16(buf, e.val.proxy)
		buf = binary.BigEndian.AppendUint32(buf, uint32(e.val.rule.id))
	}
	return string(buf)
}

// finish compiles the CIDRs (compileCIDRs), drops redundant entries and
// returns both lists sorted (finishEntries).
func (b *builder) finish() ([]Entry, []CIDREntry) {
	return b.finishEntries(b.compileCIDRs())
}

// finishEntries drops redundant entries and returns the entries and cidrs
// (from compileCIDRs) sorted.
//
// An entry is redundant when the same peer, or any peer (identity 0), has an
// entry in the same direction that matches everything it matches with the
// same verdict: the lookup then finds that one instead, with the same
// outcome. This is only done in a direction where every entry is Allow and
// that is not compiled with tiers, because with Redirect or Deny entries the
// cross-lookup tie rules could pick a different verdict (and tiered
// entries rely on all buckets being equally long). The host-allow entry is always kept. A direction whose
// CIDR classes all end up without entries loses its CIDR entries too: every
// address they classify is decided by other entries anyway.
func (b *builder) finishEntries(cidrs []CIDREntry) ([]Entry, []CIDREntry) {
	keys := make([]uint64, 0, len(b.entries))
	for pk := range b.entries {
		keys = append(keys, pk)
	}
	slices.Sort(keys) // compareEntries order, see entryKey.pack
	all := make([]Entry, len(keys))
	var redirect [3]bool
	for i, pk := range keys {
		k, v := unpackEntryKey(pk), b.entries[pk]
		if v.verdict != Allow || b.tiered[k.dir] {
			redirect[k.dir] = true
		}
		all[i] = Entry{
			Identity: k.id, Direction: k.dir, Protocol: k.proto, Port: k.port, PortPrefixLen: k.plen,
			Verdict: v.verdict, ProxyPort: v.proxy, Rule: v.rule.id,
		}
	}

	entries := make([]Entry, 0, len(all))
	var classUsed [3]bool
	var anyPeer []Entry // the identity-0 group of the current direction
	for start := 0; start < len(all); {
		end := start + 1
		for end < len(all) && all[end].Direction == all[start].Direction && all[end].Identity == all[start].Identity {
			end++
		}
		group := all[start:end]
		dir := group[0].Direction
		if group[0].Identity == 0 {
			anyPeer = group
		} else if start == 0 || all[start-1].Direction != dir {
			anyPeer = nil // this direction has no identity-0 entries
		}
		for i, en := range group {
			if !redirect[dir] && en.Rule != RuleHostAllow && (coveredBy(en, group, i) || (en.Identity != 0 && coveredBy(en, anyPeer, -1))) {
				continue
			}
			if en.Identity.IsLocalCIDR() {
				classUsed[dir] = true
			}
			entries = append(entries, en)
		}
		start = end
	}
	cidrs = slices.DeleteFunc(cidrs, func(c CIDREntry) bool { return !classUsed[c.Direction] })
	return entries, cidrs
}

// coveredBy reports whether an entry other than group[self] matches every
// packet en matches, with the same verdict.
func coveredBy(en Entry, group []Entry, self int) bool {
	k := portKey{proto: en.Protocol, port: en.Port, plen: en.PortPrefixLen}
	for i, o := range group {
		if i == self || o.Verdict != en.Verdict || o.ProxyPort != en.ProxyPort {
			continue
		}
		if (portKey{proto: o.Protocol, port: o.Port, plen: o.PortPrefixLen}).covers(k) {
			return true
		}
	}
	return false
}
