package flow

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// The observer sends most flows to followers that read every one. Rather
// than build each flow and marshal it, AppendResponse writes its wire
// encoding from the record: the fields of the flow's shape (the same
// shapeOf that build reads), and the messages records share (endpoints,
// service, policy, extension, emitter) as bytes encoded once. It writes
// nothing per flow on the heap. The bytes are proto.Marshal's of the
// built flow's response (TestAppendResponse): fields in number order, as
// protobuf-go writes them.

// Field numbers, read from the descriptors.
var (
	flowFields  = fieldsOf(&flowpb.Flow{})
	fTime       = flowFields.num("time")
	fVerdict    = flowFields.num("verdict")
	fDropRsn    = flowFields.num("drop_reason")
	fIP         = flowFields.num("IP")
	fL4         = flowFields.num("l4")
	fSource     = flowFields.num("source")
	fDest       = flowFields.num("destination")
	fType       = flowFields.num("Type")
	fNodeName   = flowFields.num("node_name")
	fReplyField = flowFields.num("reply")
	fEventType  = flowFields.num("event_type")
	fDestSvc    = flowFields.num("destination_service")
	fDirection  = flowFields.num("traffic_direction")
	fMatchType  = flowFields.num("policy_match_type")
	fObsPoint   = flowFields.num("trace_observation_point")
	fDropDesc   = flowFields.num("drop_reason_desc")
	fIsReply    = flowFields.num("is_reply")
	fInterface  = flowFields.num("interface")
	fProxyPort  = flowFields.num("proxy_port")
	fSockXlate  = flowFields.num("sock_xlate_point")
	fCookie     = flowFields.num("socket_cookie")
	fCgroup     = flowFields.num("cgroup_id")
	fTraceRsn   = flowFields.num("trace_reason")
	fEmitter    = flowFields.num("emitter")
	fSummary    = flowFields.num("Summary")
	fExt        = flowFields.num("extensions")
	fPolicy     = [...]protowire.Number{
		egressAllowedBy: flowFields.num("egress_allowed_by"), ingressAllowedBy: flowFields.num("ingress_allowed_by"),
		egressDeniedBy: flowFields.num("egress_denied_by"), ingressDeniedBy: flowFields.num("ingress_denied_by"),
	}

	responseFields = fieldsOf(&observerpb.GetFlowsResponse{})
	fRespFlow      = responseFields.num("flow")
	fRespNodeName  = responseFields.num("node_name")
	fRespTime      = responseFields.num("time")

	ipFields    = fieldsOf(&flowpb.IP{})
	fIPSource   = ipFields.num("source")
	fIPDest     = ipFields.num("destination")
	fIPVersion  = ipFields.num("ipVersion")
	l4Fields    = fieldsOf(&flowpb.Layer4{})
	fL4TCP      = l4Fields.num("TCP")
	fL4UDP      = l4Fields.num("UDP")
	fL4SCTP     = l4Fields.num("SCTP")
	fL4ICMPv4   = l4Fields.num("ICMPv4")
	fL4ICMPv6   = l4Fields.num("ICMPv6")
	tcpFields   = fieldsOf(&flowpb.TCP{})
	fTCPFlags   = tcpFields.num("flags")
	flagsFields = fieldsOf(&flowpb.TCPFlags{})
)

// The encoder writes some fields by number: the numbers it assumes are
// the API's.
func init() {
	for _, f := range []struct {
		d    descFields
		name protoreflect.Name
		num  protowire.Number
	}{
		{tcpFields, "source_port", 1}, {tcpFields, "destination_port", 2},
		{fieldsOf(&flowpb.UDP{}), "source_port", 1}, {fieldsOf(&flowpb.UDP{}), "destination_port", 2},
		{fieldsOf(&flowpb.SCTP{}), "source_port", 1}, {fieldsOf(&flowpb.SCTP{}), "destination_port", 2},
		{fieldsOf(&flowpb.ICMPv4{}), "type", 1}, {fieldsOf(&flowpb.CiliumEventType{}), "type", 1},
		{fieldsOf(&flowpb.CiliumEventType{}), "sub_type", 2}, {fieldsOf(&flowpb.NetworkInterface{}), "index", 1},
		{flagsFields, "FIN", 1}, {flagsFields, "SYN", 2}, {flagsFields, "RST", 3}, {flagsFields, "PSH", 4},
		{flagsFields, "ACK", 5}, {flagsFields, "URG", 6}, {flagsFields, "ECE", 7}, {flagsFields, "CWR", 8},
	} {
		if n := f.d.num(f.name); n != f.num {
			panic(fmt.Sprintf("flow: field %s is number %d in the flow API, not %d: the wire encoder needs updating", f.name, n, f.num))
		}
	}
}

