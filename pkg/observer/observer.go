package observer

import (
	"context"
	"errors"
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/flow"
)

// Service implements Hubble's Observer gRPC service (GetFlows,
// ServerStatus, GetNodes) over a flow store, for one node. The other
// methods answer Unimplemented.
type Service struct {
	observerpb.UnimplementedObserverServer

	store    *flow.Store
	nodeName string
	version  string
	address  string
	started  time.Time
	// ctx ends follow streams when the server closes.
	ctx context.Context
	// encoded: the server's codec sends encodedResponses (Start), so
	// records are sent as flow.Entry.AppendResponse encodes them.
	encoded bool
}

// NewService returns the service for a store. nodeName and version are
// reported by ServerStatus and GetNodes; address is the node's address in
// GetNodes. Follow streams end when ctx is done.
func NewService(ctx context.Context, store *flow.Store, nodeName, version, address string) *Service {
	return &Service{store: store, nodeName: nodeName, version: version, address: address, started: time.Now(), ctx: ctx}
}

// ServerStatus reports the store's size and counters, as `hubble status`
// prints them. A node's server is its only node: 1 connected.
func (s *Service) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	st := s.store.Stats()
	return &observerpb.ServerStatusResponse{
		NumFlows:            uint64(st.Flows),
		MaxFlows:            uint64(st.Capacity),
		SeenFlows:           st.Seen,
		UptimeNs:            uint64(time.Since(s.started).Nanoseconds()),
		NumConnectedNodes:   wrapperspb.UInt32(1),
		NumUnavailableNodes: wrapperspb.UInt32(0),
		Version:             s.version,
		FlowsRate:           st.FlowsPerSecond,
	}, nil
}

// GetNodes lists this node, as `hubble list nodes` prints it.
func (s *Service) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	st := s.store.Stats()
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{{
		Name:      s.nodeName,
		Version:   s.version,
		Address:   s.address,
		State:     relaypb.NodeState_NODE_CONNECTED,
		Tls:       &observerpb.TLS{},
		UptimeNs:  uint64(time.Since(s.started).Nanoseconds()),
		NumFlows:  uint64(st.Flows),
		MaxFlows:  uint64(st.Capacity),
		SeenFlows: st.Seen,
	}}}, nil
}

// request is a validated GetFlows request.
type request struct {
	number       uint64
	first        bool
	follow       bool
	since, until time.Time // zero: unbounded
	filters      *Filters
	mask         fieldMask
}

func parseRequest(req *observerpb.GetFlowsRequest) (*request, error) {
	r := &request{number: req.GetNumber(), first: req.GetFirst(), follow: req.GetFollow()}
	if r.first && r.follow {
		return nil, errors.New("first cannot be combined with follow")
	}
	for _, t := range []struct {
		name string
		ts   *timestamppb.Timestamp
		out  *time.Time
	}{{"since", req.GetSince(), &r.since}, {"until", req.GetUntil(), &r.until}} {
		if t.ts == nil {
			continue
		}
		if err := t.ts.CheckValid(); err != nil {
			return nil, errors.New("invalid " + t.name + ": " + err.Error())
		}
		*t.out = t.ts.AsTime()
	}
	var err error
	if r.filters, err = CompileFilters(req.GetWhitelist(), req.GetBlacklist()); err != nil {
		return nil, err
	}
	if r.mask, err = newFieldMask(req.GetFieldMask()); err != nil {
		return nil, err
	}
	return r, nil
}

// matches reports whether a flow is in the request's time range and
// passes its filters.
func (r *request) matches(v *flow.View) bool {
	if !r.since.IsZero() || !r.until.IsZero() {
		t := v.Time()
		if !r.since.IsZero() && t.Before(r.since) || !r.until.IsZero() && t.After(r.until) {
			return false
		}
	}
	return r.filters.MatchView(v)
}

// readBatch is how many entries GetFlows copies out of the store at a
// time, while reading history and following.
const readBatch = 256

