package identity

import (
	"errors"
	"fmt"
	"slices"
)

// ErrExhausted is returned by Acquire when every allocatable ID is in use.
var ErrExhausted = errors.New("identity space exhausted")

// Allocator assigns IDs to label sets, reference-counted: each Acquire of a
// set takes a reference and each Release drops one; the ID is freed when the
// last reference goes.
//
// Freed IDs are not reused until the space wraps: the next new set gets the
// ID after the last one handed out, and only after MaxAllocated does the
// search start again at MinAllocated, skipping IDs in use. An ID that was
// just freed may still be in datapath maps (ipcache, policy entries, flows in
// flight) until the reconcilers catch up, and reusing it at once would give
// those entries to different pods. With 16M IDs the wrap takes many
// lifetimes of a cluster, by which time old entries are long gone.
//
// Allocation is deterministic: the same sequence of calls yields the same
// IDs. Snapshot and Restore carry the table and the next ID across restarts.
//
// An Allocator is not safe for concurrent use.
type Allocator struct {
	byKey    map[string]*allocation
	byID     map[ID]*allocation
	next     ID
	min, max ID // MinAllocated and MaxAllocated; smaller in tests
}

type allocation struct {
	id     ID
	labels Labels
	refs   int
}

// Allocation is one row of the allocator's table.
type Allocation struct {
	ID     ID     `json:"id"`
	Labels Labels `json:"labels"`
	// Refs is the number of references (pods) holding the ID; 0 for
	// reserved identities and for restored ones not yet acquired.
	Refs int `json:"refs"`
}

// NewAllocator returns an empty allocator.
func NewAllocator() *Allocator { return newAllocator(MinAllocated, MaxAllocated) }

func newAllocator(lo, hi ID) *Allocator {
	return &Allocator{byKey: map[string]*allocation{}, byID: map[ID]*allocation{}, next: lo, min: lo, max: hi}
}

// Acquire returns the ID of ls, allocating one if the set has none, and
// takes a reference. ls must be canonical (NewLabels, Subject.Labels),
// non-empty, and must not contain reserved labels.
func (a *Allocator) Acquire(ls Labels) (ID, error) {
	if err := checkAllocatable(ls); err != nil {
		return Unknown, err
	}
	k := ls.key()
	if e, ok := a.byKey[k]; ok {
		e.refs++
		return e.id, nil
	}
	id, err := a.free()
	if err != nil {
		return Unknown, fmt.Errorf("allocate identity for %s: %w", ls, err)
	}
	e := &allocation{id: id, labels: ls, refs: 1}
	a.byKey[k] = e
	a.byID[id] = e
	return id, nil
}

func checkAllocatable(ls Labels) error {
	if len(ls) == 0 {
		return errors.New("empty label set")
	}
	if !ls.canonical() {
		return fmt.Errorf("label set %s is not canonical (sorted, without duplicates)", ls)
	}
	for _, l := range ls {
		if l.Source == SourceReserved {
			return fmt.Errorf("label set %s contains reserved label %s", ls, l)
		}
	}
	return nil
}

// free returns the first unused ID from next on, wrapping once around the
// space, and advances next past it.
func (a *Allocator) free() (ID, error) {
	size := int(a.max - a.min + 1)
	if len(a.byID) >= size {
		return Unknown, ErrExhausted
	}
	for range size {
		id := a.next
		if a.next == a.max {
			a.next = a.min
		} else {
			a.next++
		}
		if _, used := a.byID[id]; !used {
			return id, nil
		}
	}
	return Unknown, ErrExhausted
}

// Release drops one reference to id and reports whether that freed it.
// Releasing an ID without references is a no-op that returns false.
func (a *Allocator) Release(id ID) bool {
	e, ok := a.byID[id]
	if !ok || e.refs == 0 {
		return false
	}
	e.refs--
	if e.refs > 0 {
		return false
	}
	delete(a.byID, id)
	delete(a.byKey, e.labels.key())
	return true
}

// Lookup returns the ID of ls without taking a reference.
func (a *Allocator) Lookup(ls Labels) (ID, bool) {
	e, ok := a.byKey[ls.key()]
	if !ok {
		return Unknown, false
	}
	return e.id, true
}