type descFields struct{ protoreflect.FieldDescriptors }

func fieldsOf(m proto.Message) descFields {
	return descFields{m.ProtoReflect().Descriptor().Fields()}
}

func (d descFields) num(name protoreflect.Name) protowire.Number {
	fd := d.ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("flow: no field %s in the flow API: the wire encoder needs updating", name))
	}
	return fd.Number()
}

// encoded is a shared message's wire bytes, made once.
type encoded struct {
	once sync.Once
	b    []byte
}

func (e *encoded) bytes(m proto.Message) []byte {
	e.once.Do(func() {
		e.b, _ = proto.Marshal(m) // cannot fail: a message made here, of Go strings
	})
	return e.b
}

// AppendResponse appends the wire encoding of the GetFlowsResponse that
// carries the record's flow, with the node name and time set from it:
// proto.Marshal's bytes for the response of Build's flow. buf is scratch
// space the caller keeps for the next call.
func (r *Record) AppendResponse(out []byte, buf *[]byte) []byte {
	ev := r.event()
	c := r.conv
	// protobuf-go writes a oneof after the other fields (the test pins
	// its order; any order decodes the same): the node name and time,
	// then the flow.
	out = appendString(out, fRespNodeName, c.NodeName)
	out = appendTimestamp(out, fRespTime, ev.Time)
	flow := r.appendFlow((*buf)[:0], &ev)
	*buf = flow
	return appendBytes(out, fRespFlow, flow)
}

// appendFlow appends the flow's fields in number order.
func (r *Record) appendFlow(b []byte, ev *events.Event) []byte {
	c, refs := r.conv, r.refs
	sh := shapeOf(ev, refs)
	b = appendTimestamp(b, fTime, ev.Time)
	b = appendVarint(b, fVerdict, uint64(sh.verdict))
	b = appendVarint(b, fDropRsn, uint64(sh.dropReason))
	b = appendIP(b, sourceAddr(ev, refs), ev.Dst.Addr())
	b = appendL4(b, ev)
	if refs.src != nil {
		b = appendBytes(b, fSource, refs.src.wire.bytes(refs.src.ep))
	}
	if refs.dst != nil {
		b = appendBytes(b, fDest, refs.dst.wire.bytes(refs.dst.ep))
	}
	b = appendVarint(b, fType, uint64(sh.flowType))
	b = appendString(b, fNodeName, c.NodeName)
	b = appendBool(b, fReplyField, sh.reply)
	if sh.eventType {
		var et [2 * (1 + 10)]byte
		m := appendVarint(et[:0], 1, uint64(int64(sh.etType)))
		m = appendVarint(m, 2, uint64(int64(sh.etSub)))
		b = appendBytes(b, fEventType, m)
	}
	if refs.svc != nil && refs.svc.service != nil {
		b = appendBytes(b, fDestSvc, refs.svc.serviceWire.bytes(refs.svc.service))
	}
	b = appendVarint(b, fDirection, uint64(sh.direction))
	b = appendVarint(b, fMatchType, uint64(sh.matchType))
	b = appendVarint(b, fObsPoint, uint64(sh.obsPoint))
	b = appendVarint(b, fDropDesc, uint64(sh.dropReasonDesc))
	if sh.isReplySet {
		var v [2]byte
		b = appendBytes(b, fIsReply, appendBool(v[:0], 1, sh.isReply))
	}
	if ev.IfIndex != 0 {
		var v [1 + 10]byte
		b = appendBytes(b, fInterface, appendVarint(v[:0], 1, uint64(ev.IfIndex)))
	}
	b = appendVarint(b, fProxyPort, uint64(sh.proxyPort))
	b = appendVarint(b, fSockXlate, uint64(sh.sockXlate))
	b = appendVarint(b, fCookie, ev.SockCookie)
	b = appendVarint(b, fCgroup, ev.CgroupID)
	b = appendVarint(b, fTraceRsn, uint64(sh.traceReason))
	b = appendBytes(b, fEmitter, c.emitterWire.bytes(c.emitterOnce()))
	if sh.policy != noPolicy {
		b = appendBytes(b, fPolicy[sh.policy], refs.rule.wire.bytes(refs.rule.policy))
	}
	// The summary, in place: its length is known once it is written.
	b = protowire.AppendTag(b, fSummary, protowire.BytesType)
	at := len(b)
	b = append(b, 0, 0) // room for a length below 16384
	b = appendSummary(b, ev)
	switch n := len(b) - at - 2; {
	case n == 0:
		b = b[:at-protowire.SizeTag(fSummary)] // empty: no field
	case n < 1<<7:
		b[at] = byte(n)
		b = append(b[:at+1], b[at+2:]...)
	case n < 1<<14:
		b[at], b[at+1] = byte(n)|0x80, byte(n>>7)
	default: // never: summaries are short
		s := append([]byte(nil), b[at+2:]...)
		b = protowire.AppendBytes(b[:at], s)
	}
	if refs.svc != nil && refs.svc.origDst != nil {
		b = appendBytes(b, fExt, refs.svc.origDstWire.bytes(refs.svc.origDst))
	}
	return b
}

