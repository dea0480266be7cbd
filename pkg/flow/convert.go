package flow

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/datapath/events"
	"github.com/sluice-net/sluice/pkg/identity"
	"github.com/sluice-net/sluice/pkg/model"
)

// Cilium monitor message types (pkg/monitor/api), carried in
// flow.event_type.type. Hubble's printers and its --type filter key on
// them.
const (
	MessageTypeDrop          = 1
	MessageTypeTrace         = 4
	MessageTypePolicyVerdict = 5
	MessageTypeTraceSock     = 7
)

// Trace observation points as Cilium's bpf/lib/trace.h numbers them: the
// sub-type of a trace event. flow.trace_observation_point spells the same
// points with its own enum (TO_ENDPOINT is 101 there, 0 here).
const (
	traceToEndpoint   = 0
	traceFromEndpoint = 5
	traceFromNetwork  = 10
	traceToNetwork    = 11
)

// EmitterName is flow.emitter.name of every flow Sluice makes.
const EmitterName = "Sluice"

// Converter turns datapath events into flows, in two steps: Record
// resolves what the agent knows about an event's ends, service and rule
// when the event is read (the Enricher's answers, kept by reference), and
// Build makes the Hubble flow from the stored record when a client reads
// it. Convert does both at once.
//
// It is safe for concurrent use if the Enricher is. It keeps the values
// it resolved (endpoints with their labels, services, policies) in small
// caches, so that every record of the same end shares one immutable
// value and resolving allocates nothing once an end has been seen.
type Converter struct {
	// NodeName fills flow.node_name.
	NodeName string
	// ClusterName fills endpoint.cluster_name of pods; may be empty.
	ClusterName string
	// Version fills flow.emitter.version.
	Version string
	// Enricher resolves endpoints, identities, services and rules. It
	// should be set: without it every peer outside the event's own
	// endpoint reads as reserved:world. It should return the same label
	// slices for the same answer (the agent's come from its identity
	// allocator): resolved ends are shared by the labels they were made
	// of.
	Enricher Enricher

	mu          sync.Mutex
	emitter     *flowpb.Emitter
	emitterWire encoded
	cache       resolved
}

// Convert returns the flow of one event, resolved now: Build(Record).
func (c *Converter) Convert(ev *events.Event) *flowpb.Flow {
	return c.build(ev, c.resolve(eventFacts(ev)))
}

// build makes the flow of an event whose enrichment was resolved into r.
// Sub-messages that r holds (endpoints, the service, policies, the
// original destination) are shared with every flow built from the same
// values: flows are read, never modified. appendFlow writes the same
// flow's wire encoding from the same shape.
func (c *Converter) build(ev *events.Event, r refs) *flowpb.Flow {
	sh := shapeOf(ev, r)
	var summary [128]byte
	f := &flowpb.Flow{
		Time:                  timestamppb.New(ev.Time),
		Emitter:               c.emitterOnce(),
		NodeName:              c.NodeName,
		Type:                  sh.flowType,
		Verdict:               sh.verdict,
		DropReason:            sh.dropReason,
		DropReasonDesc:        sh.dropReasonDesc,
		TrafficDirection:      sh.direction,
		TraceObservationPoint: sh.obsPoint,
		TraceReason:           sh.traceReason,
		Reply:                 sh.reply,
		ProxyPort:             sh.proxyPort,
		PolicyMatchType:       sh.matchType,
		SockXlatePoint:        sh.sockXlate,
		L4:                    layer4(ev),
		IP:                    layer3(sourceAddr(ev, r), ev.Dst.Addr()),
		// Socket-LB events: the socket and the calling process's cgroup.
		SocketCookie: ev.SockCookie, CgroupId: ev.CgroupID,
		Source: r.src.endpoint(), Destination: r.dst.endpoint(),
		Summary: string(appendSummary(summary[:0], ev)),
	}
	if sh.eventType {
		f.EventType = &flowpb.CiliumEventType{Type: sh.etType, SubType: sh.etSub}
	}
	if sh.isReplySet {
		f.IsReply = boolValue(sh.isReply)
	}
	if ev.IfIndex != 0 {
		f.Interface = &flowpb.NetworkInterface{Index: ev.IfIndex}
	}
	if r.svc != nil {
		f.DestinationService, f.Extensions = r.svc.service, r.svc.origDst
	}
	if sh.policy != noPolicy {
		*sh.policy.of(f) = []*flowpb.Policy{r.rule.policy}
	}
	return f
}

