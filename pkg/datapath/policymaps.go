package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

// Policy verdicts of map entries and events, as enum sl_policy_verdict.
const (
	VerdictNone     = uint8(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_NONE)
	VerdictAllow    = uint8(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_ALLOW)
	VerdictRedirect = uint8(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_REDIRECT)
	VerdictDeny     = uint8(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_DENY)
	VerdictAudit    = uint8(bpfobj.EndpointSlPolicyVerdictSL_VERDICT_AUDIT)
)

// The bits of an entry's verdict byte: the verdict, and flags above it.
const (
	policyEntryTiered      = uint8(bpfobj.EndpointSlPolicyEntryFlagSL_POLICY_F_TIERED)
	policyEntryVerdictMask = uint8(bpfobj.EndpointSlPolicyEntryFlagSL_POLICY_VERDICT_MASK)
)

// Reserved identities, as enum sl_identity_reserved.
const (
	IdentityAny        = uint32(bpfobj.EndpointSlIdentityReservedSL_ID_ANY)
	IdentityHost       = uint32(bpfobj.EndpointSlIdentityReservedSL_ID_HOST)
	IdentityWorld      = uint32(bpfobj.EndpointSlIdentityReservedSL_ID_WORLD)
	IdentityRemoteNode = uint32(bpfobj.EndpointSlIdentityReservedSL_ID_REMOTE_NODE)
)

// PolicyEntry is one entry of an endpoint's policy map: peers of Identity
// (0: any peer) may open connections in direction Dir (1 ingress, 2
// egress) with protocol Proto (0: any, and then any port) to destination
// ports whose first PortPrefixLen bits (0..16) are Port's.
type PolicyEntry struct {
	Identity      uint32 `json:"identity"`
	Dir           uint8  `json:"dir"`
	Proto         uint8  `json:"proto"`
	Port          uint16 `json:"port"`
	PortPrefixLen uint8  `json:"portPrefixLen"`
	Verdict       uint8  `json:"verdict"`
	ProxyPort     uint16 `json:"proxyPort,omitempty"`
	// Rule identifies the deciding rule in verdict events.
	Rule uint32 `json:"rule"`
	// Tiered marks an entry of a direction compiled with
	// ClusterNetworkPolicy tiers: at equal length it ranks by its peer's
	// specificity only, a Redirect getting no precedence over the other
	// verdicts (SL_POLICY_F_TIERED).
	Tiered bool `json:"tiered,omitempty"`
}

// PolicyCIDR is an entry of an endpoint's CIDR map: a peer address in
// direction Dir whose longest matching prefix is Prefix belongs to Class,
// an identity looked up in the endpoint's policy map.
type PolicyCIDR struct {
	Dir    uint8        `json:"dir"`
	Prefix netip.Prefix `json:"prefix"`
	Class  uint32       `json:"class"`
}

// EndpointPolicy is the content of one endpoint's policy maps.
type EndpointPolicy struct {
	Entries []PolicyEntry `json:"entries"`
	CIDRs   []PolicyCIDR  `json:"cidrs,omitempty"`
}

func (e PolicyEntry) raw() (bpfobj.EndpointSlPolicyKey, bpfobj.EndpointSlPolicyEntry) {
	k := bpfobj.EndpointSlPolicyKey{Prefixlen: 40, Identity: e.Identity, Dir: e.Dir}
	if e.Proto != 0 {
		plen := min(e.PortPrefixLen, 16)
		k.Prefixlen = 48 + uint32(plen)
		k.Proto = e.Proto
		mask := uint16(0xffff) << (16 - plen)
		if plen == 0 {
			mask = 0
		}
		k.Dport = raw.Htons(e.Port & mask)
	}
	v := bpfobj.EndpointSlPolicyEntry{Rule: e.Rule, ProxyPort: e.ProxyPort, Verdict: e.Verdict, Prefixlen: uint8(k.Prefixlen)}
	if e.Tiered {
		v.Verdict |= policyEntryTiered
	}
	return k, v
}

func policyEntryFrom(k bpfobj.EndpointSlPolicyKey, v bpfobj.EndpointSlPolicyEntry) PolicyEntry {
	e := PolicyEntry{Identity: k.Identity, Dir: k.Dir, Verdict: v.Verdict & policyEntryVerdictMask, ProxyPort: v.ProxyPort, Rule: v.Rule,
		Tiered: v.Verdict&policyEntryTiered != 0}
	if k.Prefixlen >= 48 {
		e.Proto = k.Proto
		e.PortPrefixLen = uint8(k.Prefixlen - 48)
		e.Port = raw.Ntohs(k.Dport)
	}
	return e
}

func (c PolicyCIDR) raw() bpfobj.EndpointSlPolicyCidrKey {
	k := bpfobj.EndpointSlPolicyCidrKey{Prefixlen: 32 + uint32(c.Prefix.Bits()), Dir: c.Dir, Family: 2}
	if c.Prefix.Addr().Is6() {
		k.Family = 10
	}
	k.Addr.Addr6 = raw.AddrTo(c.Prefix.Masked().Addr())
	return k
}