// GetFlows streams stored flows, then (with follow) new ones as they come.
//
// Which stored flows, among those that match, follows Hubble: with first
// or since, the oldest number flows (all if number is 0); otherwise the
// newest number flows (all if number is 0, none when following). Lost-event
// notices between the chosen flows are sent in place, unfiltered. A
// follower that reads too slowly is sent a LostEvent (source
// HUBBLE_RING_BUFFER) counting the flows it missed.
//
// Stored records are filtered as records and built into flows only when
// sent.
func (s *Service) GetFlows(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	r, err := parseRequest(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the server is closing
	defer stop()

	snd := s.sender(stream, r)
	oldest, next := s.store.Range()
	for _, e := range r.history(s.store, oldest, next) {
		if err := snd.send(&e); err != nil {
			return err
		}
	}
	if !r.follow {
		return nil
	}
	follower := s.store.Follow(next)
	buf := make([]flow.Entry, readBatch)
	var v flow.View
	for {
		evs, lost, err := follower.Next(ctx, buf)
		if err != nil {
			if ctx.Err() != nil && stream.Context().Err() == nil {
				return status.Error(codes.Unavailable, "server shutting down")
			}
			return status.FromContextError(err).Err()
		}
		if lost > 0 {
			now := timestamppb.Now()
			if err := snd.sendLost(&flowpb.LostEvent{
				Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: lost, First: now, Last: now,
			}); err != nil {
				return err
			}
		}
		for i := range evs {
			e := &evs[i]
			if e.View(&v) {
				if !r.until.IsZero() && v.Time().After(r.until) {
					return nil
				}
				if !r.matches(&v) {
					continue
				}
			}
			if err := snd.send(e); err != nil {
				return err
			}
		}
	}
}

// history picks the stored entries [oldest, next) to send before
// following, reading the store a batch at a time: the newest number
// matching flows scanning back from next, or the oldest ones scanning
// forward. Entries overwritten while it reads are left out.
func (r *request) history(store *flow.Store, oldest, next uint64) []flow.Entry {
	if r.follow && r.number == 0 && r.since.IsZero() {
		return nil // only new flows
	}
	var out []flow.Entry
	matched := uint64(0)
	full := func() bool { return r.number > 0 && matched == r.number }
	buf := make([]flow.Entry, readBatch)
	var v flow.View
	// take adds an entry: a matching flow, or a lost-events notice once a
	// flow was picked (notices outside the picked flows are trimmed).
	take := func(e *flow.Entry) {
		if !e.View(&v) {
			if matched > 0 {
				out = append(out, *e)
			}
			return
		}
		if r.matches(&v) {
			out = append(out, *e)
			matched++
		}
	}
	if r.first || !r.since.IsZero() {
		for seq := oldest; seq < next && !full(); {
			first, n := store.Read(seq, buf[:min(uint64(len(buf)), next-seq)])
			if n == 0 {
				break
			}
			for i := 0; i < n && !full(); i++ {
				take(&buf[i])
			}
			seq = first + uint64(n)
		}
	} else {
		// Newest first, then reversed.
		for end := next; end > oldest && !full(); {
			start := max(oldest, end-min(end, uint64(len(buf))))
			first, n := store.Read(start, buf[:end-start])
			if first >= end || n == 0 {
				break // overwritten while reading: the rest is gone
			}
			for i := n - 1; i >= 0 && !full(); i-- {
				take(&buf[i])
			}
			end = first
		}
		slices.Reverse(out)
		out = trimNotices(out, true)
	}
	return trimNotices(out, false)
}

// trimNotices drops the lost-events notices at the end (or, with front,
// the start) of picked entries: they are outside the picked flows.
func trimNotices(l []flow.Entry, front bool) []flow.Entry {
	if front {
		for len(l) > 0 && !l[0].IsFlow() {
			l = l[1:]
		}
		return l
	}
	for len(l) > 0 && !l[len(l)-1].IsFlow() {
		l = l[:len(l)-1]
	}
	return l
}

// sender sends one GetFlows stream's entries.
type sender struct {
	s      *Service
	stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]
	r      *request
	// Encoding buffers, reused: SendMsg copies what it sends.
	msg, scratch []byte
}

func (s *Service) sender(stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse], r *request) *sender {
	return &sender{s: s, stream: stream, r: r}
}

func (snd *sender) send(e *flow.Entry) error {
	if l := e.Lost(); l != nil {
		return snd.sendLost(l)
	}
	if snd.s.encoded && snd.r.mask == nil {
		var ok bool
		if snd.msg, ok = e.AppendResponse(snd.msg[:0], &snd.scratch); ok {
			return snd.stream.SendMsg(&encodedResponse{snd.msg})
		}
	}
	f := e.Flow()
	return snd.stream.Send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: snd.r.mask.apply(f)},
		NodeName:      f.GetNodeName(),
		Time:          f.GetTime(),
	})
}

func (snd *sender) sendLost(l *flowpb.LostEvent) error {
	return snd.stream.Send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: l},
		NodeName:      snd.s.nodeName,
		Time:          l.GetLast(),
	})
}
