package datapath

import (
	"fmt"
	"net/netip"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
	"github.com/sluice-net/sluice/pkg/model"
)

// NATUsage is how much of the SNAT port range one node address uses for
// one protocol: external connections toward backends on other nodes each
// hold a port until they end.
type NATUsage struct {
	Address    string `json:"address"`
	Proto      string `json:"proto"`
	PortsInUse int    `json:"portsInUse"`
	PortsTotal int    `json:"portsTotal"`
}

// natOwnerKey is the CT key of the SERVICE entry that owns a mapping: the
// external client's connection to the frontend, tracked on the uplink
// (endpoint 0). The mapping lives exactly as long as that entry says the
// connection does (bpf/lib/nodeport.h: snat_owner_live).
func natOwnerKey(k *bpfobj.EndpointSlNatKey, v *bpfobj.EndpointSlNatVal) bpfobj.EndpointSlCtKey {
	var ck bpfobj.EndpointSlCtKey
	ck.EpId = 0
	ck.Family = natFamily(k)
	ck.Proto = k.Proto
	ck.Sport = v.ClientPort
	ck.Dport = v.FrontPort
	ck.Scope = uint8(bpfobj.EndpointSlCtScopeSL_CT_SCOPE_SERVICE)
	ck.Saddr.Addr6 = v.Client.Addr6
	ck.Daddr.Addr6 = v.Front.Addr6
	return ck
}

// afInet is AF_INET as the datapath stores it in keys.
const afInet = unix.AF_INET

// natFamily is the address family of an SNAT mapping: its key's family
// byte is 0 for IPv4 (mappings pinned before the byte existed) and
// AF_INET6 for IPv6.
func natFamily(k *bpfobj.EndpointSlNatKey) uint8 {
	if k.Family == unix.AF_INET6 {
		return unix.AF_INET6
	}
	return afInet
}

// natMappingLive says whether the SNAT mapping k → v still belongs to a
// connection: its owner entry exists, has not expired, is not closed (a
// closed connection's port is given back after the close grace, as the
// datapath does), still pins this port, and its backend is still the one
// the mapping sends to (a removed backend moves the connection on).
func (m *Maps) natMappingLive(k *bpfobj.EndpointSlNatKey, v *bpfobj.EndpointSlNatVal, now uint64, closeGrace uint64) bool {
	var e bpfobj.EndpointSlCtEntry
	ck := natOwnerKey(k, v)
	if err := m.CT.Lookup(&ck, &e); err != nil {
		return false
	}
	if e.Expires <= now || e.NatPort != k.Port || e.NatFlags&uint8(bpfobj.EndpointSlCtNatFlagSL_CT_NAT_SNAT) == 0 {
		return false
	}
	if e.State == uint8(bpfobj.EndpointSlCtStateSL_CT_CLOSED) && now+m.ctTimeoutClose >= e.Expires+closeGrace {
		return false
	}
	var b bpfobj.EndpointSlLbBackend
	if err := m.LBBackends.Lookup(&e.BackendId, &b); err != nil {
		return false
	}
	return b.Addr.Addr6 == v.Backend.Addr6 && b.Port == v.BackendPort
}

// NATGCStats is the result of one SNAT GC pass. Free counts the dead
// mappings left for the datapath to take over.
type NATGCStats struct {
	Live, Free, Deleted int
}

// natGCBeforeDelete, when set (by tests), runs between the last liveness
// check of a dead mapping and its deletion.
var natGCBeforeDelete func(k *bpfobj.EndpointSlNatKey)