// shape is what a flow holds besides its addresses, transport, summary
// and what records share: the event's kind as Hubble reports it.
type shape struct {
	verdict        flowpb.Verdict
	flowType       flowpb.FlowType
	dropReason     uint32
	dropReasonDesc flowpb.DropReason
	direction      flowpb.TrafficDirection
	eventType      bool // event_type is set: etType, etSub
	etType, etSub  int32
	obsPoint       flowpb.TraceObservationPoint
	traceReason    flowpb.TraceReason
	isReplySet     bool // is_reply is set: isReply
	isReply        bool
	reply          bool // the deprecated reply field
	proxyPort      uint32
	matchType      uint32
	sockXlate      flowpb.SocketTranslationPoint
	policy         policyField // which list holds the deciding rule's policy
}

// policyField is one of the flow's four policy lists.
type policyField int

const (
	noPolicy policyField = iota
	egressAllowedBy
	ingressAllowedBy
	egressDeniedBy
	ingressDeniedBy
)

func (p policyField) of(f *flowpb.Flow) *[]*flowpb.Policy {
	switch p {
	case egressAllowedBy:
		return &f.EgressAllowedBy
	case ingressAllowedBy:
		return &f.IngressAllowedBy
	case egressDeniedBy:
		return &f.EgressDeniedBy
	}
	return &f.IngressDeniedBy
}

