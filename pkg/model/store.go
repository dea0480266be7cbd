package model

import (
	"fmt"
	"sync"
)

// Store holds the current model and tells subscribers when it changes. It is
// safe for concurrent use.
//
// Objects are not copied: an object passed to Apply becomes owned by the
// store and must never be modified again, by the producer or by consumers
// reading it from a snapshot. The store itself is copy-on-write: Apply builds
// a new State and swaps it in, so a snapshot once taken never changes.
type Store struct {
	mu sync.Mutex
	// base is what the source applied; state, the snapshot consumers
	// read, is base with the pod address overlay (see SetPodAddrs).
	base    *State
	state   *State
	overlay map[NamespacedName]PodAddrs
	subs    map[chan struct{}]struct{}
}

// NewStore returns an empty store at revision 0.
func NewStore() *Store {
	return &Store{base: &State{}, state: &State{}, overlay: map[NamespacedName]PodAddrs{}, subs: make(map[chan struct{}]struct{})}
}

// Apply applies changes in order and returns the resulting revision. The
// revision is bumped, and subscribers notified, only if some change had an
// effect: upserting an object equal to the stored one and deleting a missing
// one are no-ops. Invalid changes (nil object, unknown op) are rejected as a
// whole before anything is applied.
func (s *Store) Apply(changes []Change) (uint64, error) {
	for i, c := range changes {
		if c.Object == nil || isNilObject(c.Object) {
			return 0, fmt.Errorf("change %d: nil object", i)
		}
		if c.Op != OpUpsert && c.Op != OpDelete {
			return 0, fmt.Errorf("change %d (%s): invalid op %s", i, c.Object.Key(), c.Op)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var next *State
	for _, c := range changes {
		k := c.Object.Key()
		cur, exists := s.base.Get(k)
		if next != nil {
			cur, exists = next.Get(k)
		}
		switch c.Op {
		case OpUpsert:
			if exists && Equal(cur, c.Object) {
				continue
			}
			if next == nil {
				next = s.base.Clone()
			}
			next.Upsert(c.Object)
		case OpDelete:
			if !exists {
				continue
			}
			if next == nil {
				next = s.base.Clone()
			}
			next.Delete(k)
		}
	}
	if next == nil {
		return s.state.Revision, nil
	}
	s.base = next
	s.publishLocked()
	return s.state.Revision, nil
}

// publishLocked makes base with the overlay the next revision's snapshot
// and notifies the subscribers.
func (s *Store) publishLocked() {
	s.pruneOverlayLocked()
	next := s.overlaidLocked()
	next.Revision = s.state.Revision + 1
	s.state = next
	for ch := range s.subs {
		// Non-blocking: a pending notification already tells the subscriber
		// to look at the latest snapshot, so bursts coalesce into one.
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func isNilObject(o Object) bool {
	switch o := o.(type) {
	case *Namespace:
		return o == nil
	case *Node:
		return o == nil
	case *Pod:
		return o == nil
	case *Service:
		return o == nil
	case *EndpointSlice:
		return o == nil
	case *NetworkPolicy:
		return o == nil
	case *L7Policy:
		return o == nil
	case *ClusterNetworkPolicy:
		return o == nil
	}
	return false
}

// Snapshot returns the current state. It is shared and must not be modified;
// later Applies never change it.
func (s *Store) Snapshot() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Revision returns the current revision.
func (s *Store) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Revision
}

// Subscribe returns a channel that receives a value after every Apply that
// changed the model. Notifications coalesce (the channel has capacity 1), so
// a receiver should take a fresh Snapshot after each one rather than count
// them. The channel is never closed; call Unsubscribe when done.
func (s *Store) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[ch] = struct{}{}
	return ch
}

// Unsubscribe stops notifications on a channel returned by Subscribe.
func (s *Store) Unsubscribe(ch <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.subs {
		if (<-chan struct{})(c) == ch {
			delete(s.subs, c)
		}
	}
}
