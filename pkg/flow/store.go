package flow

import (
	"context"
	"fmt"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Entry is one entry of the Store, copied out of it: a datapath record
// (its flow is built when read), a prebuilt flow (Add), or a notice that
// events were lost before they became flows. What entries refer to is
// shared between readers and must not be modified.
type Entry struct {
	rec  Record // a record when rec.conv is set
	flow *flowpb.Flow
	lost *flowpb.LostEvent
}

// IsFlow reports whether the entry is a flow (a record or a prebuilt
// flow), not a lost-events notice.
func (e *Entry) IsFlow() bool { return e.rec.conv != nil || e.flow != nil }

// Lost is the entry's lost-events notice, nil for a flow.
func (e *Entry) Lost() *flowpb.LostEvent { return e.lost }

// Flow returns the entry's flow, built now from a record (a new message
// at every call, sharing the record's endpoints, service and policy), nil
// for a lost-events notice.
func (e *Entry) Flow() *flowpb.Flow {
	switch {
	case e.flow != nil:
		return e.flow
	case e.rec.conv != nil:
		return e.rec.Build()
	}
	return nil
}

// AppendResponse appends the wire encoding of the GetFlowsResponse of a
// record's flow (Record.AppendResponse); ok is false for other entries.
func (e *Entry) AppendResponse(out []byte, scratch *[]byte) ([]byte, bool) {
	if e.rec.conv == nil {
		return out, false
	}
	return e.rec.AppendResponse(out, scratch), true
}

// Time is the flow's time, or the time a loss was noticed.
func (e *Entry) Time() time.Time {
	switch {
	case e.flow != nil:
		return e.flow.GetTime().AsTime()
	case e.rec.conv != nil:
		return e.rec.Time()
	}
	return e.lost.GetLast().AsTime()
}

// View fills v with the entry's flow facts, for filters, and reports
// whether it is a flow.
func (e *Entry) View(v *View) bool {
	switch {
	case e.flow != nil:
		*v = View{flow: e.flow}
	case e.rec.conv != nil:
		v.setRecord(&e.rec)
	default:
		return false
	}
	return true
}

// rateWindow is the period flows per second are averaged over, as in
// Hubble's ServerStatus (one minute).
const rateWindow = 60

// MaxBatch bounds how many entries one Follower.Next copies out under the
// store's lock, so a follower far behind does not hold up the writer.
const MaxBatch = 1024

// Store keeps the most recent flows in a ring of fixed capacity, made
// when the store is: datapath records are copied into it as they are,
// with references to their resolved ends, so adding one allocates
// nothing. The writer (the agent's event reader) never waits for
// readers: a follower that falls more than the capacity behind loses the
// entries it did not read, and is told how many.
//
// Every entry written gets the next sequence number; the ring holds the
// entries numbered [next-len, next).
type Store struct {
	mu        sync.Mutex
	ring      []Entry
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
	s := &Store{ring: make([]Entry, capacity), now: time.Now}
	s.started = s.now()
	return s, nil
}

// AddRecord stores a datapath record (Converter.Record), copying it.
func (s *Store) AddRecord(r *Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.slot(false)
	e.rec, e.flow, e.lost = *r, nil, nil
	s.countFlow()
	s.written()
}

// Add stores a prebuilt flow. The store keeps the pointer: the caller
// must not modify the flow afterwards.
func (s *Store) Add(f *flowpb.Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.slot(false)
	*e = Entry{flow: f}
	s.countFlow()
	s.written()
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
	e := s.slot(true)
	*e = Entry{lost: &flowpb.LostEvent{Source: source, NumEventsLost: n, First: now, Last: now}}
	s.written()
}

// slot returns the ring slot of the next entry, accounting for the
// notice it may overwrite.
func (s *Store) slot(lost bool) *Entry {
	e := &s.ring[s.next%uint64(len(s.ring))]
	if s.next >= uint64(len(s.ring)) && e.lost != nil {
		s.lostInBuf--
	}
	if lost {
		s.lostInBuf++
	}
	return e
}

func (s *Store) countFlow() {
	s.seen++
	sec := s.now().Unix()
	b := &s.rate[uint64(sec)%rateWindow]
	if b.sec != sec {
		*b = rateBucket{sec: sec}
	}
	b.n++
}

// written completes a write: the entry is numbered and waiting followers
// wake.
func (s *Store) written() {
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

// Range returns the sequence numbers of the stored entries: [oldest,
// next). Pass next to Follow to continue after them.
func (s *Store) Range() (oldest, next uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oldest(), s.next
}

// Read copies stored entries into buf, from sequence number seq on (or
// the oldest still stored, if seq was overwritten), and returns the
// sequence number of the first one copied and how many were. It copies
// none once seq reaches the next entry.
func (s *Store) Read(seq uint64, buf []Entry) (first uint64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first = max(seq, s.oldest())
	if first >= s.next {
		return first, 0
	}
	n = min(len(buf), int(s.next-first))
	s.copyFrom(first, buf[:n])
	return first, n
}

// Snapshot returns every stored entry, oldest first, and the sequence
// number of the next entry: pass it to Follow to continue where the
// snapshot ends without gap or overlap. It copies the whole ring: readers
// of a large store use Read.
func (s *Store) Snapshot() ([]Entry, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Entry, s.next-s.oldest())
	s.copyFrom(s.oldest(), out)
	return out, s.next
}

func (s *Store) copyFrom(seq uint64, out []Entry) {
	i := seq % uint64(len(s.ring))
	n := copy(out, s.ring[i:])
	copy(out[n:], s.ring)
}

// Follow returns a follower that reads the entries from sequence number
// seq on (Range's next, or Stats().Next, to start with the next entry).
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
// done, and copies them into buf, oldest first (at most len(buf), and at
// most MaxBatch). lost counts the entries that were overwritten before
// this follower read them: the gap comes before the returned entries.
func (f *Follower) Next(ctx context.Context, buf []Entry) (entries []Entry, lost uint64, err error) {
	s := f.s
	buf = buf[:min(len(buf), MaxBatch)]
	if len(buf) == 0 {
		return nil, 0, fmt.Errorf("follow the flow store: empty buffer")
	}
	for {
		s.mu.Lock()
		if f.next < s.next {
			if o := s.oldest(); f.next < o {
				lost = o - f.next
				s.lostOut += lost
				f.next = o
			}
			n := min(int(s.next-f.next), len(buf))
			s.copyFrom(f.next, buf[:n])
			f.next += uint64(n)
			s.mu.Unlock()
			return buf[:n], lost, nil
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