// appendIP appends flow.IP as layer3 makes it: nothing without a
// destination, the source only when shown.
func appendIP(b []byte, src, dst netip.Addr) []byte {
	src, dst = src.Unmap(), dst.Unmap()
	var version flowpb.IPVersion
	switch {
	case dst.Is4():
		version = flowpb.IPVersion_IPv4
	case dst.Is6():
		version = flowpb.IPVersion_IPv6
	default:
		return b
	}
	var v [2 * (2 + 46)]byte // two addresses as text, tags and lengths
	m := v[:0]
	if src.IsValid() && !src.IsUnspecified() {
		m = appendAddr(m, fIPSource, src)
	}
	m = appendAddr(m, fIPDest, dst)
	m = appendVarint(m, fIPVersion, uint64(version))
	return appendBytes(b, fIP, m)
}

func appendAddr(b []byte, num protowire.Number, a netip.Addr) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	at := len(b)
	b = a.AppendTo(append(b, 0))
	b[at] = byte(len(b) - at - 1) // an address's text is shorter than 128
	return b
}

// appendL4 appends flow.Layer4 as layer4 makes it.
func appendL4(b []byte, ev *events.Event) []byte {
	var v [64]byte
	var proto protowire.Number
	m := v[:0]
	sport, dport := uint64(ev.Src.Port()), uint64(ev.Dst.Port())
	switch l4Proto(ev.Proto) {
	case L4TCP:
		proto = fL4TCP
		m = appendVarint(m, 1, sport) // source_port
		m = appendVarint(m, 2, dport) // destination_port
		if !socketEvent(ev) {         // a socket call has no packet, hence no flags
			var fv [16]byte
			fl := fv[:0]
			for bit := range 8 { // FIN (1) ... CWR (8): the header's bits in order
				fl = appendBool(fl, protowire.Number(bit+1), ev.TCPFlags&(1<<bit) != 0)
			}
			m = appendBytes(m, fTCPFlags, fl)
		}
	case L4UDP, L4SCTP:
		proto = fL4UDP
		if l4Proto(ev.Proto) == L4SCTP {
			proto = fL4SCTP
		}
		m = appendVarint(m, 1, sport) // source_port
		m = appendVarint(m, 2, dport) // destination_port
	case L4ICMPv4:
		proto = fL4ICMPv4
		m = appendVarint(m, 1, uint64(icmpType(ev))) // type
	case L4ICMPv6:
		proto = fL4ICMPv6
	default:
		return b
	}
	var lv [64 + 4]byte
	return appendBytes(b, fL4, appendBytes(lv[:0], proto, m))
}

// appendTimestamp appends a google.protobuf.Timestamp message field.
func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	var v [2 * (1 + 10)]byte
	m := appendVarint(v[:0], 1, uint64(t.Unix()))
	m = appendVarint(m, 2, uint64(t.Nanosecond()))
	return appendBytes(b, num, m)
}

// appendVarint appends a varint field unless it is zero (proto3).
func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return appendVarint(b, num, 1)
}

// appendString appends a string field unless it is empty (proto3).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// appendBytes appends a message field (present even when empty).
func appendBytes(b []byte, num protowire.Number, m []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), m)
}
