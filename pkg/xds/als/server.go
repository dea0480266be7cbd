package als

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-net/sluice/pkg/flow"
)

// Options are where the flows go.
type Options struct {
	// Converter makes the flows, resolving both ends of each request (the
	// agent's, which resolves its datapath events too).
	Converter *flow.Converter
	// Store keeps the flows for the observer.
	Store *flow.Store
	// Observe, if set, is told of every request (metrics). It is called
	// from the stream's goroutine and must not block.
	Observe func(*flow.HTTPLog)
	// Log gets a line per stream; nil discards.
	Log *slog.Logger
}

// Service implements Envoy's AccessLogService: each finished request of
// an HTTP access log stream becomes an L7 flow. It is safe for any
// number of streams at once (Envoy opens one per worker thread and log
// name).
type Service struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	o Options
}

// NewService returns the service for the options.
func NewService(o Options) (*Service, error) {
	if o.Converter == nil || o.Store == nil {
		return nil, errors.New("access log service: a flow converter and a flow store are needed")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{o: o}, nil
}

// Register serves the access log service on s: the xDS server's gRPC
// server, so that Envoy's access log cluster is the socket ADS runs on.
func Register(s grpc.ServiceRegistrar, o Options) (*Service, error) {
	svc, err := NewService(o)
	if err != nil {
		return nil, err
	}
	accesslogv3.RegisterAccessLogServiceServer(s, svc)
	return svc, nil
}

// StreamAccessLogs reads one stream until Envoy closes it. The first
// message must carry the identifier (node and log name); a stream without
// one is refused with InvalidArgument, naming the field. HTTP entries of
// finished requests become flows; TCP entries, which Sluice's listeners
// do not log, are ignored.
func (s *Service) StreamAccessLogs(stream grpc.ClientStreamingServer[accesslogv3.StreamAccessLogsMessage, accesslogv3.StreamAccessLogsResponse]) error {
	var id *accesslogv3.StreamAccessLogsMessage_Identifier
	var requests, skipped uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			s.o.Log.Debug("access log stream closed", "node", id.GetNode().GetId(), "log", id.GetLogName(),
				"requests", requests, "skipped", skipped)
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		if msg.GetIdentifier() != nil {
			if err := msg.GetIdentifier().ValidateAll(); err != nil {
				return status.Error(codes.InvalidArgument, fmt.Sprintf("access log stream: identifier: %v", err))
			}
			if id == nil {
				s.o.Log.Info("access log stream opened", "node", msg.GetIdentifier().GetNode().GetId(), "log", msg.GetIdentifier().GetLogName())
			}
			id = msg.GetIdentifier()
		}
		if id == nil {
			return status.Error(codes.InvalidArgument,
				"access log stream: the first message carries no identifier (node and log_name)")
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			if !finished(e) {
				skipped++
				continue
			}
			log := httpLog(e)
			s.o.Store.Add(s.o.Converter.HTTP(&log))
			if s.o.Observe != nil {
				s.o.Observe(&log)
			}
			requests++
		}
	}
}
