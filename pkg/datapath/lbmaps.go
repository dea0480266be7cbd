package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-net/sluice/pkg/datapath/bpfobj"
	"github.com/sluice-net/sluice/pkg/datapath/internal/raw"
	"github.com/sluice-net/sluice/pkg/model"
)

// LB flags: sl_lb_flag (bpf/include/sluice/types.h), generated.
const (
	LBFlagAffinity = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_AFFINITY)
	LBFlagMaglev   = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_MAGLEV)
	// LBFlagExternal: NodePort, externalIP or LoadBalancer frontend, served
	// on the uplinks.
	LBFlagExternal = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_EXTERNAL)
	// LBFlagLocal: externalTrafficPolicy Local (keep the client address).
	LBFlagLocal = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_LOCAL)
	// LBFlagNoLocal: no local endpoint but remote ones: drop, don't reject.
	LBFlagNoLocal = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_NO_LOCAL)
	// LBFlagSrcRange: loadBalancerSourceRanges restrict the clients to
	// SourceRanges (with the flag and no ranges, no client is allowed).
	LBFlagSrcRange = uint16(bpfobj.EndpointSlLbFlagSL_LB_F_SRC_RANGE)
)

// LBFrontendKey identifies a frontend: what a client addresses.
type LBFrontendKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

func (k LBFrontendKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), model.ProtocolOf(k.Proto))
}

// LBFrontend is one frontend as programmed: slot 0 plus its backend slots.
type LBFrontend struct {
	Key             LBFrontendKey
	ID              uint32
	Flags           uint16
	AffinityTimeout uint32 // seconds
	// Slots are the backend IDs taking new connections, in slot order.
	Slots []uint32
	// Maglev is the frontend's Maglev table (backend IDs, one per entry);
	// Flags must then have LBFlagMaglev. HasMaglev says a table is in
	// sl_lb_maglev: LBDump sets it but leaves Maglev nil, since tables are
	// written, not read back.
	Maglev    []uint32
	HasMaglev bool
	// SourceRanges (loadBalancerSourceRanges) are the client prefixes
	// allowed to open connections when Flags has LBFlagSrcRange.
	SourceRanges []netip.Prefix
}

type srcRange struct {
	svc    uint32
	prefix netip.Prefix
}

func (r srcRange) raw() bpfobj.EndpointSlLbSrcRangeKey {
	k := bpfobj.EndpointSlLbSrcRangeKey{Prefixlen: 32 + uint32(r.prefix.Bits()), SvcId: htonl(r.svc)}
	k.Addr.Addr6 = raw.AddrTo(r.prefix.Addr())
	return k
}

func htonl(v uint32) uint32 { return v<<24 | (v<<8)&0xff0000 | (v>>8)&0xff00 | v>>24 }

// LBBackend is one backend as programmed.
type LBBackend struct {
	ID          uint32
	Addr        netip.Addr
	Port        uint16
	Proto       uint8
	Terminating bool
	// Local backends are pods of this node: external connections reach
	// them without source translation.
	Local bool
}

func (k LBFrontendKey) raw(slot uint16) bpfobj.EndpointSlLbKey {
	r := bpfobj.EndpointSlLbKey{Port: raw.Htons(k.Port), Proto: k.Proto, Slot: slot}
	r.Addr.Addr6 = raw.AddrTo(k.Addr)
	return r
}

// LBState is the content of the LB maps.
type LBState struct {
	Frontends map[LBFrontendKey]LBFrontend
	Backends  map[uint32]LBBackend
}

