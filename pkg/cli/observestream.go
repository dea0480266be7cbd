package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// rawResponse is a GetFlowsResponse as it came over the wire: the printers
// of `sluice observe` read it undecoded (-o json) or decode it once.
type rawResponse struct{ b []byte }

// rawCodec is gRPC's proto codec, except that it hands a rawResponse its
// bytes instead of decoding them.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawResponse); ok {
		// The buffers go back to gRPC's pool after this returns.
		r.b = r.b[:0]
		for _, buf := range data {
			r.b = append(r.b, buf.ReadOnlyData()...)
		}
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// receiveWindow is the gRPC flow-control window of a GetFlows stream:
// about 8,000 flows.
const receiveWindow = 8 << 20

// streamFlows sends req to the observer and hands each response, as
// received, to handle until the stream ends or ctx is done (the user
// stopped following). handle may keep the bytes: each call gets a buffer
// from next (nil: a new one).
func (s *flowSource) streamFlows(ctx context.Context, req *observerpb.GetFlowsRequest, next func() []byte, handle func([]byte) error) error {
	target := s.target()
	// A large receive window lets the observer send ahead while the
	// printer catches up, rather than stall and let its flow buffer
	// overwrite what this client has not read.
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(receiveWindow), grpc.WithInitialConnWindowSize(receiveWindow))
	if err != nil {
		return fmt.Errorf("--server %q: %w", target, err)
	}
	defer conn.Close()
	codec := rawCodec{encoding.GetCodecV2(protocodec.Name)}
	stream, err := conn.NewStream(ctx, &observerpb.Observer_ServiceDesc.Streams[0], observerpb.Observer_GetFlows_FullMethodName,
		grpc.ForceCodecV2(codec))
	if err != nil {
		return observerError(target, err)
	}
	if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return observerError(target, err)
	}
	if err := stream.CloseSend(); err != nil {
		return observerError(target, err)
	}
	for {
		var r rawResponse
		if next != nil {
			r.b = next()
		}
		err := stream.RecvMsg(&r)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return observerError(target, err)
		}
		if err := handle(r.b); err != nil {
			return err
		}
	}
}

// getFlows is streamFlows with each response decoded.
func (s *flowSource) getFlows(ctx context.Context, req *observerpb.GetFlowsRequest, handle func(*observerpb.GetFlowsResponse) error) error {
	return s.streamFlows(ctx, req, nil, func(b []byte) error {
		r := &observerpb.GetFlowsResponse{}
		if err := proto.Unmarshal(b, r); err != nil {
			return fmt.Errorf("decode a GetFlows response: %w", err)
		}
		return handle(r)
	})
}

// printBacklog is how many received responses wait for the printer.
const printBacklog = 1024

// printFlows streams responses into the printer p, which writes to out.
// Receiving runs beside printing, and out is flushed whenever the printer
// has caught up: a follower's output is as prompt as with a write per
// line, and one write carries many lines when flows come fast.
func (s *flowSource) printFlows(ctx context.Context, req *observerpb.GetFlowsRequest, p flowPrinter, out *bufio.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	received := make(chan []byte, printBacklog)
	free := make(chan []byte, printBacklog+2) // printed buffers, reused
	next := func() []byte {
		select {
		case b := <-free:
			return b[:0]
		default:
			return nil
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- s.streamFlows(ctx, req, next, func(b []byte) error {
			select {
			case received <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		close(received)
	}()
	var perr error
	for b := range received {
		if perr == nil {
			perr = p.write(b)
		}
		if perr != nil {
			cancel() // stop receiving; drain what is in flight
			continue
		}
		select {
		case free <- b:
		default:
		}
		if len(received) == 0 {
			if perr = out.Flush(); perr != nil {
				cancel()
			}
		}
	}
	err := <-done
	// What was printed is written out, even when the stream failed.
	cerr := p.close()
	ferr := out.Flush()
	for _, e := range []error{perr, err, cerr, ferr} {
		if e != nil {
			return e
		}
	}
	return nil
}
