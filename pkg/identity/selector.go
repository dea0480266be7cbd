package identity

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-net/sluice/pkg/model"
)

// Identity is an allocated identity with what selectors see of it.
type Identity struct {
	ID      ID
	Labels  Labels
	Subject Subject
}

// PeerSelector is the selector part of a network-policy peer, with
// Kubernetes semantics: PodSelector alone selects pods in Namespace (the
// policy's namespace); NamespaceSelector alone selects all pods in matching
// namespaces; both select matching pods in matching namespaces; an empty
// selector matches everything; a peer with neither selects nothing.
// Reserved identities (host, world, nodes) are never selected: Kubernetes
// selectors select pods.
type PeerSelector struct {
	// Namespace is the policy's namespace. It matters only when
	// NamespaceSelector is nil.
	Namespace         string
	PodSelector       *model.LabelSelector
	NamespaceSelector *model.LabelSelector
}

// Matches reports whether the selector selects a pod with subject s.
func (p *PeerSelector) Matches(s *Subject) bool {
	switch {
	case p.PodSelector == nil && p.NamespaceSelector == nil:
		return false
	case p.NamespaceSelector == nil:
		if s.Namespace != p.Namespace {
			return false
		}
	default:
		if !p.NamespaceSelector.Matches(s.NamespaceLabels) {
			return false
		}
	}
	return p.PodSelector == nil || p.PodSelector.Matches(s.PodLabels)
}

// scoped reports whether the selector can only select pods in p.Namespace.
func (p *PeerSelector) scoped() bool { return p.NamespaceSelector == nil }

// Key returns a canonical form: two selectors with the same key select the
// same pods (the namespace is left out when a namespace selector is given).
func (p *PeerSelector) Key() string {
	var b strings.Builder
	if p.scoped() {
		b.WriteString("ns=")
		b.WriteString(strconv.Quote(p.Namespace))
	} else {
		b.WriteString("nsSel=")
		writeSelectorKey(&b, p.NamespaceSelector)
	}
	b.WriteString(" pod=")
	writeSelectorKey(&b, p.PodSelector)
	return b.String()
}

func writeSelectorKey(b *strings.Builder, s *model.LabelSelector) {
	if s == nil {
		b.WriteString("nil")
		return
	}
	b.WriteByte('{')
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(s.MatchLabels[k]))
		b.WriteByte(',')
	}
	exprs := make([]string, 0, len(s.MatchExpressions))
	for _, r := range s.MatchExpressions {
		vals := slices.Clone(r.Values)
		slices.Sort(vals)
		vals = slices.Compact(vals)
		var e strings.Builder
		e.WriteString(strconv.Quote(r.Key))
		e.WriteByte(' ')
		e.WriteString(strconv.Quote(string(r.Operator)))
		for _, v := range vals {
			e.WriteByte(' ')
			e.WriteString(strconv.Quote(v))
		}
		exprs = append(exprs, e.String())
	}
	slices.Sort(exprs)
	for _, e := range slices.Compact(exprs) {
		b.WriteString(e)
		b.WriteByte(',')
	}
	b.WriteByte('}')
}

// String describes the selector for people, e.g.
// "pods {app=web} in namespace shop" or "all pods in namespaces {team=a}".
func (p *PeerSelector) String() string {
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return "nothing"
	}
	pods := "all pods"
	if p.PodSelector != nil && !p.PodSelector.Empty() {
		pods = "pods " + SelectorString(p.PodSelector)
	}
	switch {
	case p.scoped():
		return pods + " in namespace " + p.Namespace
	case p.NamespaceSelector.Empty():
		return pods + " in all namespaces"
	default:
		return pods + " in namespaces " + SelectorString(p.NamespaceSelector)
	}
}