// shapeOf reads an event's shape: a new connection is a trace event, or
// a policy verdict event when policy decided it; a drop a drop event; a
// socket-LB translation a SOCK flow; a connection end a trace event at
// the endpoint, forwarded.
func shapeOf(ev *events.Event, r refs) shape {
	sh := shape{flowType: flowpb.FlowType_L3_L4, direction: trafficDirection(ev.Dir, ev.Reply)}
	switch ev.Type {
	case events.Drop:
		sh.verdict = flowpb.Verdict_DROPPED
		sh.dropReason = uint32(ev.Reason)
		// Sub-type is the reason number, as in Cilium's drop
		// notifications. Hubble's printer reads it as a byte:
		// Sluice-only reasons (>= 1000) print as a number there, and by
		// name in the summary.
		sh.eventType, sh.etType, sh.etSub = true, MessageTypeDrop, int32(ev.Reason)
		// Known only once conntrack has placed the packet: a drop before
		// that (a malformed packet, a spoofed source) leaves is_reply
		// unset, as Hubble does for drops. A reply keeps the packet's own
		// source and destination (the server, the client).
		if ev.Tracked {
			sh.isReplySet, sh.isReply, sh.reply = true, ev.Reply, ev.Reply
		}
		sh.dropReasonDesc = DropReason(uint16(ev.Reason))
		if ev.Verdict == events.VerdictRedirect {
			// A connection for the L7 proxy that it could not take
			// (PROXY_UNAVAILABLE, SOCKET_ASSIGN_FAILED): the port it was for.
			sh.proxyPort = uint32(ev.ProxyPort)
		}
		if ev.Verdict == events.VerdictDeny && r.rule != nil {
			sh.policy = ingressDeniedBy
			if ruleDirection(r.rule.rule, sh.direction) == flowpb.TrafficDirection_EGRESS {
				sh.policy = egressDeniedBy
			}
		}
	case events.Translate:
		// connect() or sendmsg() to a service frontend, rewritten to a
		// backend: Hubble reports these as SOCK flows at the
		// post-translation point, the destination being the backend, the
		// frontend in destination_service and the summary.
		point := flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD
		sh.flowType, sh.verdict, sh.sockXlate = flowpb.FlowType_SOCK, flowpb.Verdict_TRANSLATED, point
		sh.eventType, sh.etType, sh.etSub = true, MessageTypeTraceSock, int32(point)
	case events.ConnNew:
		sh.isReplySet = true // false: the first packet of a connection
		sh.traceReason = flowpb.TraceReason_NEW
		sh.verdict = traceVerdict(ev)
		if ev.Verdict == events.VerdictNone {
			sub, point := observationPoint(ev)
			sh.eventType, sh.etType, sh.etSub, sh.obsPoint = true, MessageTypeTrace, sub, point
			break
		}
		sh.eventType, sh.etType = true, MessageTypePolicyVerdict
		if ev.Verdict == events.VerdictRedirect {
			// Handed to the node's L7 proxy where it entered the node:
			// Hubble's observation point for it, beside the verdict.
			sh.proxyPort, sh.obsPoint = uint32(ev.ProxyPort), flowpb.TraceObservationPoint_TO_PROXY
		}
		if r.rule == nil {
			break
		}
		sh.matchType = uint32(r.rule.rule.MatchType)
		allowed := sh.verdict == flowpb.Verdict_FORWARDED || sh.verdict == flowpb.Verdict_REDIRECTED
		egress := ruleDirection(r.rule.rule, sh.direction) == flowpb.TrafficDirection_EGRESS
		switch {
		case allowed && egress:
			sh.policy = egressAllowedBy
		case allowed:
			sh.policy = ingressAllowedBy
		case egress:
			sh.policy = egressDeniedBy
		default:
			sh.policy = ingressDeniedBy
		}
	case events.ConnEnd:
		// Src and Dst are the connection's first packet's; the totals of
		// both directions are in the summary (Hubble's flow has no fields
		// for them).
		sh.isReplySet = true
		sh.verdict = flowpb.Verdict_FORWARDED
		sub, point := observationPoint(ev)
		sh.eventType, sh.etType, sh.etSub, sh.obsPoint = true, MessageTypeTrace, sub, point
	}
	return sh
}

// appendSummary appends the flow's summary: what its kind says (a
// Sluice-only drop reason, a connection end's totals, an unknown event
// type), then Hubble's summary of the transport, "; " between.
func appendSummary(b []byte, ev *events.Event) []byte {
	start := len(b)
	switch ev.Type {
	case events.Drop:
		if DropReason(uint16(ev.Reason)) == flowpb.DropReason_DROP_REASON_UNKNOWN && ev.Reason != 0 {
			b = appendDropReasonName(b, ev.Reason)
		}
	case events.ConnEnd:
		// "connection closed after 3.2s: 5/4 packets, 340/9000 bytes
		// (orig/reply)"
		b = append(b, "connection closed after "...)
		if ev.Expired {
			b = append(b[:start+len("connection ")], "expired after "...)
		}
		b = append(b, ev.Duration.Round(time.Millisecond).String()...)
		b = append(b, ": "...)
		b = strconv.AppendUint(b, ev.PacketsOrig, 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, ev.PacketsReply, 10)
		b = append(b, " packets, "...)
		b = strconv.AppendUint(b, ev.BytesOrig, 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, ev.BytesReply, 10)
		b = append(b, " bytes (orig/reply)"...)
	case events.ConnNew, events.Translate:
	default:
		// A type this agent does not know (a newer datapath).
		b = append(b, "datapath event "...)
		b = append(b, ev.Type.String()...)
	}
	if len(b) > start {
		b = append(b, "; "...)
	}
	b = appendL4Summary(b, ev)
	if len(b) >= start+2 && string(b[len(b)-2:]) == "; " {
		b = b[:len(b)-2] // no transport summary
	}
	return b
}

