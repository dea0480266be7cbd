package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
)

// Reads of single entries, made the way the programs make them: the LPM
// tries are asked with a full-length key and answer with the longest
// matching entry, so `sluice policy trace` learns what the datapath would
// decide from the maps themselves, not from what the agent meant to write.

// LookupIPCache returns the ipcache entry the datapath finds for addr (the
// longest matching prefix); false when none matches, which the datapath
// reads as world.
func (m *Maps) LookupIPCache(addr netip.Addr) (IPCacheEntry, bool, error) {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return IPCacheEntry{}, false, fmt.Errorf("ipcache lookup of an invalid address")
	}
	k := ipcacheKey(netip.PrefixFrom(addr, addr.BitLen()))
	var v bpfobj.EndpointSlIpcacheVal
	if err := m.IPCache.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return IPCacheEntry{}, false, nil
		}
		return IPCacheEntry{}, false, fmt.Errorf("look %s up in sl_ipcache: %w", addr, err)
	}
	return IPCacheEntry{Identity: v.Identity, EndpointID: v.EpId}, true, nil
}

// PolicyQuery is a new connection as an endpoint's policy lookup sees it.
type PolicyQuery struct {
	// Dir is the connection's direction at the endpoint (1 ingress, 2
	// egress); Proto and Port its protocol and destination port.
	Dir   uint8
	Proto uint8
	Port  uint16
	// PeerIdentity is the other end's identity, PeerAddr its address
	// (for the endpoint's CIDR classes).
	PeerIdentity uint32
	PeerAddr     netip.Addr
}

// Peer kinds of a PolicyMatch: which of the three lookups matched, in the
// order of precedence the datapath gives them on a tie.
const (
	MatchPeerAny      = 1
	MatchPeerCIDR     = 2
	MatchPeerIdentity = 3
)

// PolicyMatch is the outcome of an endpoint's policy lookup.
type PolicyMatch struct {
	// HasMaps is false when the endpoint has no policy map at all (the
	// agent writes none for an endpoint under no policy, or failing
	// closed): the datapath then denies in an enforced direction.
	HasMaps bool
	// Found is set when an entry matched; the fields below describe it.
	Found bool
	// Class is the peer address's CIDR class, 0 when it has none.
	Class uint32
	// Peer is MatchPeerIdentity, MatchPeerCIDR or MatchPeerAny.
	Peer  int
	Entry PolicyEntry
}

// LookupPolicy decides q against endpoint epID's policy maps as the
// datapath's policy_lookup does: three lookups (the peer's identity, its
// address's CIDR class, any peer), the longest match winning, then a
// redirect over an allow (not for tiered entries), then the more specific
// peer. It does not look
// at the endpoint's flags (enforcement, audit, fail-closed).
func (m *Maps) LookupPolicy(epID uint32, q PolicyQuery) (PolicyMatch, error) {
	var out PolicyMatch
	var pm *ebpf.Map
	if err := m.Policy.Lookup(epID, &pm); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		return out, fmt.Errorf("policy map of endpoint %d: %w", epID, err)
	}
	defer pm.Close()
	out.HasMaps = true
	if q.PeerAddr.IsValid() {
		var cm *ebpf.Map
		switch err := m.PolicyCIDR.Lookup(epID, &cm); {
		case err == nil:
			defer cm.Close()
			// The full address of either family, as the datapath looks it up.
			peer := q.PeerAddr.Unmap()
			ck := PolicyCIDR{Dir: q.Dir, Prefix: netip.PrefixFrom(peer, peer.BitLen())}.raw()
			var cls uint32
			if err := cm.Lookup(&ck, &cls); err == nil {
				out.Class = cls
			} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
				return out, fmt.Errorf("CIDR class of %s at endpoint %d: %w", q.PeerAddr, epID, err)
			}
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return out, fmt.Errorf("CIDR map of endpoint %d: %w", epID, err)
		}
	}
	best := 0
	try := func(id uint32, kind int) error {
		k := bpfobj.EndpointSlPolicyKey{Prefixlen: 64, Identity: id, Dir: q.Dir, Proto: q.Proto, Dport: raw.Htons(q.Port)}
		var v bpfobj.EndpointSlPolicyEntry
		if err := pm.Lookup(&k, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return nil
			}
			return fmt.Errorf("policy lookup at endpoint %d: %w", epID, err)
		}
		// The score of bpf/lib/policy.h's policy_try.
		score := int(v.Prefixlen)<<3 | kind
		if v.Verdict&policyEntryVerdictMask == VerdictRedirect && v.Verdict&policyEntryTiered == 0 {
			score |= 4
		}
		if score <= best {
			return nil
		}
		best = score
		// The value records the matched key's length; the key is the
		// query's, masked to it.
		mk := bpfobj.EndpointSlPolicyKey{Prefixlen: uint32(v.Prefixlen), Identity: id, Dir: q.Dir}
		if v.Prefixlen >= 48 {
			mk.Proto = q.Proto
			plen := v.Prefixlen - 48
			if plen > 0 {
				mk.Dport = raw.Htons(q.Port & (uint16(0xffff) << (16 - plen)))
			}
		}
		out.Found, out.Peer, out.Entry = true, kind, policyEntryFrom(mk, v)
		return nil
	}
	if err := try(q.PeerIdentity, MatchPeerIdentity); err != nil {
		return out, err
	}
	if out.Class != 0 {
		if err := try(out.Class, MatchPeerCIDR); err != nil {
			return out, err
		}
	}
	if err := try(IdentityAny, MatchPeerAny); err != nil {
		return out, err
	}
	return out, nil
}

// LBService is one frontend as the LB maps hold it, with its backends.
type LBService struct {
	Frontend LBFrontend
	// Backends are the backends of Frontend.Slots, in slot order; a slot
	// whose backend entry is missing is in Missing.
	Backends []LBBackend
	Missing  []uint32
}

// LookupLB reads the frontend key and the backends its slots name from
// the LB maps; false when the frontend is not there.
func (m *Maps) LookupLB(key LBFrontendKey) (LBService, bool, error) {
	var out LBService
	var v bpfobj.EndpointSlLbEntry
	k := key.raw(0)
	if err := m.LBSvc.Lookup(&k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, false, nil
		}
		return out, false, fmt.Errorf("look frontend %s up in sl_lb_svc: %w", key, err)
	}
	out.Frontend = LBFrontend{Key: key, ID: v.SvcId, Flags: v.Flags, AffinityTimeout: v.AffinityTimeout}
	for slot := uint16(1); slot <= v.Count; slot++ {
		var sv bpfobj.EndpointSlLbEntry
		sk := key.raw(slot)
		if err := m.LBSvc.Lookup(&sk, &sv); err != nil {
			return out, true, fmt.Errorf("slot %d of frontend %s: %w", slot, key, err)
		}
		out.Frontend.Slots = append(out.Frontend.Slots, sv.BackendId)
		var b bpfobj.EndpointSlLbBackend
		switch err := m.LBBackends.Lookup(sv.BackendId, &b); {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			out.Missing = append(out.Missing, sv.BackendId)
		case err != nil:
			return out, true, fmt.Errorf("backend %d of frontend %s: %w", sv.BackendId, key, err)
		default:
			out.Backends = append(out.Backends, lbBackendFrom(sv.BackendId, &b))
		}
	}
	return out, true, nil
}
