package observer

import (
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// encodedResponse is a GetFlowsResponse already in its wire encoding,
// written from a stored record (flow.Entry.AppendResponse) without
// building the flow.
type encodedResponse struct{ b []byte }

// codec is gRPC's proto codec, except that it sends an encodedResponse's
// bytes as they are. The server uses it (Start) for every message.
type codec struct{ encoding.CodecV2 }

func newCodec() codec { return codec{encoding.GetCodecV2(protocodec.Name)} }

// Marshal copies an encodedResponse into a buffer of gRPC's pool: gRPC
// writes it out after SendMsg returns, and the caller reuses its own.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*encodedResponse)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(len(r.b))
	copy(*buf, r.b)
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}