// emitterOnce is the converter's emitter, one message shared by its flows.
func (c *Converter) emitterOnce() *flowpb.Emitter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.emitter == nil {
		c.emitter = &flowpb.Emitter{Name: EmitterName, Version: c.Version}
	}
	return c.emitter
}

// sourceAddr is the source address the flow shows. Socket-LB events have
// none: the connect() has not picked one yet. The calling pod's address
// stands in.
func sourceAddr(ev *events.Event, r refs) netip.Addr {
	src := ev.Src.Addr()
	if (!src.IsValid() || src.IsUnspecified()) && r.src != nil && len(r.src.podIPs) > 0 {
		return podAddr(r.src.podIPs, ev.Dst.Addr())
	}
	return src
}

// traceVerdict is the verdict of a new connection: forwarded unless
// policy decided otherwise.
func traceVerdict(ev *events.Event) flowpb.Verdict {
	switch ev.Verdict {
	case events.VerdictNone, events.VerdictAllow:
		return flowpb.Verdict_FORWARDED
	case events.VerdictRedirect:
		return flowpb.Verdict_REDIRECTED
	case events.VerdictAudit:
		// Denied by policy, forwarded because the agent audits.
		return flowpb.Verdict_AUDIT
	case events.VerdictDeny:
		return flowpb.Verdict_DROPPED
	}
	return flowpb.Verdict_VERDICT_UNKNOWN
}

