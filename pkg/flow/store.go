package flow

import (
	"context"
	"fmt"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Event is one entry of the Store: a flow, or a notice that events were
// lost before they became flows. Exactly one field is set. Entries are
// shared between readers and must not be modified.
type Event struct {
	Flow *flowpb.Flow
	Lost *flowpb.LostEvent
}

// Time is the flow's time, or the time a loss was noticed.
func (e Event) Time() time.Time {
	if e.Flow != nil {
		return e.Flow.GetTime().AsTime()
	}
	return e.Lost.GetLast().AsTime()
}

// rateWindow is the period flows per second are averaged over, as in
// Hubble's ServerStatus (one minute).
const rateWindow = 60

// maxBatch bounds how many entries one Follower.Next copies out under the
// store's lock, so a follower far behind does not hold up the writer.
const maxBatch = 1024

// Store keeps the most recent flows in a ring of fixed capacity. The
// writer (the agent's event reader) never waits for readers: a follower
// that falls more than the capacity behind loses the entries it did not
// read, and is told how many.
//
// Every entry written gets the next sequence number; the ring holds the
// entries numbered [next-len, next).
type Store struct {
	mu        sync.Mutex
	ring      []Event
	next      uint64        // sequence number of the next entry
	lostInBuf int           // lost-event notices among the stored entries
	wake      chan struct{} // closed on the next write; nil if nobody waits
	seen      uint64        // flows ever added
	lostIn    uint64        // events the datapath reported lost
	lostOut   uint64        // entries followers missed (overwritten unread)
	rate      [rateWindow]rateBucket
	started   time.Time
	now       func() time.Time
}

type rateBucket struct {
	sec int64 // unix second the count belongs to
	n   uint64
}

// NewStore returns an empty store for capacity entries.
func NewStore(capacity int) (*Store, error) {
	if capacity < 1 {
		return nil, fmt.Errorf("flow store capacity %d: must be at least 1", capacity)
	}
	s := &Store{ring: make([]Event, capacity), now: time.Now}
	s.started = s.now()
	return s, nil
}

// Add stores a flow. The store keeps the pointer: the caller must not
// modify the flow afterwards.
func (s *Store) Add(f *flowpb.Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen++
	sec := s.now().Unix()
	b := &s.rate[uint64(sec)%rateWindow]
	if b.sec != sec {
		*b = rateBucket{sec: sec}
	}
	b.n++
	s.push(Event{Flow: f})
}

// AddLost records that n events were lost before they could be read, for
// example because the datapath's ring buffer was full (source
// PERF_EVENT_RING_BUFFER, which the agent reads from its events-lost
// counter). The notice is stored in order with the flows, so readers see
// where the gap is.
func (s *Store) AddLost(source flowpb.LostEventSource, n uint64) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lostIn += n
	now := timestamppb.New(s.now())
	s.push(Event{Lost: &flowpb.LostEvent{Source: source, NumEventsLost: n, First: now, Last: now}})
}

func (s *Store) push(e Event) {
	i := s.next % uint64(len(s.ring))
	if s.next >= uint64(len(s.ring)) && s.ring[i].Lost != nil {
		s.lostInBuf--
	}
	if e.Lost != nil {
		s.lostInBuf++
	}
	s.ring[i] = e
	s.next++
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

// oldest returns the sequence number of the oldest stored entry.
func (s *Store) oldest() uint64 {
	if s.next < uint64(len(s.ring)) {
		return 0
	}
	return s.next - uint64(len(s.ring))
}

// Snapshot returns the stored entries, oldest first, and the sequence
// number of the next entry: pass it to Follow to continue where the
// snapshot ends without gap or overlap.
func (s *Store) Snapshot() ([]Event, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyFrom(s.oldest(), int(s.next-s.oldest())), s.next
}

func (s *Store) copyFrom(seq uint64, n int) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = s.ring[(seq+uint64(i))%uint64(len(s.ring))]
	}
	return out
}

// Follow returns a follower that reads the entries from sequence number
// seq on (the second result of Snapshot, or Stats().Next to start with
// the next entry).
func (s *Store) Follow(seq uint64) *Follower {
	return &Follower{s: s, next: seq}
}

// Follower reads a Store's entries in order as they are written. It is
// not safe for concurrent use; a store has any number of followers.
type Follower struct {
	s    *Store
	next uint64
}

// Next blocks until entries after the last ones read exist, or ctx is
// done, and returns them oldest first (at most maxBatch at a time). lost
// counts the entries that were overwritten before this follower read
// them: the gap comes before the returned entries.
func (f *Follower) Next(ctx context.Context) (events []Event, lost uint64, err error) {
	s := f.s
	for {
		s.mu.Lock()
		if f.next < s.next {
			if o := s.oldest(); f.next < o {
				lost = o - f.next
				s.lostOut += lost
				f.next = o
			}
			n := min(int(s.next-f.next), maxBatch)
			events = s.copyFrom(f.next, n)
			f.next += uint64(n)
			s.mu.Unlock()
			return events, lost, nil
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Stats are the store's counters.
type Stats struct {
	// Flows is the number of flows stored; Capacity the number of entries
	// (flows and lost-event notices) the store holds at most.
	Flows    int
	Capacity int
	// Seen counts the flows ever added.
	Seen uint64
	// LostEvents counts the events reported lost through AddLost.
	LostEvents uint64
	// FollowersLost counts the entries followers missed because they
	// read too slowly, summed over followers.
	FollowersLost uint64
	// FlowsPerSecond is the rate of added flows over the last minute (or
	// since the store was made, if that is shorter).
	FlowsPerSecond float64
	// Next is the sequence number the next entry will have.
	Next uint64
	// Started is when the store was made.
	Started time.Time
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	sec := now.Unix()
	var n uint64
	for _, b := range s.rate {
		if b.sec > sec-rateWindow && b.sec <= sec {
			n += b.n
		}
	}
	window := min(now.Sub(s.started).Seconds(), rateWindow)
	window = max(window, 1)
	return Stats{
		Flows:          int(s.next-s.oldest()) - s.lostInBuf,
		Capacity:       len(s.ring),
		Seen:           s.seen,
		LostEvents:     s.lostIn,
		FollowersLost:  s.lostOut,
		FlowsPerSecond: float64(n) / window,
		Next:           s.next,
		Started:        s.started,
	}
}