// LBDump reads the LB maps back. Slots beyond a frontend's count (a
// half-done shrink) are reported in Slots too, so a diff removes them.
func (m *Maps) LBDump() (LBState, error) {
	st := LBState{Frontends: map[LBFrontendKey]LBFrontend{}, Backends: map[uint32]LBBackend{}}
	var (
		k     bpfobj.EndpointSlLbKey
		v     bpfobj.EndpointSlLbEntry
		slots = map[LBFrontendKey]map[uint16]uint32{}
	)
	it := m.LBSvc.Iterate()
	for it.Next(&k, &v) {
		key := LBFrontendKey{Addr: raw.AddrFrom(k.Addr.Addr6, 2), Port: raw.Ntohs(k.Port), Proto: k.Proto}
		if k.Slot == 0 {
			f := st.Frontends[key]
			f.Key, f.ID, f.Flags, f.AffinityTimeout = key, v.SvcId, v.Flags, v.AffinityTimeout
			st.Frontends[key] = f
			continue
		}
		if slots[key] == nil {
			slots[key] = map[uint16]uint32{}
		}
		slots[key][k.Slot] = v.BackendId
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("iterate sl_lb_svc: %w", err)
	}
	for key, ss := range slots {
		f := st.Frontends[key]
		f.Key = key
		max := uint16(0)
		for s := range ss {
			if s > max {
				max = s
			}
		}
		f.Slots = make([]uint32, max)
		for s, id := range ss {
			f.Slots[s-1] = id
		}
		st.Frontends[key] = f
	}
	var (
		id uint32
		b  bpfobj.EndpointSlLbBackend
	)
	bit := m.LBBackends.Iterate()
	for bit.Next(&id, &b) {
		st.Backends[id] = LBBackend{ID: id, Addr: raw.AddrFrom(b.Addr.Addr6, 2), Port: raw.Ntohs(b.Port), Proto: b.Proto,
			Terminating: b.State == uint8(bpfobj.EndpointSlLbBackendStateSL_LB_BACKEND_TERMINATING),
			Local:       b.Flags&uint8(bpfobj.EndpointSlLbBackendFlagSL_LB_BACKEND_F_LOCAL) != 0}
	}
	if err := bit.Err(); err != nil {
		return st, fmt.Errorf("iterate sl_lb_backends: %w", err)
	}
	if m.LBSrcRange != nil {
		ranges, err := m.dumpSrcRanges()
		if err != nil {
			return st, err
		}
		for k, f := range st.Frontends {
			if r := ranges[f.ID]; len(r) > 0 {
				f.SourceRanges = r
				st.Frontends[k] = f
			}
		}
	}
	if m.LBMaglev != nil {
		var (
			svc   uint32
			inner *ebpf.Map
		)
		has := map[uint32]bool{}
		mit := m.LBMaglev.Iterate()
		for mit.Next(&svc, &inner) {
			has[svc] = true
			inner.Close()
		}
		if err := mit.Err(); err != nil {
			return st, fmt.Errorf("iterate sl_lb_maglev: %w", err)
		}
		for k, f := range st.Frontends {
			if has[f.ID] {
				f.HasMaglev = true
				st.Frontends[k] = f
			}
		}
	}
	return st, nil
}

// dumpSrcRanges reads sl_lb_src_range back, by frontend ID, sorted.
func (m *Maps) dumpSrcRanges() (map[uint32][]netip.Prefix, error) {
	out := map[uint32][]netip.Prefix{}
	var (
		k bpfobj.EndpointSlLbSrcRangeKey
		v uint8
	)
	it := m.LBSrcRange.Iterate()
	for it.Next(&k, &v) {
		if k.Prefixlen < 32 {
			continue
		}
		id := htonl(k.SvcId)
		p := netip.PrefixFrom(raw.AddrFrom(k.Addr.Addr6, 2), int(k.Prefixlen-32))
		out[id] = append(out[id], p)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate sl_lb_src_range: %w", err)
	}
	for _, ps := range out {
		sortPrefixes(ps)
	}
	return out, nil
}

func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}

// LBFrontendsSorted returns the frontends ordered by address, port, protocol.
func (s LBState) LBFrontendsSorted() []LBFrontend {
	out := make([]LBFrontend, 0, len(s.Frontends))
	for _, f := range s.Frontends {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Proto < b.Proto
	})
	return out
}

// A full hash map refuses inserts with E2BIG.
var errNoSpace = unix.E2BIG

// ErrMapFull is returned (wrapped) when an LB map has no room left.
var ErrMapFull = errors.New("map is full")

// batch helpers fall back to single operations on kernels without batch
// support for the map type.
func batchUpdate[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		for i := range keys {
			if err := m.Put(&keys[i], &vals[i]); err != nil {
				return mapErr(m, err)
			}
		}
		return nil
	}
	return mapErr(m, err)
}

func batchDelete[K any](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchDelete(keys, nil)
	if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, ebpf.ErrKeyNotExist) {
		// One missing key aborts a batch delete: fall back to one by one.
		for i := range keys {
			if err := m.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return mapErr(m, err)
			}
		}
		return nil
	}
	return mapErr(m, err)
}

