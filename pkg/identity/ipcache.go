package identity

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/model"
)

// Defaults the ipcache always holds: an address nothing else claims is
// World, in either family (the datapath's one ipcache holds both).
var (
	WorldIPv4 = netip.MustParsePrefix("0.0.0.0/0")
	WorldIPv6 = netip.MustParsePrefix("::/0")
)

// Mapping is one ipcache entry.
type Mapping struct {
	Prefix netip.Prefix `json:"prefix"`
	ID     ID           `json:"id"`
}

// ownerKind orders the claims on one prefix: the lowest kind wins, then the
// lowest name. A node address beats a pod address (a pod that claims the
// node's address is host-network in all but name, or stale), and this node
// beats the others (a node address that moved keeps meaning "here" until the
// old node object is updated).
type ownerKind uint8

const (
	ownerHost ownerKind = iota
	ownerRemoteNode
	ownerPod
	ownerWorld
)

type owner struct {
	kind ownerKind
	name string // node name, or pod "namespace/name"
}

type claim struct {
	owner owner
	id    ID
}

// IPCache is the desired address → identity map (the datapath does a
// longest-prefix lookup on it), built from claims: every pod with an
// identity claims its addresses (/32 or /128), this node's InternalIP and
// ExternalIP addresses are Host, other nodes' are RemoteNode, and 0.0.0.0/0
// and ::/0 are World. Host-network pods claim nothing: their address is
// their node's. Two claims on one address are resolved by ownerKind order,
// then by name, so the result does not depend on the order of updates.
//
// It tracks which prefixes changed since the last call to Changes, so a
// reconciler can apply deltas; Map returns the whole map for full resyncs.
// An IPCache is not safe for concurrent use.
type IPCache struct {
	nodeName string
	claims   map[owner][]netip.Prefix
	byPrefix map[netip.Prefix][]claim
	current  map[netip.Prefix]ID
	// published is what the last Changes call reported, for prefixes that
	// changed since.
	published map[netip.Prefix]ID
}

// NewIPCache returns an ipcache holding only the World defaults. nodeName is
// the name of this node.
func NewIPCache(nodeName string) *IPCache {
	c := &IPCache{
		nodeName:  nodeName,
		claims:    map[owner][]netip.Prefix{},
		byPrefix:  map[netip.Prefix][]claim{},
		current:   map[netip.Prefix]ID{},
		published: map[netip.Prefix]ID{},
	}
	c.set(owner{kind: ownerWorld}, []netip.Prefix{WorldIPv4, WorldIPv6}, World)
	return c
}

