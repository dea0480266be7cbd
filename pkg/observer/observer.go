package observer

import (
	"context"
	"errors"
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
func (r *request) matches(f *flowpb.Flow) bool {
	t := f.GetTime().AsTime()
	if !r.since.IsZero() && t.Before(r.since) || !r.until.IsZero() && t.After(r.until) {
		return false
	}
	return r.filters.Match(f)
}

// GetFlows streams stored flows, then (with follow) new ones as they come.
//
// Which stored flows, among those that match, follows Hubble: with first
// or since, the oldest number flows (all if number is 0); otherwise the
// newest number flows (all if number is 0, none when following). Lost-event
// notices between the chosen flows are sent in place, unfiltered. A
// follower that reads too slowly is sent a LostEvent (source
// HUBBLE_RING_BUFFER) counting the flows it missed.
func (s *Service) GetFlows(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	r, err := parseRequest(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the server is closing
	defer stop()

	stored, next := s.store.Snapshot()
	for _, e := range r.history(stored) {
		if err := s.send(stream, r, e); err != nil {
			return err
		}
	}
	if !r.follow {
		return nil
	}
	follower := s.store.Follow(next)
	for {
		evs, lost, err := follower.Next(ctx)
		if err != nil {
			if ctx.Err() != nil && stream.Context().Err() == nil {
				return status.Error(codes.Unavailable, "server shutting down")
			}
			return status.FromContextError(err).Err()
		}
		if lost > 0 {
			now := timestamppb.Now()
			if err := s.sendLost(stream, &flowpb.LostEvent{
				Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: lost, First: now, Last: now,
			}); err != nil {
				return err
			}
		}
		for _, e := range evs {
			if e.Flow != nil && !r.until.IsZero() && e.Flow.GetTime().AsTime().After(r.until) {
				return nil
			}
			if e.Flow != nil && !r.matches(e.Flow) {
				continue
			}
			if err := s.send(stream, r, e); err != nil {
				return err
			}
		}
	}
}

// history picks the stored entries to send before following.
func (r *request) history(stored []flow.Event) []flow.Event {
	if r.follow && r.number == 0 && r.since.IsZero() {
		return nil // only new flows
	}
	var picked []int // indices of matching flows, in order
	if r.first || !r.since.IsZero() {
		for i, e := range stored {
			if r.number > 0 && uint64(len(picked)) == r.number {
				break
			}
			if e.Flow != nil && r.matches(e.Flow) {
				picked = append(picked, i)
			}
		}
	} else {
		for i := len(stored) - 1; i >= 0; i-- {
			if r.number > 0 && uint64(len(picked)) == r.number {
				break
			}
			if e := stored[i]; e.Flow != nil && r.matches(e.Flow) {
				picked = append(picked, i)
			}
		}
		for i, j := 0, len(picked)-1; i < j; i, j = i+1, j-1 {
			picked[i], picked[j] = picked[j], picked[i]
		}
	}
	if len(picked) == 0 {
		return nil
	}
	out := make([]flow.Event, 0, len(picked))
	k := 0
	for i := picked[0]; i <= picked[len(picked)-1]; i++ {
		switch {
		case k < len(picked) && picked[k] == i:
			out = append(out, stored[i])
			k++
		case stored[i].Lost != nil:
			out = append(out, stored[i])
		}
	}
	return out
}

func (s *Service) send(stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse], r *request, e flow.Event) error {
	if e.Lost != nil {
		return s.sendLost(stream, e.Lost)
	}
	f := r.mask.apply(e.Flow)
	return stream.Send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f},
		NodeName:      e.Flow.GetNodeName(),
		Time:          e.Flow.GetTime(),
	})
}

func (s *Service) sendLost(stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse], l *flowpb.LostEvent) error {
	return stream.Send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: l},
		NodeName:      s.nodeName,
		Time:          l.GetLast(),
	})
}