func mapErr(m *ebpf.Map, err error) error {
	if err == nil {
		return nil
	}
	info, _ := m.Info()
	name := "map"
	if info != nil {
		name = info.Name
	}
	if errors.Is(err, errNoSpace) || errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%s (%d entries): %w: raise its size in the agent configuration", name, m.MaxEntries(), ErrMapFull)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// LBPlan is an ordered set of map writes that takes the LB maps from one
// state to another without a packet ever seeing a half-written frontend.
type LBPlan struct {
	putBackends []LBBackend
	putRevNat   []LBFrontend
	putSlots    []slotWrite
	putServices []LBFrontend
	delSlots    []slotWrite
	delServices []LBFrontend
	delRevNat   []uint32
	delBackends []uint32
	putMaglev   []LBFrontend
	delMaglev   []uint32
	putRanges   []srcRange
	delRanges   []srcRange
	// RemovedBackends are backends that no longer exist: their
	// connections must be cleaned up.
	RemovedBackends []uint32
}

type slotWrite struct {
	key     LBFrontendKey
	slot    uint16
	backend uint32
	svc     uint32
}

// Empty reports whether the plan writes nothing.
func (p *LBPlan) Empty() bool {
	return len(p.putBackends)+len(p.putRevNat)+len(p.putSlots)+len(p.putServices)+
		len(p.delSlots)+len(p.delServices)+len(p.delRevNat)+len(p.delBackends)+
		len(p.putMaglev)+len(p.delMaglev)+len(p.putRanges)+len(p.delRanges) == 0
}

// String summarises the plan for logs.
func (p *LBPlan) String() string {
	return fmt.Sprintf("+%d/-%d frontends, +%d/-%d slots, +%d/-%d backends, +%d/-%d maglev tables",
		len(p.putServices), len(p.delServices), len(p.putSlots), len(p.delSlots), len(p.putBackends), len(p.delBackends),
		len(p.putMaglev), len(p.delMaglev))
}

// PlanLB diffs the desired LB state against have.
func PlanLB(have, want LBState) *LBPlan {
	p := &LBPlan{}
	for id, b := range want.Backends {
		if old, ok := have.Backends[id]; !ok || old != b {
			p.putBackends = append(p.putBackends, b)
		}
	}
	for id := range have.Backends {
		if _, ok := want.Backends[id]; !ok {
			p.delBackends = append(p.delBackends, id)
			p.RemovedBackends = append(p.RemovedBackends, id)
		}
	}
	revnat := make(map[uint32]bool, len(want.Frontends))
	for _, f := range want.Frontends {
		revnat[f.ID] = true
	}
	for key, f := range want.Frontends {
		old, exists := have.Frontends[key]
		if !exists || old.ID != f.ID {
			p.putRevNat = append(p.putRevNat, f)
		}
		for i, id := range f.Slots {
			if i >= len(old.Slots) || old.Slots[i] != id || old.ID != f.ID {
				p.putSlots = append(p.putSlots, slotWrite{key, uint16(i + 1), id, f.ID})
			}
		}
		if !exists || old.ID != f.ID || old.Flags != f.Flags || old.AffinityTimeout != f.AffinityTimeout || len(old.Slots) != len(f.Slots) {
			p.putServices = append(p.putServices, f)
		}
		p.planRanges(old, f, exists && old.ID == f.ID)
		if exists && old.ID != f.ID && !revnat[old.ID] {
			p.planRanges(old, LBFrontend{}, true)
		}
		for i := len(f.Slots); i < len(old.Slots); i++ {
			p.delSlots = append(p.delSlots, slotWrite{key: key, slot: uint16(i + 1)})
		}
		// A table is known to be in place only if we wrote it (a dumped
		// state says a table exists, not what it holds).
		sameTable := exists && old.ID == f.ID && old.HasMaglev && old.Maglev != nil && slices.Equal(old.Maglev, f.Maglev)
		switch {
		case f.Maglev != nil && !sameTable:
			p.putMaglev = append(p.putMaglev, f)
		case f.Maglev == nil && exists && old.ID == f.ID && old.HasMaglev:
			p.delMaglev = append(p.delMaglev, f.ID)
		}
	}
	for key, f := range have.Frontends {
		if _, ok := want.Frontends[key]; ok {
			continue
		}
		p.delServices = append(p.delServices, f)
		for i := range f.Slots {
			p.delSlots = append(p.delSlots, slotWrite{key: key, slot: uint16(i + 1)})
		}
		if !revnat[f.ID] && f.ID != 0 {
			p.planRanges(f, LBFrontend{}, true)
			p.delRevNat = append(p.delRevNat, f.ID)
			if f.HasMaglev {
				p.delMaglev = append(p.delMaglev, f.ID)
			}
		}
	}
	return p
}

// planRanges diffs a frontend's source ranges. Ranges are keyed by frontend
// ID: when the ID changed, the old ID's ranges go with the old ID.
func (p *LBPlan) planRanges(old, f LBFrontend, sameID bool) {
	have := map[netip.Prefix]bool{}
	if sameID {
		for _, r := range old.SourceRanges {
			have[r] = true
		}
	}
	want := map[netip.Prefix]bool{}
	for _, r := range f.SourceRanges {
		want[r] = true
		if !have[r] {
			p.putRanges = append(p.putRanges, srcRange{f.ID, r})
		}
	}
	for r := range have {
		if !want[r] {
			p.delRanges = append(p.delRanges, srcRange{old.ID, r})
		}
	}
}

// ApplyLB carries out the plan: backends, reverse NAT and slots first, then
// the service entries that make them reachable; removals in the reverse
// order. A failed step stops the plan; the next resync retries from what
// the maps then hold.
func (m *Maps) ApplyLB(p *LBPlan) error {
	bk := make([]uint32, 0, len(p.putBackends))
	bv := make([]bpfobj.EndpointSlLbBackend, 0, len(p.putBackends))
	for _, b := range p.putBackends {
		v := bpfobj.EndpointSlLbBackend{Port: raw.Htons(b.Port), Proto: b.Proto}
		v.Addr.Addr6 = raw.AddrTo(b.Addr)
		if b.Terminating {
			v.State = uint8(bpfobj.EndpointSlLbBackendStateSL_LB_BACKEND_TERMINATING)
		}
		if b.Local {
			v.Flags |= uint8(bpfobj.EndpointSlLbBackendFlagSL_LB_BACKEND_F_LOCAL)
		}
		bk, bv = append(bk, b.ID), append(bv, v)
	}
	if err := batchUpdate(m.LBBackends, bk, bv); err != nil {
		return fmt.Errorf("write backends: %w", err)
	}
	rk := make([]uint32, 0, len(p.putRevNat))
	rv := make([]bpfobj.EndpointSlLbVip, 0, len(p.putRevNat))
	for _, f := range p.putRevNat {
		v := bpfobj.EndpointSlLbVip{Port: raw.Htons(f.Key.Port)}
		v.Addr.Addr6 = raw.AddrTo(f.Key.Addr)
		rk, rv = append(rk, f.ID), append(rv, v)
	}
	if err := batchUpdate(m.LBRevNat, rk, rv); err != nil {
		return fmt.Errorf("write reverse NAT: %w", err)
	}
	if err := m.writeSlots(p.putSlots); err != nil {
		return fmt.Errorf("write backend slots: %w", err)
	}
	// Source ranges before the flag that makes them checked; a range that
	// goes away is deleted after its frontend no longer lists it.
	if err := m.writeRanges(p.putRanges, true); err != nil {
		return fmt.Errorf("write loadBalancerSourceRanges: %w", err)
	}
	// A frontend whose Maglev table cannot be written still serves, with
	// random selection, and the error is reported.
	var tableErrs []error
	noTable := map[uint32]bool{}
	for _, f := range p.putMaglev {
		if err := m.writeMaglev(f.ID, f.Maglev); err != nil {
			tableErrs = append(tableErrs, fmt.Errorf("write Maglev table of %s (served with random selection meanwhile): %w", f.Key, err))
			noTable[f.ID] = true
		}
	}
	services := p.putServices
	if len(noTable) > 0 {
		services = make([]LBFrontend, len(p.putServices))
		for i, f := range p.putServices {
			if noTable[f.ID] {
				f.Flags &^= LBFlagMaglev
			}
			services[i] = f
		}
	}
	if err := m.writeServices(services); err != nil {
		return fmt.Errorf("write frontends: %w", err)
	}
	// Removals: frontends first (no new lookups), then what they referenced.
	dk := make([]bpfobj.EndpointSlLbKey, 0, len(p.delServices))
	for _, f := range p.delServices {
		dk = append(dk, f.Key.raw(0))
	}
	if err := batchDelete(m.LBSvc, dk); err != nil {
		return fmt.Errorf("delete frontends: %w", err)
	}
	sk := make([]bpfobj.EndpointSlLbKey, 0, len(p.delSlots))
	for _, s := range p.delSlots {
		sk = append(sk, s.key.raw(s.slot))
	}
	if err := batchDelete(m.LBSvc, sk); err != nil {
		return fmt.Errorf("delete backend slots: %w", err)
	}
	if err := m.writeRanges(p.delRanges, false); err != nil {
		return fmt.Errorf("delete loadBalancerSourceRanges: %w", err)
	}
	if err := batchDelete(m.LBRevNat, p.delRevNat); err != nil {
		return fmt.Errorf("delete reverse NAT: %w", err)
	}
	if err := batchDelete(m.LBMaglev, p.delMaglev); err != nil {
		return fmt.Errorf("delete Maglev tables: %w", err)
	}
	if err := batchDelete(m.LBBackends, p.delBackends); err != nil {
		return fmt.Errorf("delete backends: %w", err)
	}
	return errors.Join(tableErrs...)
}

// writeMaglev builds a complete new table and swaps it in with one update
// of the outer map: lookups see the old table or the new one.
func (m *Maps) writeMaglev(id uint32, table []uint32) error {
	if m.maglevInner == nil {
		return errors.New("maps opened without a loaded datapath cannot write Maglev tables")
	}
	if uint32(len(table)) != m.maglevInner.MaxEntries {
		return fmt.Errorf("table has %d entries, the datapath expects %d (--maglev-table-size)", len(table), m.maglevInner.MaxEntries)
	}
	inner, err := ebpf.NewMap(m.maglevInner)
	if err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	defer inner.Close()
	keys := make([]uint32, len(table))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if err := batchUpdate(inner, keys, table); err != nil {
		return err
	}
	if err := m.LBMaglev.Put(id, inner); err != nil {
		return mapErr(m.LBMaglev, err)
	}
	return nil
}

// writeRanges puts or deletes source range entries. LPM tries have no
// batch operations: one syscall per entry (ranges are few per frontend).
func (m *Maps) writeRanges(rs []srcRange, put bool) error {
	if len(rs) > 0 && m.LBSrcRange == nil {
		return errors.New("sl_lb_src_range is not open")
	}
	for _, r := range rs {
		k := r.raw()
		var err error
		if put {
			err = m.LBSrcRange.Put(&k, uint8(1))
		} else if err = m.LBSrcRange.Delete(&k); errors.Is(err, ebpf.ErrKeyNotExist) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("%s of frontend %d: %w", r.prefix, r.svc, mapErr(m.LBSrcRange, err))
		}
	}
	return nil
}