// DropReason returns Hubble's drop reason for a datapath reason number:
// the same number for reasons Hubble knows, DROP_REASON_UNKNOWN for
// Sluice-only reasons (>= events.SluiceDropReasonBase) and unknown numbers.
func DropReason(id uint16) flowpb.DropReason {
	if events.DropReason(id) >= events.SluiceDropReasonBase {
		return flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	if _, ok := flowpb.DropReason_name[int32(id)]; !ok {
		return flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	return flowpb.DropReason(id)
}

// appendDropReasonName appends the datapath's name of a reason, or its
// number where this agent has no name for it.
func appendDropReasonName(b []byte, r events.DropReason) []byte {
	if r.Known() {
		return append(b, r.String()...)
	}
	b = append(b, "drop reason "...)
	return strconv.AppendUint(b, uint64(r), 10)
}

// ruleDirection is the direction a rule belongs to: its own, or the
// flow's when it has none.
func ruleDirection(r Rule, flowDir flowpb.TrafficDirection) flowpb.TrafficDirection {
	if r.Direction != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		return r.Direction
	}
	return flowDir
}

// policyOf returns the flow's policy reference, with the labels Cilium
// puts on policies derived from a Kubernetes object.
func policyOf(r Rule) *flowpb.Policy {
	p := &flowpb.Policy{Name: r.Name, Namespace: r.Namespace, Kind: r.Kind, Revision: r.Revision}
	if r.Kind != "" {
		p.Labels = append(p.Labels, "k8s:io.cilium.k8s.policy.derived-from="+r.Kind)
	}
	p.Labels = append(p.Labels, "k8s:io.cilium.k8s.policy.name="+r.Name)
	if r.Namespace != "" {
		p.Labels = append(p.Labels, "k8s:io.cilium.k8s.policy.namespace="+r.Namespace)
	}
	if r.Ref != "" {
		p.Labels = append(p.Labels, RuleLabel+"="+r.Ref)
	}
	return p
}

// podAddr returns the pod address of the same family as peer.
func podAddr(ips []netip.Addr, peer netip.Addr) netip.Addr {
	for _, a := range ips {
		if a.Is4() == peer.Unmap().Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func observationPoint(ev *events.Event) (int32, flowpb.TraceObservationPoint) {
	switch {
	case ev.EndpointID != 0 && ev.Dir == events.DirIngress:
		return traceToEndpoint, flowpb.TraceObservationPoint_TO_ENDPOINT
	case ev.EndpointID != 0 && ev.Dir == events.DirEgress:
		return traceFromEndpoint, flowpb.TraceObservationPoint_FROM_ENDPOINT
	case ev.Dir == events.DirIngress:
		// Host programs: a packet arriving on an uplink (NodePort).
		return traceFromNetwork, flowpb.TraceObservationPoint_FROM_NETWORK
	case ev.Dir == events.DirEgress:
		return traceToNetwork, flowpb.TraceObservationPoint_TO_NETWORK
	}
	return traceToEndpoint, flowpb.TraceObservationPoint_UNKNOWN_POINT
}

// trafficDirection is the direction of the packet's connection relative
// to the endpoint, as Hubble reports it: the packet's own direction, the
// other one for a reply (a reply leaving a pod belongs to a connection
// into it).
func trafficDirection(dir events.Direction, reply bool) flowpb.TrafficDirection {
	if reply {
		switch dir {
		case events.DirIngress:
			dir = events.DirEgress
		case events.DirEgress:
			dir = events.DirIngress
		}
	}
	switch dir {
	case events.DirIngress:
		return flowpb.TrafficDirection_INGRESS
	case events.DirEgress:
		return flowpb.TrafficDirection_EGRESS
	}
	return flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN
}

func layer3(src, dst netip.Addr) *flowpb.IP {
	src, dst = src.Unmap(), dst.Unmap()
	ip := &flowpb.IP{}
	if src.IsValid() && !src.IsUnspecified() {
		ip.Source = src.String()
	}
	if dst.IsValid() {
		ip.Destination = dst.String()
	}
	switch {
	case dst.Is4():
		ip.IpVersion = flowpb.IPVersion_IPv4
	case dst.Is6():
		ip.IpVersion = flowpb.IPVersion_IPv6
	default:
		return nil
	}
	return ip
}

// L4Proto is the transport a flow's layer4 holds.
type L4Proto uint8

// Transports, as flow.Layer4's oneof names them.
const (
	L4None L4Proto = iota
	L4TCP
	L4UDP
	L4SCTP
	L4ICMPv4
	L4ICMPv6
	L4VRRP
	L4IGMP
)

// l4Proto is the transport of an IP protocol number.
func l4Proto(proto uint8) L4Proto {
	switch proto {
	case unix.IPPROTO_TCP:
		return L4TCP
	case unix.IPPROTO_UDP:
		return L4UDP
	case unix.IPPROTO_SCTP:
		return L4SCTP
	case unix.IPPROTO_ICMP:
		return L4ICMPv4
	case unix.IPPROTO_ICMPV6:
		return L4ICMPv6
	}
	return L4None
}

func layer4(ev *events.Event) *flowpb.Layer4 {
	sport, dport := uint32(ev.Src.Port()), uint32(ev.Dst.Port())
	switch l4Proto(ev.Proto) {
	case L4TCP:
		fl := ev.TCPFlags
		tcp := &flowpb.TCP{SourcePort: sport, DestinationPort: dport}
		if !socketEvent(ev) { // a socket call has no packet, hence no flags
			tcp.Flags = &flowpb.TCPFlags{
				FIN: fl&events.TCPFIN != 0, SYN: fl&events.TCPSYN != 0, RST: fl&events.TCPRST != 0,
				PSH: fl&events.TCPPSH != 0, ACK: fl&events.TCPACK != 0, URG: fl&events.TCPURG != 0,
				ECE: fl&events.TCPECE != 0, CWR: fl&events.TCPCWR != 0,
			}
		}
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: tcp}}
	case L4UDP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}}
	case L4SCTP:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: sport, DestinationPort: dport}}}
	case L4ICMPv4:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: icmpType(ev)}}}
	case L4ICMPv6:
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{}}}
	}
	return nil
}

