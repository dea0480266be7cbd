package agent

import (
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
)

// flowSink turns datapath events into flows for the Hubble observer: it
// resolves each record when it is read and stores it compact; flows are
// built when a client reads them.
type flowSink struct {
	store *flow.Store
	conv  *flow.Converter
	// observe, if set, counts every flow by event type and verdict (metrics).
	observe func(eventType, verdict string)

	mu       sync.Mutex
	lostSeen uint64
}

// addRecord stores a record read from the ring now; epoch maps its
// timestamp to wall time. It allocates nothing once the record's ends
// have been seen (the agent reads every event this way).
func (s *flowSink) addRecord(rec *events.Record, epoch time.Time) {
	r := s.conv.Record(rec, epoch)
	s.store.AddRecord(&r)
	if s.observe != nil {
		s.observe(rec.Kind().String(), r.Verdict().String())
	}
}

// addEvent stores an event the agent made itself (a CT GC expiry).
func (s *flowSink) addEvent(ev *events.Event) {
	r := s.conv.RecordEvent(ev)
	s.store.AddRecord(&r)
	if s.observe != nil {
		s.observe(ev.Type.String(), r.Verdict().String())
	}
}

// lost reports the kernel's lost-event count: its growth becomes lost
// notices in the flow stream.
func (s *flowSink) lost(total uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if total > s.lostSeen {
		s.store.AddLost(flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, total-s.lostSeen)
	}
	s.lostSeen = total
}
