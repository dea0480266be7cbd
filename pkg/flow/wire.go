package flow

import (
	"encoding/binary"
	"slices"
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The observer sends most flows as they are built, to followers that
// read every one: most of a flow's bytes are its endpoints (labels,
// names, workloads), which records share. AppendResponse encodes those
// shared messages once (when first sent) and splices their bytes into
// each flow's, so that sending a flow marshals only what is its own. The
// bytes are proto.Marshal's for the same response (TestAppendResponse):
// fields in number order, as protobuf-go writes them.

// Flow fields that hold shared messages, and the response's fields.
var (
	flowFields              = (&flowpb.Flow{}).ProtoReflect().Descriptor().Fields()
	fieldSource             = number(flowFields, "source")
	fieldDestination        = number(flowFields, "destination")
	fieldDestinationService = number(flowFields, "destination_service")
	fieldExtensions         = number(flowFields, "extensions")
	responseFields          = (&observerpb.GetFlowsResponse{}).ProtoReflect().Descriptor().Fields()
	fieldResponseFlow       = number(responseFields, "flow")
	fieldResponseNodeName   = number(responseFields, "node_name")
	fieldResponseTime       = number(responseFields, "time")
	policyFields            map[protowire.Number]func(*flowpb.Flow) *[]*flowpb.Policy
)

func number(fs protoreflect.FieldDescriptors, name protoreflect.Name) protowire.Number {
	return fs.ByName(name).Number()
}

func init() {
	policyFields = map[protowire.Number]func(*flowpb.Flow) *[]*flowpb.Policy{
		number(flowFields, "ingress_allowed_by"): func(f *flowpb.Flow) *[]*flowpb.Policy { return &f.IngressAllowedBy },
		number(flowFields, "egress_allowed_by"):  func(f *flowpb.Flow) *[]*flowpb.Policy { return &f.EgressAllowedBy },
		number(flowFields, "ingress_denied_by"):  func(f *flowpb.Flow) *[]*flowpb.Policy { return &f.IngressDeniedBy },
		number(flowFields, "egress_denied_by"):   func(f *flowpb.Flow) *[]*flowpb.Policy { return &f.EgressDeniedBy },
	}
}

// encoded is a shared message's wire bytes, made once.
type encoded struct {
	once sync.Once
	b    []byte
}

func (e *encoded) bytes(m proto.Message) []byte {
	e.once.Do(func() {
		e.b, _ = proto.Marshal(m) // cannot fail: a message built here, valid UTF-8 of Go strings
	})
	return e.b
}

// splice is a shared message to insert at its field number.
type splice struct {
	num protowire.Number
	b   []byte
}

// AppendResponse appends the wire encoding of the GetFlowsResponse that
// carries the record's flow (node name and time set from it), as
// proto.Marshal would encode it. buf is scratch space the caller keeps
// for the next call; the result is appended to out.
func (r *Record) AppendResponse(out []byte, buf *[]byte) []byte {
	ev := r.event()
	f := r.conv.build(&ev, r.refs)
	var sp [6]splice
	shared := sp[:0]
	// The shared messages leave the flow before it is marshaled, and
	// come back as their bytes.
	if f.Source != nil {
		shared = append(shared, splice{fieldSource, r.src.wire.bytes(f.Source)})
		f.Source = nil
	}
	if f.Destination != nil {
		shared = append(shared, splice{fieldDestination, r.dst.wire.bytes(f.Destination)})
		f.Destination = nil
	}
	if f.DestinationService != nil {
		shared = append(shared, splice{fieldDestinationService, r.svc.serviceWire.bytes(f.DestinationService)})
		f.DestinationService = nil
	}
	if f.Extensions != nil {
		shared = append(shared, splice{fieldExtensions, r.svc.origDstWire.bytes(f.Extensions)})
		f.Extensions = nil
	}
	for num, field := range policyFields {
		if p := field(f); len(*p) == 1 && r.rule != nil && (*p)[0] == r.rule.policy {
			shared = append(shared, splice{num, r.rule.wire.bytes(r.rule.policy)})
			*p = nil
		}
	}
	slices.SortFunc(shared, func(a, b splice) int { return int(a.num) - int(b.num) })

	own, _ := proto.MarshalOptions{}.MarshalAppend((*buf)[:0], f)
	*buf = own
	size := len(own)
	for _, s := range shared {
		size += protowire.SizeTag(s.num) + protowire.SizeBytes(len(s.b))
	}
	// protobuf-go writes a oneof after the other fields (the test pins
	// its order; any order decodes the same): the node name and time,
	// then the flow.
	if f.NodeName != "" {
		out = protowire.AppendTag(out, fieldResponseNodeName, protowire.BytesType)
		out = protowire.AppendString(out, f.NodeName)
	}
	// google.protobuf.Timestamp: seconds (1) and nanos (2), when not zero.
	var tb [2 * (1 + binary.MaxVarintLen64)]byte
	ts := tb[:0]
	if f.Time.Seconds != 0 {
		ts = protowire.AppendVarint(protowire.AppendTag(ts, 1, protowire.VarintType), uint64(f.Time.Seconds))
	}
	if f.Time.Nanos != 0 {
		ts = protowire.AppendVarint(protowire.AppendTag(ts, 2, protowire.VarintType), uint64(int64(f.Time.Nanos)))
	}
	out = protowire.AppendTag(out, fieldResponseTime, protowire.BytesType)
	out = protowire.AppendBytes(out, ts)
	out = protowire.AppendTag(out, fieldResponseFlow, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(size))
	// Merge the flow's own fields and the shared ones by number.
	for len(own) > 0 {
		num, typ, n := protowire.ConsumeTag(own)
		if n < 0 {
			break // cannot happen: proto.Marshal's output
		}
		for len(shared) > 0 && shared[0].num < num {
			out = appendSplice(out, shared[0])
			shared = shared[1:]
		}
		m := protowire.ConsumeFieldValue(num, typ, own[n:])
		if m < 0 {
			break
		}
		out = append(out, own[:n+m]...)
		own = own[n+m:]
	}
	for _, s := range shared {
		out = appendSplice(out, s)
	}
	return out
}

func appendSplice(out []byte, s splice) []byte {
	out = protowire.AppendTag(out, s.num, protowire.BytesType)
	return protowire.AppendBytes(out, s.b)
}