// Labels returns the labels of id, reserved identities included. The result
// must not be modified.
func (a *Allocator) Labels(id ID) (Labels, bool) {
	if l, ok := reservedLabels[id]; ok {
		return l, true
	}
	e, ok := a.byID[id]
	if !ok {
		return nil, false
	}
	return e.labels, true
}

// Refs returns the number of references held on id.
func (a *Allocator) Refs(id ID) int {
	if e, ok := a.byID[id]; ok {
		return e.refs
	}
	return 0
}

// Len returns the number of allocated IDs (reserved ones excluded).
func (a *Allocator) Len() int { return len(a.byID) }

// List returns the reserved identities followed by the allocated ones, by
// ID: what `sluice identity list` prints.
func (a *Allocator) List() []Allocation {
	out := make([]Allocation, 0, len(reservedLabels)+len(a.byID))
	for id, l := range reservedLabels {
		out = append(out, Allocation{ID: id, Labels: l})
	}
	for _, e := range a.byID {
		out = append(out, Allocation{ID: e.id, Labels: e.labels, Refs: e.refs})
	}
	slices.SortFunc(out, func(x, y Allocation) int { return int(x.ID) - int(y.ID) })
	return out
}

// Prune frees the restored IDs that nobody acquired and returns how many.
// Call it once the first full computation after Restore has taken its
// references: label sets that no longer exist then lose their IDs (which,
// as always, are not reused until the space wraps).
func (a *Allocator) Prune() int {
	n := 0
	for id, e := range a.byID {
		if e.refs == 0 {
			delete(a.byID, id)
			delete(a.byKey, e.labels.key())
			n++
		}
	}
	return n
}

// Snapshot is the allocator's table in a form to save, e.g. as JSON in the
// agent's state directory.
type Snapshot struct {
	// Next is where the search for a new ID starts.
	Next       ID              `json:"next"`
	Identities []SnapshotEntry `json:"identities"`
}

// SnapshotEntry is one saved allocation.
type SnapshotEntry struct {
	ID     ID     `json:"id"`
	Labels Labels `json:"labels"`
}

// Snapshot returns the table sorted by ID.
func (a *Allocator) Snapshot() Snapshot {
	s := Snapshot{Next: a.next, Identities: make([]SnapshotEntry, 0, len(a.byID))}
	for _, e := range a.byID {
		s.Identities = append(s.Identities, SnapshotEntry{ID: e.id, Labels: e.labels})
	}
	slices.SortFunc(s.Identities, func(x, y SnapshotEntry) int { return int(x.ID) - int(y.ID) })
	return s
}

// Restore replaces the table with a saved one. Restored IDs hold no
// references: the first Acquire of their label set takes them over, and
// Prune frees those never acquired. It fails, leaving the allocator
// unchanged, while references are held or when the snapshot is invalid (an
// ID outside MinAllocated..MaxAllocated, an ID or label set twice, an empty,
// unsorted or reserved label set).
func (a *Allocator) Restore(s Snapshot) error {
	for _, e := range a.byID {
		if e.refs > 0 {
			return fmt.Errorf("restore identities: identity %d is in use", e.id)
		}
	}
	next := s.Next
	if next == Unknown {
		next = a.min
	}
	if next < a.min || next > a.max {
		return fmt.Errorf("restore identities: next ID %d outside %d..%d", next, a.min, a.max)
	}
	byKey := make(map[string]*allocation, len(s.Identities))
	byID := make(map[ID]*allocation, len(s.Identities))
	for _, se := range s.Identities {
		if se.ID < a.min || se.ID > a.max {
			return fmt.Errorf("restore identities: ID %d (%s) outside %d..%d", se.ID, se.Labels, a.min, a.max)
		}
		if err := checkAllocatable(se.Labels); err != nil {
			return fmt.Errorf("restore identities: ID %d: %w", se.ID, err)
		}
		if _, dup := byID[se.ID]; dup {
			return fmt.Errorf("restore identities: ID %d appears twice", se.ID)
		}
		k := se.Labels.key()
		if other, dup := byKey[k]; dup {
			return fmt.Errorf("restore identities: IDs %d and %d have the same labels %s", other.id, se.ID, se.Labels)
		}
		e := &allocation{id: se.ID, labels: se.Labels}
		byKey[k] = e
		byID[se.ID] = e
	}
	a.byKey, a.byID, a.next = byKey, byID, next
	return nil
}
