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

// NATGCStats is the result of one SNAT GC pass.
type NATGCStats struct {
	Live, Deleted int
}

// GCNAT deletes the SNAT mappings whose connection is over (closed,
// expired, re-pinned to another port, or its backend removed), so their
// ports serve new connections. The datapath also reclaims such ports when
// it allocates; this pass keeps the range clean between allocations and
// heals state pinned by an agent that never released it.
func (m *Maps) GCNAT() (NATGCStats, error) {
	var (
		v     bpfobj.EndpointSlNatVal
		dead  []bpfobj.EndpointSlNatKey
		stats NATGCStats
	)
	if m.NAT == nil {
		return stats, nil
	}
	now := MonotonicNow()
	err := walk(m.NAT, func(k *bpfobj.EndpointSlNatKey, v *bpfobj.EndpointSlNatVal) bool {
		if m.natMappingLive(k, v, now, snatCloseGraceNs) {
			stats.Live++
		} else {
			dead = append(dead, *k)
		}
		return true
	})
	if err != nil {
		return stats, fmt.Errorf("walk sl_nat: %w", err)
	}
	// The datapath may have taken a dead port over for a new connection
	// since the walk read it: judge the mapping again right before
	// deleting it, so a fresh one is never removed under its connection.
	for i := range dead {
		if err := m.NAT.Lookup(&dead[i], &v); err != nil {
			continue
		}
		if m.natMappingLive(&dead[i], &v, raw.MonotonicNow(), snatCloseGraceNs) {
			stats.Live++
			continue
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