// SelectorString prints a label selector the way kubectl does, in braces:
// "{app=web,tier in (a,b),!legacy}"; "{}" selects everything.
func SelectorString(s *model.LabelSelector) string {
	if s == nil {
		return "<none>"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		switch r.Operator {
		case model.SelectorOpIn:
			parts = append(parts, r.Key+" in ("+strings.Join(r.Values, ",")+")")
		case model.SelectorOpNotIn:
			parts = append(parts, r.Key+" notin ("+strings.Join(r.Values, ",")+")")
		case model.SelectorOpExists:
			parts = append(parts, r.Key)
		case model.SelectorOpDoesNotExist:
			parts = append(parts, "!"+r.Key)
		default:
			parts = append(parts, r.Key+" "+string(r.Operator)+" ("+strings.Join(r.Values, ",")+")")
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// SelectorCache keeps, for every selector in use, the set of identities it
// selects, and updates those sets as identities come and go. Work is
// proportional to the change: a new identity is evaluated against the
// selectors that can select it (those of its namespace, plus those with a
// namespace selector), a new selector against the identities it can select,
// and a removed identity leaves only the selectors that held it. Nothing is
// evaluated against pods: pods with one label set share one identity.
//
// A SelectorCache is not safe for concurrent use.
type SelectorCache struct {
	idents    map[ID]*Identity
	nsIdents  map[string]map[ID]*Identity
	selectors map[string]*CachedSelector
	// scoped holds the selectors without a namespace selector, by namespace;
	// cluster holds the others.
	scoped  map[string]map[*CachedSelector]struct{}
	cluster map[*CachedSelector]struct{}
	// holders is the reverse of CachedSelector.selected.
	holders map[ID]map[*CachedSelector]struct{}
}

// CachedSelector is a selector held in a SelectorCache with the identities
// it currently selects.
type CachedSelector struct {
	key      string
	sel      PeerSelector
	refs     int
	selected map[ID]struct{}
	sorted   []ID // cache of selected in order; nil when stale
}

// NewSelectorCache returns an empty cache.
func NewSelectorCache() *SelectorCache {
	return &SelectorCache{
		idents:    map[ID]*Identity{},
		nsIdents:  map[string]map[ID]*Identity{},
		selectors: map[string]*CachedSelector{},
		scoped:    map[string]map[*CachedSelector]struct{}{},
		cluster:   map[*CachedSelector]struct{}{},
		holders:   map[ID]map[*CachedSelector]struct{}{},
	}
}

// AddIdentity makes an identity known and returns the selectors that now
// select it, in no particular order. Adding a known ID is a no-op.
func (c *SelectorCache) AddIdentity(id *Identity) []*CachedSelector {
	if _, ok := c.idents[id.ID]; ok {
		return nil
	}
	c.idents[id.ID] = id
	ns := c.nsIdents[id.Subject.Namespace]
	if ns == nil {
		ns = map[ID]*Identity{}
		c.nsIdents[id.Subject.Namespace] = ns
	}
	ns[id.ID] = id
	var changed []*CachedSelector
	try := func(cs *CachedSelector) {
		if cs.sel.Matches(&id.Subject) {
			c.add(cs, id.ID)
			changed = append(changed, cs)
		}
	}
	for cs := range c.scoped[id.Subject.Namespace] {
		try(cs)
	}
	for cs := range c.cluster {
		try(cs)
	}
	return changed
}

// RemoveIdentity forgets an identity and returns the selectors that selected
// it, in no particular order.
func (c *SelectorCache) RemoveIdentity(id ID) []*CachedSelector {
	ident, ok := c.idents[id]
	if !ok {
		return nil
	}
	delete(c.idents, id)
	if ns := c.nsIdents[ident.Subject.Namespace]; ns != nil {
		delete(ns, id)
		if len(ns) == 0 {
			delete(c.nsIdents, ident.Subject.Namespace)
		}
	}
	changed := make([]*CachedSelector, 0, len(c.holders[id]))
	for cs := range c.holders[id] {
		delete(cs.selected, id)
		cs.sorted = nil
		changed = append(changed, cs)
	}
	delete(c.holders, id)
	return changed
}

func (c *SelectorCache) add(cs *CachedSelector, id ID) {
	cs.selected[id] = struct{}{}
	cs.sorted = nil
	h := c.holders[id]
	if h == nil {
		h = map[*CachedSelector]struct{}{}
		c.holders[id] = h
	}
	h[cs] = struct{}{}
}

// Identity returns a known identity.
func (c *SelectorCache) Identity(id ID) (*Identity, bool) {
	i, ok := c.idents[id]
	return i, ok
}

// Acquire returns the cached selector for sel, evaluating it on first use,
// and takes a reference; Release drops it. Selectors with equal keys share
// one entry.
func (c *SelectorCache) Acquire(sel PeerSelector) *CachedSelector {
	if !sel.scoped() {
		sel.Namespace = ""
	}
	k := sel.Key()
	if cs, ok := c.selectors[k]; ok {
		cs.refs++
		return cs
	}
	cs := &CachedSelector{key: k, sel: sel, refs: 1, selected: map[ID]struct{}{}}
	c.selectors[k] = cs
	candidates := c.idents
	if sel.scoped() {
		candidates = c.nsIdents[sel.Namespace]
		set := c.scoped[sel.Namespace]
		if set == nil {
			set = map[*CachedSelector]struct{}{}
			c.scoped[sel.Namespace] = set
		}
		set[cs] = struct{}{}
	} else {
		c.cluster[cs] = struct{}{}
	}
	for id, ident := range candidates {
		if sel.Matches(&ident.Subject) {
			c.add(cs, id)
		}
	}
	return cs
}

// Release drops a reference taken by Acquire; the last one removes the
// selector from the cache.
func (c *SelectorCache) Release(cs *CachedSelector) {
	if cs.refs == 0 {
		return
	}
	cs.refs--
	if cs.refs > 0 {
		return
	}
	delete(c.selectors, cs.key)
	if cs.sel.scoped() {
		if set := c.scoped[cs.sel.Namespace]; set != nil {
			delete(set, cs)
			if len(set) == 0 {
				delete(c.scoped, cs.sel.Namespace)
			}
		}
	} else {
		delete(c.cluster, cs)
	}
	for id := range cs.selected {
		if h := c.holders[id]; h != nil {
			delete(h, cs)
			if len(h) == 0 {
				delete(c.holders, id)
			}
		}
	}
}

// Len returns the number of cached selectors.
func (c *SelectorCache) Len() int { return len(c.selectors) }

// Select evaluates sel against the known identities without caching it,
// for one-off questions. The result is sorted.
func (c *SelectorCache) Select(sel PeerSelector) []ID {
	var out []ID
	for id, ident := range c.idents {
		if sel.Matches(&ident.Subject) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Selector returns the selector.
func (cs *CachedSelector) Selector() *PeerSelector { return &cs.sel }

// Selects reports whether the selector currently selects id.
func (cs *CachedSelector) Selects(id ID) bool {
	_, ok := cs.selected[id]
	return ok
}

// Len returns the number of selected identities.
func (cs *CachedSelector) Len() int { return len(cs.selected) }

// Selected returns the selected identities in order. The slice is shared
// until the selection next changes and must not be modified.
func (cs *CachedSelector) Selected() []ID {
	if cs.sorted == nil && len(cs.selected) > 0 {
		cs.sorted = slices.Sorted(maps.Keys(cs.selected))
	}
	return cs.sorted
}