// GCNAT deletes the SNAT mappings whose connection is over (closed,
// expired, re-pinned to another port, or its backend removed) and which
// the datapath cannot take over itself: ports outside the SNAT range and
// addresses no longer translated to. A dead mapping the datapath could take
// over is left to it: userspace cannot delete a map entry only if it is
// unchanged, and the datapath may take the port over for a new connection
// between any check and the delete, which would lose that connection's
// replies. Such mappings are bounded by the range and cost nothing: the
// datapath reuses them at once, and no reader counts them as in use.
func (m *Maps) GCNAT() (NATGCStats, error) {
	var (
		v     bpfobj.EndpointSlNatVal
		dead  []bpfobj.EndpointSlNatKey
		stats NATGCStats
	)
	if m.NAT == nil {
		return stats, nil
	}
	// The addresses the datapath translates to: the uplinks' SNAT
	// addresses, and every address a live mapping is on (a frontend
	// address, where the uplink is not known: snat_addr).
	inUse := map[[16]byte]bool{}
	err := walk(m.Uplinks, func(_ *uint32, u *bpfobj.EndpointSlUplink) bool {
		inUse[u.Ipv4.Addr6] = true
		inUse[u.Ipv6.Addr6] = true
		return true
	})
	if err != nil {
		return stats, fmt.Errorf("walk sl_uplinks: %w", err)
	}
	var candidates []bpfobj.EndpointSlNatKey
	now := MonotonicNow()
	err = walk(m.NAT, func(k *bpfobj.EndpointSlNatKey, v *bpfobj.EndpointSlNatVal) bool {
		if m.natMappingLive(k, v, now, snatCloseGraceNs) {
			stats.Live++
			inUse[k.Addr.Addr6] = true
		} else {
			candidates = append(candidates, *k)
		}
		return true
	})
	if err != nil {
		return stats, fmt.Errorf("walk sl_nat: %w", err)
	}
	for _, k := range candidates {
		port := raw.Ntohs(k.Port)
		if inUse[k.Addr.Addr6] && m.snatPortMax != 0 && port >= m.snatPortMin && port <= m.snatPortMax {
			stats.Free++
		} else {
			dead = append(dead, k)
		}
	}
	// The rest may still be taken over, by an agent whose range or uplink
	// changed under a running datapath: judge each again right before
	// deleting it, which narrows that window.
	for i := range dead {
		if err := m.NAT.Lookup(&dead[i], &v); err != nil {
			continue
		}
		if m.natMappingLive(&dead[i], &v, raw.MonotonicNow(), snatCloseGraceNs) {
			stats.Live++
			continue
		}
		if natGCBeforeDelete != nil {
			natGCBeforeDelete(&dead[i])
		}
		if err := m.NAT.Delete(&dead[i]); err == nil {
			stats.Deleted++
		}
	}
	return stats, nil
}

// snatCloseGraceNs is how long a closed connection keeps its SNAT port
// (bpf/lib/nodeport.h SNAT_CLOSE_GRACE_NS): long enough for the last ACK
// of a FIN handshake to be translated.
const snatCloseGraceNs = 2_000_000_000

// NATUsage counts the SNAT ports in use per node address and protocol.
// Only live mappings count: one whose connection ended is free for the
// datapath even before the GC removes it.
func (m *Maps) NATUsage() ([]NATUsage, error) {
	if m.NAT == nil {
		return nil, nil
	}
	type key struct {
		addr  netip.Addr
		proto uint8
	}
	inUse := map[key]int{}
	now := MonotonicNow()
	err := walk(m.NAT, func(k *bpfobj.EndpointSlNatKey, v *bpfobj.EndpointSlNatVal) bool {
		if m.natMappingLive(k, v, now, snatCloseGraceNs) {
			inUse[key{raw.AddrFrom(k.Addr.Addr6, natFamily(k)), k.Proto}]++
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("walk sl_nat: %w", err)
	}
	total := 0 // unknown to a CLI reading pins
	if m.snatPortMax != 0 {
		total = int(m.snatPortMax) - int(m.snatPortMin) + 1
	}
	out := make([]NATUsage, 0, len(inUse))
	for k, n := range inUse {
		out = append(out, NATUsage{Address: k.addr.String(), Proto: string(model.ProtocolOf(k.proto)), PortsInUse: n, PortsTotal: total})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Address != out[j].Address {
			return out[i].Address < out[j].Address
		}
		return out[i].Proto < out[j].Proto
	})
	return out, nil
}