// WriteEndpointPolicy replaces endpoint epID's policy: complete new maps
// are built and swapped in, the CIDR map first (its classes are only
// looked up through the policy map), so a packet sees the old policy or
// the new one. An entry count over the per-endpoint size is ErrMapFull.
func (m *Maps) WriteEndpointPolicy(epID uint32, p EndpointPolicy) error {
	if m.policyInner == nil || m.cidrInner == nil {
		return errors.New("maps opened without a loaded datapath cannot write policy")
	}
	if n := uint32(max(len(p.Entries), len(p.CIDRs))); n > m.policyInner.MaxEntries {
		return fmt.Errorf("endpoint %d needs %d policy entries, the per-endpoint maps hold %d (--policy-map-max): %w",
			epID, n, m.policyInner.MaxEntries, ErrMapFull)
	}
	if len(p.CIDRs) > 0 {
		cm, err := ebpf.NewMap(m.cidrInner)
		if err != nil {
			return fmt.Errorf("create CIDR map of endpoint %d: %w", epID, err)
		}
		defer cm.Close()
		for _, c := range p.CIDRs {
			k := c.raw()
			if err := cm.Put(&k, c.Class); err != nil {
				return fmt.Errorf("CIDR %s of endpoint %d: %w", c.Prefix, epID, mapErr(cm, err))
			}
		}
		if err := m.PolicyCIDR.Put(epID, cm); err != nil {
			return fmt.Errorf("install CIDR map of endpoint %d: %w", epID, mapErr(m.PolicyCIDR, err))
		}
	}
	pm, err := ebpf.NewMap(m.policyInner)
	if err != nil {
		return fmt.Errorf("create policy map of endpoint %d: %w", epID, err)
	}
	defer pm.Close()
	for _, e := range p.Entries {
		k, v := e.raw()
		if err := pm.Put(&k, &v); err != nil {
			return fmt.Errorf("policy entry %+v of endpoint %d: %w", e, epID, mapErr(pm, err))
		}
	}
	if err := m.Policy.Put(epID, pm); err != nil {
		return fmt.Errorf("install policy map of endpoint %d: %w", epID, mapErr(m.Policy, err))
	}
	if len(p.CIDRs) == 0 {
		if err := m.PolicyCIDR.Delete(epID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove CIDR map of endpoint %d: %w", epID, err)
		}
	}
	return nil
}

// DeleteEndpointPolicy removes endpoint epID's policy maps.
func (m *Maps) DeleteEndpointPolicy(epID uint32) error {
	var errs []error
	for _, om := range []*ebpf.Map{m.Policy, m.PolicyCIDR} {
		if err := om.Delete(epID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("remove policy of endpoint %d: %w", epID, err))
		}
	}
	return errors.Join(errs...)
}

// lookupInner opens the inner map at key of a map of maps. The agent swaps
// in a new inner map on every policy change, and the one a lookup named
// may be freed before it is opened (ENOENT from its ID, not a missing
// key): look again, and get the new one.
func lookupInner(outer *ebpf.Map, key uint32) (*ebpf.Map, error) {
	var (
		inner *ebpf.Map
		err   error
	)
	for range 10 {
		err = outer.Lookup(key, &inner)
		if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) || !errors.Is(err, unix.ENOENT) {
			return inner, err
		}
	}
	return nil, err
}

