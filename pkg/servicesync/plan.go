package servicesync

import (
	"net/netip"
	"slices"

	"github.com/sluice-net/sluice/pkg/datapath"
)

// Plan diffs the desired LB map contents against what the maps hold: the
// entries to write and to delete, which datapath.Maps.ApplyLB writes in a
// safe order. Pure: it reads neither the maps nor the clock. The backends
// it deletes (DelBackends) are the removed ones, whose connections the
// reconciler then cleans out of connection tracking.
func Plan(have, want datapath.LBState) *datapath.LBWrites {
	w := &datapath.LBWrites{}
	for id, b := range want.Backends {
		if old, ok := have.Backends[id]; !ok || old != b {
			w.PutBackends = append(w.PutBackends, b)
		}
	}
	for id := range have.Backends {
		if _, ok := want.Backends[id]; !ok {
			w.DelBackends = append(w.DelBackends, id)
		}
	}
	// Frontend IDs still in use: a reverse NAT entry, source ranges and a
	// Maglev table are keyed by ID and stay while any frontend has it.
	revnat := make(map[uint32]bool, len(want.Frontends))
	for _, f := range want.Frontends {
		revnat[f.ID] = true
	}
	for key, f := range want.Frontends {
		old, exists := have.Frontends[key]
		planFrontend(w, key, old, f, exists, revnat)
	}
	for key, f := range have.Frontends {
		if _, ok := want.Frontends[key]; ok {
			continue
		}
		w.DelFrontends = append(w.DelFrontends, key)
		for i := range f.Slots {
			w.DelSlots = append(w.DelSlots, datapath.LBSlot{Key: key, Slot: uint16(i + 1)})
		}
		if !revnat[f.ID] && f.ID != 0 {
			planRanges(w, f, datapath.LBFrontend{}, true)
			w.DelRevNat = append(w.DelRevNat, f.ID)
			if f.HasMaglev {
				w.DelMaglev = append(w.DelMaglev, f.ID)
			}
		}
	}
	return w
}

// planFrontend diffs one wanted frontend f against what its key holds (old,
// if exists).
func planFrontend(w *datapath.LBWrites, key datapath.LBFrontendKey, old, f datapath.LBFrontend, exists bool, revnat map[uint32]bool) {
	sameID := exists && old.ID == f.ID
	if !sameID {
		w.PutRevNat = append(w.PutRevNat, f)
	}
	for i, id := range f.Slots {
		if i >= len(old.Slots) || old.Slots[i] != id || old.ID != f.ID {
			w.PutSlots = append(w.PutSlots, datapath.LBSlot{Key: key, Slot: uint16(i + 1), Backend: id, Frontend: f.ID})
		}
	}
	if !sameID || old.Flags != f.Flags || old.AffinityTimeout != f.AffinityTimeout || len(old.Slots) != len(f.Slots) {
		w.PutFrontends = append(w.PutFrontends, f)
	}
	planRanges(w, old, f, sameID)
	if exists && old.ID != f.ID && !revnat[old.ID] {
		planRanges(w, old, datapath.LBFrontend{}, true)
	}
	for i := len(f.Slots); i < len(old.Slots); i++ {
		w.DelSlots = append(w.DelSlots, datapath.LBSlot{Key: key, Slot: uint16(i + 1)})
	}
	// A table is known to be in place only if we wrote it (a dumped
	// state says a table exists, not what it holds).
	sameTable := sameID && old.HasMaglev && old.Maglev != nil && slices.Equal(old.Maglev, f.Maglev)
	switch {
	case f.Maglev != nil && !sameTable:
		w.PutMaglev = append(w.PutMaglev, f)
	case f.Maglev == nil && sameID && old.HasMaglev:
		w.DelMaglev = append(w.DelMaglev, f.ID)
	}
}

// planRanges diffs a frontend's source ranges. Ranges are keyed by frontend
// ID: when the ID changed, the old ID's ranges go with the old ID.
func planRanges(w *datapath.LBWrites, old, f datapath.LBFrontend, sameID bool) {
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
			w.PutSourceRanges = append(w.PutSourceRanges, datapath.LBSourceRange{Frontend: f.ID, Prefix: r})
		}
	}
	for r := range have {
		if !want[r] {
			w.DelSourceRanges = append(w.DelSourceRanges, datapath.LBSourceRange{Frontend: old.ID, Prefix: r})
		}
	}
}