func (m *Maps) writeSlots(ws []slotWrite) error {
	keys := make([]bpfobj.EndpointSlLbKey, 0, len(ws))
	vals := make([]bpfobj.EndpointSlLbEntry, 0, len(ws))
	for _, w := range ws {
		keys = append(keys, w.key.raw(w.slot))
		vals = append(vals, bpfobj.EndpointSlLbEntry{BackendId: w.backend, SvcId: w.svc})
	}
	return batchUpdate(m.LBSvc, keys, vals)
}

func (m *Maps) writeServices(fs []LBFrontend) error {
	keys := make([]bpfobj.EndpointSlLbKey, 0, len(fs))
	vals := make([]bpfobj.EndpointSlLbEntry, 0, len(fs))
	for _, f := range fs {
		keys = append(keys, f.Key.raw(0))
		vals = append(vals, bpfobj.EndpointSlLbEntry{SvcId: f.ID, Count: uint16(len(f.Slots)), Flags: f.Flags, AffinityTimeout: f.AffinityTimeout})
	}
	return batchUpdate(m.LBSvc, keys, vals)
}

// DeleteCTForBackends removes every CT entry (both scopes) of connections
// to the given backends: they are gone, and their clients must see that
// rather than send into a void.
func (m *Maps) DeleteCTForBackends(ids []uint32) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	gone := map[uint32]bool{}
	for _, id := range ids {
		gone[id] = true
	}
	var (
		k    bpfobj.EndpointSlCtKey
		v    bpfobj.EndpointSlCtEntry
		dead []bpfobj.EndpointSlCtKey
	)
	it := m.CT.Iterate()
	for it.Next(&k, &v) {
		if v.BackendId != 0 && gone[v.BackendId] {
			dead = append(dead, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("iterate conntrack: %w", err)
	}
	n := 0
	for i := range dead {
		if m.CT.Delete(&dead[i]) == nil {
			n++
		}
	}
	return n, nil
}