// PolicyEndpoints lists the endpoint IDs that have a policy map. The
// values are read as inner map IDs, not opened: a map swapped in
// meanwhile must not fail the walk.
func (m *Maps) PolicyEndpoints() ([]uint32, error) {
	var (
		id, innerID uint32
		out         []uint32
	)
	it := m.Policy.Iterate()
	for it.Next(&id, &innerID) {
		out = append(out, id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate sl_policy: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// DumpEndpointPolicy reads endpoint epID's policy maps back, sorted.
func (m *Maps) DumpEndpointPolicy(epID uint32) (EndpointPolicy, error) {
	var p EndpointPolicy
	pm, err := lookupInner(m.Policy, epID)
	if err != nil {
		return p, fmt.Errorf("policy map of endpoint %d: %w", epID, err)
	}
	defer pm.Close()
	var (
		k bpfobj.EndpointSlPolicyKey
		v bpfobj.EndpointSlPolicyEntry
	)
	it := pm.Iterate()
	for it.Next(&k, &v) {
		p.Entries = append(p.Entries, policyEntryFrom(k, v))
	}
	if err := it.Err(); err != nil {
		return p, fmt.Errorf("iterate policy of endpoint %d: %w", epID, err)
	}
	sort.Slice(p.Entries, func(i, j int) bool {
		a, b := p.Entries[i], p.Entries[j]
		if a.Dir != b.Dir {
			return a.Dir < b.Dir
		}
		if a.Identity != b.Identity {
			return a.Identity < b.Identity
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.PortPrefixLen < b.PortPrefixLen
	})
	if cm, err := lookupInner(m.PolicyCIDR, epID); err == nil {
		defer cm.Close()
		var (
			ck  bpfobj.EndpointSlPolicyCidrKey
			cls uint32
		)
		cit := cm.Iterate()
		for cit.Next(&ck, &cls) {
			p.CIDRs = append(p.CIDRs, PolicyCIDR{Dir: ck.Dir, Class: cls,
				Prefix: netip.PrefixFrom(raw.AddrFrom(ck.Addr.Addr6, ck.Family), int(ck.Prefixlen-32))})
		}
		if err := cit.Err(); err != nil {
			return p, fmt.Errorf("iterate CIDR classes of endpoint %d: %w", epID, err)
		}
		sort.Slice(p.CIDRs, func(i, j int) bool {
			a, b := p.CIDRs[i], p.CIDRs[j]
			if a.Dir != b.Dir {
				return a.Dir < b.Dir
			}
			if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
				return c < 0
			}
			return a.Prefix.Bits() < b.Prefix.Bits()
		})
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return p, fmt.Errorf("CIDR map of endpoint %d: %w", epID, err)
	}
	return p, nil
}

// IPCacheEntry is what the ipcache says about a prefix.
type IPCacheEntry struct {
	Identity uint32 `json:"identity"`
	// EndpointID is set for pods of this node.
	EndpointID uint32 `json:"endpointID,omitempty"`
}

func ipcacheKey(p netip.Prefix) bpfobj.EndpointSlIpcacheKey {
	k := bpfobj.EndpointSlIpcacheKey{Prefixlen: 32 + uint32(p.Bits()), Family: 2}
	if p.Addr().Is6() {
		k.Family = 10
	}
	k.Addr.Addr6 = raw.AddrTo(p.Masked().Addr())
	return k
}

// DumpIPCache reads the ipcache back.
func (m *Maps) DumpIPCache() (map[netip.Prefix]IPCacheEntry, error) {
	out := map[netip.Prefix]IPCacheEntry{}
	var (
		k bpfobj.EndpointSlIpcacheKey
		v bpfobj.EndpointSlIpcacheVal
	)
	it := m.IPCache.Iterate()
	for it.Next(&k, &v) {
		if k.Prefixlen < 32 {
			continue
		}
		out[netip.PrefixFrom(raw.AddrFrom(k.Addr.Addr6, k.Family), int(k.Prefixlen-32))] = IPCacheEntry{Identity: v.Identity, EndpointID: v.EpId}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate sl_ipcache: %w", err)
	}
	return out, nil
}

// SyncIPCache makes the ipcache hold exactly want: changed and new
// entries first, then stale ones deleted (an address never falls back to
// world in between unless it is really gone). LPM tries have no batch
// operations: one syscall per changed entry.
func (m *Maps) SyncIPCache(want map[netip.Prefix]IPCacheEntry) (changed, removed int, err error) {
	have, err := m.DumpIPCache()
	if err != nil {
		return 0, 0, err
	}
	for p, e := range want {
		if old, ok := have[p]; ok && old == e {
			continue
		}
		k := ipcacheKey(p)
		v := bpfobj.EndpointSlIpcacheVal{Identity: e.Identity, EpId: e.EndpointID}
		if err := m.IPCache.Put(&k, &v); err != nil {
			return changed, removed, fmt.Errorf("ipcache %s: %w", p, mapErr(m.IPCache, err))
		}
		changed++
	}
	for p := range have {
		if _, ok := want[p]; ok {
			continue
		}
		k := ipcacheKey(p)
		if err := m.IPCache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return changed, removed, fmt.Errorf("ipcache %s: %w", p, err)
		}
		removed++
	}
	return changed, removed, nil
}

// PolicyRevision returns the current policy revision.
func (m *Maps) PolicyRevision() (uint32, error) {
	var rev uint32
	if err := m.PolicyRev.Lookup(uint32(0), &rev); err != nil {
		return 0, fmt.Errorf("read sl_policy_rev: %w", err)
	}
	return rev, nil
}

// BumpPolicyRevision advances the policy revision, after a change of
// policy, identities or the ipcache is fully written: connections admitted
// under an older revision are decided again on their next packet.
func (m *Maps) BumpPolicyRevision() (uint32, error) {
	rev, err := m.PolicyRevision()
	if err != nil {
		return 0, err
	}
	rev++
	if rev == 0 { // 0 is what a fresh map holds: skip it on wrap-around
		rev = 1
	}
	if err := m.PolicyRev.Put(uint32(0), rev); err != nil {
		return 0, fmt.Errorf("write sl_policy_rev: %w", err)
	}
	return rev, nil
}