// socketEvent reports whether the event comes from the socket hooks
// (connect/sendmsg), not from a packet.
func socketEvent(ev *events.Event) bool {
	return ev.Type == events.Translate || ev.CgroupID != 0
}

// ICMPv4 types the datapath's port encoding reveals.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
)

// icmpType infers the ICMP type: the datapath does not report it, but
// keys echo by its identifier, in the source port of a request and the
// destination port of a reply (bpf/lib/parse.h). Other types report 0.
func icmpType(ev *events.Event) uint32 {
	if ev.Src.Port() != 0 && ev.Dst.Port() == 0 {
		return icmpEchoRequest
	}
	return icmpEchoReply
}

// appendL4Summary appends Hubble's summary of the transport: "TCP Flags:
// SYN", "ICMPv4 EchoRequest", "UDP"; for socket translations, the
// frontend.
func appendL4Summary(b []byte, ev *events.Event) []byte {
	switch l4Proto(ev.Proto) {
	case L4TCP:
		if socketEvent(ev) {
			b = append(b, "TCP"...)
		} else {
			b = append(b, tcpFlagsSummary[ev.TCPFlags]...)
		}
	case L4UDP:
		b = append(b, "UDP"...)
	case L4SCTP:
		b = append(b, "SCTP"...)
	case L4ICMPv4:
		switch {
		case ev.Src.Port() != 0 && ev.Dst.Port() == 0:
			b = append(b, "ICMPv4 EchoRequest"...)
		case ev.Src.Port() == 0 && ev.Dst.Port() != 0:
			b = append(b, "ICMPv4 EchoReply"...)
		default:
			b = append(b, "ICMPv4"...)
		}
	case L4ICMPv6:
		b = append(b, "ICMPv6"...)
	default:
		b = append(b, model.ProtocolOf(ev.Proto)...)
	}
	if ev.ServiceID != 0 && ev.VIP.IsValid() && socketEvent(ev) {
		b = append(b, " to service "...)
		b = ev.VIP.AppendTo(b)
	}
	return b
}

// tcpFlagsSummary is "TCP Flags: " and the flags of each flags byte, in
// Hubble's order, made once rather than per flow.
var tcpFlagsSummary = func() (out [256]string) {
	for fl := range out {
		var names []string
		for _, f := range []struct {
			bit  uint8
			name string
		}{
			{events.TCPSYN, "SYN"}, {events.TCPACK, "ACK"}, {events.TCPRST, "RST"}, {events.TCPFIN, "FIN"},
			{events.TCPPSH, "PSH"}, {events.TCPURG, "URG"}, {events.TCPECE, "ECE"}, {events.TCPCWR, "CWR"},
		} {
			if uint8(fl)&f.bit != 0 {
				names = append(names, f.name)
			}
		}
		out[fl] = "TCP Flags: " + strings.Join(names, ", ")
	}
	return out
}()

// Shared is_reply values: flows are never modified, so one message each
// serves them all.
var (
	notReply = wrapperspb.Bool(false)
	isReply  = wrapperspb.Bool(true)
)

func boolValue(v bool) *wrapperspb.BoolValue {
	if v {
		return isReply
	}
	return notReply
}

// noEnricher knows nothing.
type noEnricher struct{}

func (noEnricher) LocalEndpoint(uint32) (Endpoint, bool)              { return Endpoint{}, false }
func (noEnricher) EndpointByIP(netip.Addr) (Endpoint, bool)           { return Endpoint{}, false }
func (noEnricher) EndpointByCgroup(uint64) (Endpoint, bool)           { return Endpoint{}, false }
func (noEnricher) IdentityLabels(identity.ID) (identity.Labels, bool) { return nil, false }
func (noEnricher) Service(uint32) (Service, bool)                     { return Service{}, false }
func (noEnricher) PolicyRule(uint32) (Rule, bool)                     { return Rule{}, false }