// SetPod records pod's addresses with identity id, replacing what the pod
// claimed before. A pod without an identity (id Unknown, or HasIdentity
// false) claims nothing.
func (c *IPCache) SetPod(pod *model.Pod, id ID) {
	o := owner{kind: ownerPod, name: pod.Namespace + "/" + pod.Name}
	if id == Unknown || !HasIdentity(pod) {
		c.set(o, nil, Unknown)
		return
	}
	prefixes := make([]netip.Prefix, 0, len(pod.IPs))
	for _, a := range pod.IPs {
		if a.IsValid() {
			a = a.Unmap()
			prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	c.set(o, prefixes, id)
}

// DeletePod drops the claims of a pod.
func (c *IPCache) DeletePod(name model.NamespacedName) {
	c.set(owner{kind: ownerPod, name: name.Namespace + "/" + name.Name}, nil, Unknown)
}

// SetNode records the InternalIP and ExternalIP addresses of a node, as Host
// if it is this node and RemoteNode otherwise.
func (c *IPCache) SetNode(node *model.Node) {
	kind, id := ownerRemoteNode, RemoteNode
	if node.Name == c.nodeName {
		kind, id = ownerHost, Host
	}
	c.DeleteNode(node.Name) // the node may have been the other kind before
	var prefixes []netip.Prefix
	for _, na := range node.Addresses {
		if na.Type != model.NodeInternalIP && na.Type != model.NodeExternalIP {
			continue
		}
		a, err := netip.ParseAddr(na.Address)
		if err != nil {
			continue // conversion keeps names in Address; only IPs matter here
		}
		a = a.Unmap().WithZone("")
		prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	c.set(owner{kind: kind, name: node.Name}, prefixes, id)
}

// DeleteNode drops the claims of a node.
func (c *IPCache) DeleteNode(name string) {
	c.set(owner{kind: ownerHost, name: name}, nil, Unknown)
	c.set(owner{kind: ownerRemoteNode, name: name}, nil, Unknown)
}

func (c *IPCache) set(o owner, prefixes []netip.Prefix, id ID) {
	slices.SortFunc(prefixes, comparePrefixes)
	prefixes = slices.Compact(prefixes)
	old := c.claims[o]
	for _, p := range old {
		cl := c.byPrefix[p]
		cl = slices.DeleteFunc(cl, func(x claim) bool { return x.owner == o })
		if len(cl) == 0 {
			delete(c.byPrefix, p)
		} else {
			c.byPrefix[p] = cl
		}
	}
	if len(prefixes) == 0 {
		delete(c.claims, o)
	} else {
		c.claims[o] = prefixes
	}
	for _, p := range prefixes {
		c.byPrefix[p] = append(c.byPrefix[p], claim{owner: o, id: id})
	}
	for _, p := range old {
		c.resolve(p)
	}
	for _, p := range prefixes {
		c.resolve(p)
	}
}

func (c *IPCache) resolve(p netip.Prefix) {
	prev, had := c.current[p]
	cl := c.byPrefix[p]
	if len(cl) == 0 {
		if !had {
			return
		}
		c.notePrevious(p, prev, had)
		delete(c.current, p)
		return
	}
	win := slices.MinFunc(cl, func(a, b claim) int {
		if d := cmp.Compare(a.owner.kind, b.owner.kind); d != 0 {
			return d
		}
		return cmp.Compare(a.owner.name, b.owner.name)
	})
	if had && prev == win.id {
		return
	}
	c.notePrevious(p, prev, had)
	c.current[p] = win.id
}

// notePrevious remembers what the prefix mapped to when it was last
// published, the first time it changes after that.
func (c *IPCache) notePrevious(p netip.Prefix, prev ID, had bool) {
	if _, ok := c.published[p]; ok {
		return
	}
	if !had {
		prev = Unknown
	}
	c.published[p] = prev
}

// Lookup returns the identity of the exact prefix p.
func (c *IPCache) Lookup(p netip.Prefix) (ID, bool) {
	id, ok := c.current[p]
	return id, ok
}

// Map returns a copy of the whole map.
func (c *IPCache) Map() map[netip.Prefix]ID { return maps.Clone(c.current) }

// Changes returns what changed since the previous call (or since NewIPCache):
// prefixes to write, and prefixes to delete, each sorted. A prefix that
// changed and changed back is not reported.
func (c *IPCache) Changes() (upserts []Mapping, deletes []netip.Prefix) {
	for p, before := range c.published {
		now, ok := c.current[p]
		switch {
		case !ok && before != Unknown:
			deletes = append(deletes, p)
		case ok && now != before:
			upserts = append(upserts, Mapping{Prefix: p, ID: now})
		}
	}
	clear(c.published)
	slices.SortFunc(upserts, func(a, b Mapping) int { return comparePrefixes(a.Prefix, b.Prefix) })
	slices.SortFunc(deletes, comparePrefixes)
	return upserts, deletes
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// ComputeIPCache returns the desired ipcache of state for node nodeName from
// scratch; podID gives each pod's identity (Unknown for none). It is what an
// IPCache fed with every pod and node holds.
func ComputeIPCache(s *model.State, nodeName string, podID func(*model.Pod) ID) map[netip.Prefix]ID {
	c := NewIPCache(nodeName)
	for _, n := range s.Nodes {
		c.SetNode(n)
	}
	for _, p := range s.Pods {
		if HasIdentity(p) {
			c.SetPod(p, podID(p))
		}
	}
	return c.current
}
