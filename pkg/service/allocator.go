package service

import (
	"fmt"
	"maps"
	"slices"
)

// Allocator assigns the stable IDs that frontends and backends carry in the
// datapath. A key (address, port, protocol) keeps its ID for as long as it
// appears in consecutive computations; a key that disappears releases its
// ID, which becomes reusable from the next computation on, never in the one
// that released it: the reconciler applying that computation may still have
// the old entry in a map, and an ID that changed meaning within one diff
// could pair an old connection with a new backend. New keys get the lowest
// free IDs, in key order, so allocation is deterministic. IDs start at 1; 0
// means none.
//
// Because it holds the ID history, the Allocator also keeps the previous
// computation's Maglev tables (a few hundred microseconds each to build) so
// that unchanged ones are reused: a table depends only on its backends'
// names, the table size and the seed, and backends present in consecutive
// computations keep their IDs. Only the immediately previous computation's
// tables are kept, which is what makes that reasoning hold.
//
// An Allocator is not safe for concurrent use; Compute updates it.
type Allocator struct {
	frontends idSpace[FrontendKey]
	backends  idSpace[BackendKey]
	maglev    map[maglevKey][]uint32
}

// maglevKey identifies a Maglev table: names are the active backends'
// BackendKey strings in key order, comma-separated.
type maglevKey struct {
	names string
	m     uint32
	seed  string
}

// NewAllocator returns an allocator that keeps the given IDs, e.g. read back
// from pinned maps after a restart. Either map may be nil. It fails on ID 0,
// an invalid address, or two keys with one ID.
func NewAllocator(existingFrontends map[FrontendKey]uint32, existingBackends map[BackendKey]uint32) (*Allocator, error) {
	a := &Allocator{}
	var err error
	if a.frontends, err = newIDSpace(existingFrontends, "frontend"); err != nil {
		return nil, err
	}
	if a.backends, err = newIDSpace(existingBackends, "backend"); err != nil {
		return nil, err
	}
	return a, nil
}

// FrontendIDs returns a copy of the current frontend IDs.
func (a *Allocator) FrontendIDs() map[FrontendKey]uint32 { return maps.Clone(a.frontends.ids) }

// BackendIDs returns a copy of the current backend IDs.
func (a *Allocator) BackendIDs() map[BackendKey]uint32 { return maps.Clone(a.backends.ids) }

type idSpace[K interface {
	comparable
	fmt.Stringer
}] struct {
	ids map[K]uint32
	// free are the IDs below next that no key holds, for update; valid
	// says they match ids (assign, which does not use them, clears it).
	free  idHeap
	next  uint32
	valid bool
}

func newIDSpace[K interface {
	comparable
	fmt.Stringer
}](existing map[K]uint32, what string) (idSpace[K], error) {
	s := idSpace[K]{ids: make(map[K]uint32, len(existing))}
	owner := make(map[uint32]K, len(existing))
	// Sorted so that the error names the same pair every time.
	keys := slices.SortedFunc(maps.Keys(existing), func(a, b K) int { return cmpString(a.String(), b.String()) })
	for _, k := range keys {
		id := existing[k]
		if id == 0 {
			return s, fmt.Errorf("existing %s %s has reserved ID 0", what, k)
		}
		if o, dup := owner[id]; dup {
			return s, fmt.Errorf("existing %ss %s and %s share ID %d", what, o, k, id)
		}
		owner[id] = k
		s.ids[k] = id
	}
	return s, nil
}

// assign gives every key in need (sorted, unique) an ID and forgets the
// keys not in need. Forgotten IDs stay taken during this call.
func (s *idSpace[K]) assign(need []K) map[K]uint32 {
	s.assignOrdered(need)
	return s.ids
}

// assignOrdered is assign returning the IDs of need in order.
func (s *idSpace[K]) assignOrdered(need []K) []uint32 {
	taken := slices.Sorted(maps.Values(s.ids))
	out := make(map[K]uint32, len(need))
	ids := make([]uint32, len(need))
	cand, ti := uint32(1), 0
	for i, k := range need {
		if id, ok := s.ids[k]; ok {
			out[k] = id
			ids[i] = id
			continue
		}
		// Lowest ID not taken: taken is sorted, cand only grows.
		for ti < len(taken) && taken[ti] <= cand {
			if taken[ti] == cand {
				cand++
			}
			ti++
		}
		if cand == 0 {
			// 2^32-1 live objects cannot fit any BPF map; unreachable.
			panic("service: ID space exhausted")
		}
		out[k] = cand
		ids[i] = cand
		cand++
	}
	s.ids = out
	s.valid = false
	return ids
}

// update is assign(current keys + added - removed) for a caller that
// knows the difference, at a cost proportional to it: added keys (sorted,
// none held) get the lowest IDs free before the call, in order, and removed
// keys (all held) release theirs for the next call. It returns the IDs of
// added, in order.
func (s *idSpace[K]) update(added, removed []K) []uint32 {
	if !s.valid {
		s.rebuildFree()
	}
	if s.ids == nil {
		s.ids = make(map[K]uint32, len(added))
	}
	out := make([]uint32, len(added))
	for i, k := range added {
		var id uint32
		if len(s.free) > 0 {
			id = s.free.pop()
		} else {
			if s.next == 0 {
				panic("service: ID space exhausted") // as in assign
			}
			id = s.next
			s.next++
		}
		s.ids[k] = id
		out[i] = id
	}
	// Released only now: an ID never changes meaning within one call.
	for _, k := range removed {
		s.free.push(s.ids[k])
		delete(s.ids, k)
	}
	return out
}

// rebuildFree finds the gaps in the held IDs.
func (s *idSpace[K]) rebuildFree() {
	held := slices.Sorted(maps.Values(s.ids))
	s.free = s.free[:0]
	next := uint32(1)
	for _, id := range held {
		for ; next < id; next++ {
			s.free = append(s.free, next) // ascending: already a heap
		}
		next = id + 1
	}
	s.next, s.valid = next, true
}

// idHeap is a min-heap of free IDs.
type idHeap []uint32

func (h *idHeap) push(id uint32) {
	*h = append(*h, id)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *idHeap) pop() uint32 {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && a[l] < a[m] {
			m = l
		}
		if r := l + 1; r < n && a[r] < a[m] {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}
