package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/flow"
	"github.com/sluice-net/sluice/pkg/flow/enrich"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/observer"
	"github.com/sluice-net/sluice/pkg/rungroup"
)

// startFlows builds the flow pipeline: every event is resolved when it is
// read, with names as they are now, stored compact and served over
// Hubble's observer API.
func (a *Agent) startFlows(g *rungroup.Group) error {
	opts := a.opts
	fstore, err := flow.NewStore(opts.FlowBuffer)
	if err != nil {
		return fmt.Errorf("--flow-buffer: %w", err)
	}
	a.flows = &flowSink{store: fstore, conv: &flow.Converter{NodeName: opts.NodeName, Version: version, Enricher: a.newEnricher()},
		observe: a.metrics.ObserveFlow}
	hubble, err := observer.Start(observer.Config{
		SocketPath: opts.hubbleSocket(), SocketGroup: opts.SocketGroup, TCPAddress: opts.HubbleAddress,
		NodeName: opts.NodeName, Version: version,
	}, fstore, a.log.With("component", "observer"))
	if err != nil {
		return fmt.Errorf("hubble observer: %w", err)
	}
	g.AddStarted("hubble observer", func() { _ = hubble.Close() })
	reader, err := events.NewReader(a.dp.EventRing())
	if err != nil {
		return err
	}
	g.Add("event reader", func(context.Context) error { a.readEvents(reader); return nil }, func() { _ = reader.Close() })
	return nil
}

func (a *Agent) readEvents(r *events.Reader) {
	var rec events.Record // reused: reading an event allocates nothing
	for {
		err := r.ReadRecord(&rec)
		if errors.Is(err, events.ErrClosed) {
			return
		}
		if err != nil {
			a.log.Warn("read event", "error", err)
			continue
		}
		if a.flows != nil {
			a.flows.addRecord(&rec, r.Epoch())
		}
		if rec.Kind() == events.Drop && a.log.Enabled(context.Background(), slog.LevelDebug) {
			a.logDrop(rec.Event(r.Epoch()))
		}
	}
}

// eventsLost sums the datapath's count of events it could not emit (ring
// buffer full), over directions and reasons.
func eventsLost(cs []datapath.Counter) uint64 {
	var n uint64
	for _, c := range cs {
		if c.Metric == datapath.MetricEventsLost {
			n += c.Packets
		}
	}
	return n
}

// newEnricher resolves flow events through the agent's parts, as they
// are when the event is read.
func (a *Agent) newEnricher() *enrich.Enricher {
	return enrich.New(enrich.Lookups{NodeName: a.opts.NodeName, Model: a.store, Endpoints: a.eps,
		Identities: a.policy, Services: a.lb, Rules: a.policy, Cgroups: a.cgroups})
}

// recordEvent turns a connection the CT GC found expired into a flow,
// enriched once, in the flow store: the one place `sluice observe`,
// `sluice map` and Hubble clients read events from (readEvents stores the
// datapath's).
func (a *Agent) recordEvent(ev events.Event) {
	if a.flows != nil {
		a.flows.addEvent(&ev)
	}
	if ev.Type == events.Drop {
		a.logDrop(ev)
	}
}

func (a *Agent) logDrop(ev events.Event) {
	a.log.Debug("drop", "reason", ev.Reason.String(), "endpoint", ev.EndpointID, "src", ev.Src, "dst", ev.Dst, "proto", model.ProtocolOf(ev.Proto))
}

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
