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

func (r LBSourceRange) raw() bpfobj.EndpointSlLbSrcRangeKey {
	k := bpfobj.EndpointSlLbSrcRangeKey{Prefixlen: 32 + uint32(r.Prefix.Bits()), SvcId: htonl(r.Frontend)}
	k.Addr.Addr6 = raw.AddrTo(r.Prefix.Addr())
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
	r := bpfobj.EndpointSlLbKey{Port: raw.Htons(k.Port), Proto: k.Proto, Slot: slot, Family: lbFamily(k.Addr)}
	r.Addr.Addr6 = raw.AddrTo(k.Addr)
	return r
}

// lbFamily is the family byte of the LB maps for a: IPv4 is 0, the
// padding's value before IPv6 services, so that pinned maps keep their
// meaning across the upgrade.
func lbFamily(a netip.Addr) uint8 {
	if a.Is4() {
		return uint8(bpfobj.EndpointSlLbFamilySL_LB_FAMILY_IPV4)
	}
	return uint8(bpfobj.EndpointSlLbFamilySL_LB_FAMILY_IPV6)
}

// lbAddrFrom reads an LB map address of family f.
func lbAddrFrom(a [16]uint8, f uint8) netip.Addr {
	if f == uint8(bpfobj.EndpointSlLbFamilySL_LB_FAMILY_IPV6) {
		return raw.AddrFrom(a, unix.AF_INET6)
	}
	return raw.AddrFrom(a, unix.AF_INET)
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
		key := LBFrontendKey{Addr: lbAddrFrom(k.Addr.Addr6, k.Family), Port: raw.Ntohs(k.Port), Proto: k.Proto}
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
		st.Backends[id] = lbBackendFrom(id, &b)
	}
	if err := bit.Err(); err != nil {
		return st, fmt.Errorf("iterate sl_lb_backends: %w", err)
	}
	if m.LBSrcRange != nil {
		v6 := map[uint32]bool{}
		for k, f := range st.Frontends {
			v6[f.ID] = k.Addr.Is6()
		}
		ranges, err := m.dumpSrcRanges(v6)
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

// lbBackendFrom is backend entry id of sl_lb_backends.
func lbBackendFrom(id uint32, b *bpfobj.EndpointSlLbBackend) LBBackend {
	return LBBackend{ID: id, Addr: lbAddrFrom(b.Addr.Addr6, b.Family), Port: raw.Ntohs(b.Port), Proto: b.Proto,
		Terminating: b.State == uint8(bpfobj.EndpointSlLbBackendStateSL_LB_BACKEND_TERMINATING),
		Local:       b.Flags&uint8(bpfobj.EndpointSlLbBackendFlagSL_LB_BACKEND_F_LOCAL) != 0}
}

// dumpSrcRanges reads sl_lb_src_range back, by frontend ID, sorted. A
// frontend's ranges are of its own family (v6[id]): the key has none.
func (m *Maps) dumpSrcRanges(v6 map[uint32]bool) (map[uint32][]netip.Prefix, error) {
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
		family := uint8(unix.AF_INET)
		if v6[id] {
			family = unix.AF_INET6
		}
		p := netip.PrefixFrom(raw.AddrFrom(k.Addr.Addr6, family), int(k.Prefixlen-32))
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

// LBWrites are the entries to put into and delete from the LB maps, map by
// map. What to write is the service reconciler's diff (servicesync.Plan);
// ApplyLB writes them in an order in which no packet sees a half-written
// frontend.
type LBWrites struct {
	PutBackends []LBBackend
	// PutRevNat are frontends whose reverse NAT entry (ID → address and
	// port) is written.
	PutRevNat []LBFrontend
	PutSlots  []LBSlot
	// PutFrontends are frontends whose slot 0 (ID, flags, affinity and
	// slot count) is written: what makes the frontend reachable.
	PutFrontends    []LBFrontend
	PutMaglev       []LBFrontend // each frontend's Maglev table
	PutSourceRanges []LBSourceRange
	DelFrontends    []LBFrontendKey
	DelSlots        []LBSlot // Key and Slot only
	DelSourceRanges []LBSourceRange
	DelRevNat       []uint32 // frontend IDs
	DelMaglev       []uint32 // frontend IDs
	DelBackends     []uint32 // backend IDs
}

// LBSlot is one backend slot of a frontend in sl_lb_svc: slot N (from 1)
// holds the Nth backend taking new connections.
type LBSlot struct {
	Key      LBFrontendKey
	Slot     uint16
	Backend  uint32
	Frontend uint32 // the frontend's ID
}

// LBSourceRange is one loadBalancerSourceRanges prefix of a frontend, by
// the frontend's ID (sl_lb_src_range).
type LBSourceRange struct {
	Frontend uint32
	Prefix   netip.Prefix
}

// Empty reports whether there is nothing to write.
func (w *LBWrites) Empty() bool {
	return len(w.PutBackends)+len(w.PutRevNat)+len(w.PutSlots)+len(w.PutFrontends)+
		len(w.DelSlots)+len(w.DelFrontends)+len(w.DelRevNat)+len(w.DelBackends)+
		len(w.PutMaglev)+len(w.DelMaglev)+len(w.PutSourceRanges)+len(w.DelSourceRanges) == 0
}

// String summarises the writes for logs.
func (w *LBWrites) String() string {
	return fmt.Sprintf("+%d/-%d frontends, +%d/-%d slots, +%d/-%d backends, +%d/-%d maglev tables",
		len(w.PutFrontends), len(w.DelFrontends), len(w.PutSlots), len(w.DelSlots), len(w.PutBackends), len(w.DelBackends),
		len(w.PutMaglev), len(w.DelMaglev))
}

// ApplyLB writes w: backends, reverse NAT and slots first, then the
// frontend entries that make them reachable; removals in the reverse
// order. A failed step stops the writing; the next resync retries from
// what the maps then hold.
func (m *Maps) ApplyLB(w *LBWrites) error {
	tableErr, err := m.applyPuts(w)
	if err != nil {
		return err
	}
	if err := m.applyDeletes(w); err != nil {
		return err
	}
	return tableErr
}

// applyPuts writes what w puts. A Maglev table that cannot be written is
// not fatal: its error comes back separately, and its frontend is written
// without the Maglev flag.
func (m *Maps) applyPuts(w *LBWrites) (tableErr, err error) {
	bk := make([]uint32, 0, len(w.PutBackends))
	bv := make([]bpfobj.EndpointSlLbBackend, 0, len(w.PutBackends))
	for _, b := range w.PutBackends {
		v := bpfobj.EndpointSlLbBackend{Port: raw.Htons(b.Port), Proto: b.Proto, Family: lbFamily(b.Addr)}
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
		return nil, fmt.Errorf("write backends: %w", err)
	}
	rk := make([]uint32, 0, len(w.PutRevNat))
	rv := make([]bpfobj.EndpointSlLbVip, 0, len(w.PutRevNat))
	for _, f := range w.PutRevNat {
		v := bpfobj.EndpointSlLbVip{Port: raw.Htons(f.Key.Port)}
		v.Addr.Addr6 = raw.AddrTo(f.Key.Addr)
		rk, rv = append(rk, f.ID), append(rv, v)
	}
	if err := batchUpdate(m.LBRevNat, rk, rv); err != nil {
		return nil, fmt.Errorf("write reverse NAT: %w", err)
	}
	if err := m.writeSlots(w.PutSlots); err != nil {
		return nil, fmt.Errorf("write backend slots: %w", err)
	}
	// Source ranges before the flag that makes them checked; a range that
	// goes away is deleted after its frontend no longer lists it.
	if err := m.writeRanges(w.PutSourceRanges, true); err != nil {
		return nil, fmt.Errorf("write loadBalancerSourceRanges: %w", err)
	}
	// A frontend whose Maglev table cannot be written still serves, with
	// random selection, and the error is reported.
	var tableErrs []error
	noTable := map[uint32]bool{}
	for _, f := range w.PutMaglev {
		if err := m.writeMaglev(f.ID, f.Maglev); err != nil {
			tableErrs = append(tableErrs, fmt.Errorf("write Maglev table of %s (served with random selection meanwhile): %w", f.Key, err))
			noTable[f.ID] = true
		}
	}
	services := w.PutFrontends
	if len(noTable) > 0 {
		services = make([]LBFrontend, len(w.PutFrontends))
		for i, f := range w.PutFrontends {
			if noTable[f.ID] {
				f.Flags &^= LBFlagMaglev
			}
			services[i] = f
		}
	}
	if err := m.writeServices(services); err != nil {
		return nil, fmt.Errorf("write frontends: %w", err)
	}
	return errors.Join(tableErrs...), nil
}

// applyDeletes deletes what w deletes: frontends first (no new lookups),
// then what they referenced.
func (m *Maps) applyDeletes(w *LBWrites) error {
	dk := make([]bpfobj.EndpointSlLbKey, 0, len(w.DelFrontends))
	for _, k := range w.DelFrontends {
		dk = append(dk, k.raw(0))
	}
	if err := batchDelete(m.LBSvc, dk); err != nil {
		return fmt.Errorf("delete frontends: %w", err)
	}
	sk := make([]bpfobj.EndpointSlLbKey, 0, len(w.DelSlots))
	for _, s := range w.DelSlots {
		sk = append(sk, s.Key.raw(s.Slot))
	}
	if err := batchDelete(m.LBSvc, sk); err != nil {
		return fmt.Errorf("delete backend slots: %w", err)
	}
	if err := m.writeRanges(w.DelSourceRanges, false); err != nil {
		return fmt.Errorf("delete loadBalancerSourceRanges: %w", err)
	}
	if err := batchDelete(m.LBRevNat, w.DelRevNat); err != nil {
		return fmt.Errorf("delete reverse NAT: %w", err)
	}
	if err := batchDelete(m.LBMaglev, w.DelMaglev); err != nil {
		return fmt.Errorf("delete Maglev tables: %w", err)
	}
	if err := batchDelete(m.LBBackends, w.DelBackends); err != nil {
		return fmt.Errorf("delete backends: %w", err)
	}
	return nil
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
func (m *Maps) writeRanges(rs []LBSourceRange, put bool) error {
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
			return fmt.Errorf("%s of frontend %d: %w", r.Prefix, r.Frontend, mapErr(m.LBSrcRange, err))
		}
	}
	return nil
}

func (m *Maps) writeSlots(ss []LBSlot) error {
	keys := make([]bpfobj.EndpointSlLbKey, 0, len(ss))
	vals := make([]bpfobj.EndpointSlLbEntry, 0, len(ss))
	for _, s := range ss {
		keys = append(keys, s.Key.raw(s.Slot))
		vals = append(vals, bpfobj.EndpointSlLbEntry{BackendId: s.Backend, SvcId: s.Frontend})
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
