package flow

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/identity"
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

// SluiceDropReasonBase is the first drop reason with no Hubble equivalent
// (SL_DROP_SLUICE_BASE). Reasons below it use flow.DropReason's numbers.
const SluiceDropReasonBase = 1000

// EmitterName is flow.emitter.name of every flow Sluice makes.
const EmitterName = "Sluice"

// Names the datapath package gives its enums (pkg/datapath/names.go);
// convert_test.go checks that they still match.
const (
	eventTrace     = "trace"
	eventDrop      = "drop"
	eventTranslate = "translate"
	eventEnd       = "end"

	dirIngress = "ingress"
	dirEgress  = "egress"

	verdictAllowed    = "allowed"
	verdictRedirected = "redirected"
	verdictDenied     = "denied"
	verdictAudit      = "audit"
)

// Converter turns datapath events into flows. It holds no state of its
// own: Convert is safe for concurrent use if the Enricher is.
type Converter struct {
	// NodeName fills flow.node_name.
	NodeName string
	// ClusterName fills endpoint.cluster_name of pods; may be empty.
	ClusterName string
	// Version fills flow.emitter.version.
	Version string
	// Enricher resolves endpoints, identities, services and rules. It
	// should be set: without it every peer outside the event's own
	// endpoint reads as reserved:world.
	Enricher Enricher
}

// Convert returns the flow of one event. Call it when the event is read:
// enrichment reflects the agent's state at that moment.
func (c *Converter) Convert(ev *datapath.Event) *flowpb.Flow {
	e := c.Enricher
	if e == nil {
		e = noEnricher{}
	}
	f := &flowpb.Flow{
		Time:             timestamppb.New(ev.Time),
		Emitter:          &flowpb.Emitter{Name: EmitterName, Version: c.Version},
		NodeName:         c.NodeName,
		Type:             flowpb.FlowType_L3_L4,
		TrafficDirection: trafficDirection(ev.Dir, ev.Reply),
		L4:               layer4(ev),
	}
	// Socket-LB events: the socket and the calling process's cgroup.
	f.SocketCookie, f.CgroupId = ev.SockCookie, ev.CgroupID
	if ev.IfIndex != 0 {
		f.Interface = &flowpb.NetworkInterface{Index: ev.IfIndex}
	}

	srcAddr, dstAddr := ev.Src.Addr(), ev.Dst.Addr()
	src, srcEP := c.endpoint(e, side{addr: srcAddr, identity: ev.SrcIdentity,
		localID: localIDIf(ev, dirEgress), cgroup: ev.CgroupID})
	dst, _ := c.endpoint(e, side{addr: dstAddr, identity: ev.DstIdentity,
		localID: localIDIf(ev, dirIngress)})
	f.Source, f.Destination = src, dst
	// Socket-LB events have no source address: the connect() has not
	// picked one yet. Show the calling pod's address instead.
	if (!srcAddr.IsValid() || srcAddr.IsUnspecified()) && srcEP.Pod != nil {
		srcAddr = podAddr(srcEP, dstAddr)
	}
	f.IP = layer3(srcAddr, dstAddr)

	if ev.ServiceID != 0 {
		if svc, ok := e.Service(ev.ServiceID); ok {
			f.DestinationService = &flowpb.Service{Namespace: svc.Namespace, Name: svc.Name}
		}
		// The frontend the client addressed: Hubble's flow names the
		// service but has no field for its address and port.
		if ev.VIP.IsValid() {
			SetOriginalDestination(f, ev.VIP)
		}
	}

	var summary []string
	switch ev.Type {
	case eventDrop:
		summary = c.drop(e, ev, f)
	case eventTranslate:
		c.translate(ev, f)
	case eventTrace:
		c.trace(e, ev, f)
	case eventEnd:
		summary = c.end(ev, f)
	default:
		// A type this agent does not know (a newer datapath).
		summary = append(summary, "datapath event "+ev.Type)
	}
	if s := l4Summary(ev, f); s != "" {
		summary = append(summary, s)
	}
	f.Summary = strings.Join(summary, "; ")
	return f
}

// end fills a connection's end: a trace event at the endpoint, forwarded,
// with the totals of both directions in the summary (Hubble's flow has no
// fields for them). Src and Dst are the connection's first packet's.
func (c *Converter) end(ev *datapath.Event, f *flowpb.Flow) []string {
	f.IsReply = wrapperspb.Bool(false)
	f.Verdict = flowpb.Verdict_FORWARDED
	sub, point := observationPoint(ev)
	f.EventType = &flowpb.CiliumEventType{Type: MessageTypeTrace, SubType: sub}
	f.TraceObservationPoint = point
	how := "closed"
	if ev.Expired {
		how = "expired"
	}
	return []string{fmt.Sprintf("connection %s after %s: %d/%d packets, %d/%d bytes (orig/reply)", how,
		ev.Duration.Round(time.Millisecond), ev.PacketsOrig, ev.PacketsReply, ev.BytesOrig, ev.BytesReply)}
}

// trace fills a new connection's first packet: a trace event, or a policy
// verdict event when policy decided it.
func (c *Converter) trace(e Enricher, ev *datapath.Event, f *flowpb.Flow) {
	f.IsReply = wrapperspb.Bool(false) // the first packet of a connection
	f.TraceReason = flowpb.TraceReason_NEW
	if ev.Verdict == "" {
		f.Verdict = flowpb.Verdict_FORWARDED
		sub, point := observationPoint(ev)
		f.EventType = &flowpb.CiliumEventType{Type: MessageTypeTrace, SubType: sub}
		f.TraceObservationPoint = point
		return
	}
	f.EventType = &flowpb.CiliumEventType{Type: MessageTypePolicyVerdict}
	switch ev.Verdict {
	case verdictAllowed:
		f.Verdict = flowpb.Verdict_FORWARDED
	case verdictRedirected:
		f.Verdict = flowpb.Verdict_REDIRECTED
		f.ProxyPort = uint32(ev.ProxyPort)
	case verdictAudit:
		// Denied by policy, forwarded because the agent audits.
		f.Verdict = flowpb.Verdict_AUDIT
	case verdictDenied:
		f.Verdict = flowpb.Verdict_DROPPED
	default:
		f.Verdict = flowpb.Verdict_VERDICT_UNKNOWN
	}
	rule, ok := c.rule(e, ev)
	if !ok {
		return
	}
	f.PolicyMatchType = uint32(rule.MatchType)
	p := policyOf(rule)
	allowed := f.Verdict == flowpb.Verdict_FORWARDED || f.Verdict == flowpb.Verdict_REDIRECTED
	switch {
	case allowed && ruleDirection(rule, f) == flowpb.TrafficDirection_EGRESS:
		f.EgressAllowedBy = []*flowpb.Policy{p}
	case allowed:
		f.IngressAllowedBy = []*flowpb.Policy{p}
	case ruleDirection(rule, f) == flowpb.TrafficDirection_EGRESS:
		f.EgressDeniedBy = []*flowpb.Policy{p}
	default:
		f.IngressDeniedBy = []*flowpb.Policy{p}
	}
}

// drop fills a dropped packet and returns the summary's first parts.
func (c *Converter) drop(e Enricher, ev *datapath.Event, f *flowpb.Flow) []string {
	f.Verdict = flowpb.Verdict_DROPPED
	f.DropReason = uint32(ev.ReasonID)
	// Sub-type is the reason number, as in Cilium's drop notifications.
	// Hubble's printer reads it as a byte: Sluice-only reasons (>= 1000)
	// print as a number there, and by name in the summary.
	f.EventType = &flowpb.CiliumEventType{Type: MessageTypeDrop, SubType: int32(ev.ReasonID)}
	// Known only once conntrack has placed the packet: a drop before
	// that (a malformed packet, a spoofed source) leaves is_reply unset,
	// as Hubble does for drops. A reply keeps the packet's own source and
	// destination (the server, the client).
	if ev.Tracked {
		f.IsReply = wrapperspb.Bool(ev.Reply)
		f.Reply = ev.Reply
	}
	var summary []string
	f.DropReasonDesc = DropReason(ev.ReasonID)
	if f.DropReasonDesc == flowpb.DropReason_DROP_REASON_UNKNOWN && ev.ReasonID != 0 {
		summary = append(summary, dropReasonName(ev))
	}
	if ev.Verdict == verdictDenied {
		if rule, ok := c.rule(e, ev); ok {
			p := policyOf(rule)
			if ruleDirection(rule, f) == flowpb.TrafficDirection_EGRESS {
				f.EgressDeniedBy = []*flowpb.Policy{p}
			} else {
				f.IngressDeniedBy = []*flowpb.Policy{p}
			}
		}
	}
	return summary
}

// translate fills a socket-LB translation: connect() or sendmsg() to a
// service frontend, rewritten to a backend. Hubble reports these as SOCK
// flows at the post-translation point: the destination is the backend,
// the frontend is in destination_service and the summary.
func (c *Converter) translate(ev *datapath.Event, f *flowpb.Flow) {
	f.Type = flowpb.FlowType_SOCK
	f.Verdict = flowpb.Verdict_TRANSLATED
	point := flowpb.SocketTranslationPoint_SOCK_XLATE_POINT_POST_DIRECTION_FWD
	f.EventType = &flowpb.CiliumEventType{Type: MessageTypeTraceSock, SubType: int32(point)}
	f.SockXlatePoint = point
}

// DropReason returns Hubble's drop reason for a datapath reason number:
// the same number for reasons Hubble knows, DROP_REASON_UNKNOWN for
// Sluice-only reasons (>= SluiceDropReasonBase) and unknown numbers.
func DropReason(id uint16) flowpb.DropReason {
	if id >= SluiceDropReasonBase {
		return flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	if _, ok := flowpb.DropReason_name[int32(id)]; !ok {
		return flowpb.DropReason_DROP_REASON_UNKNOWN
	}
	return flowpb.DropReason(id)
}

func dropReasonName(ev *datapath.Event) string {
	if ev.Reason != "" && !strings.HasPrefix(ev.Reason, "unknown") {
		return ev.Reason
	}
	return fmt.Sprintf("drop reason %d", ev.ReasonID)
}

// rule resolves the event's deciding rule; rule 0 is the default deny (or
// an allow without a rule, such as an unenforced direction).
func (c *Converter) rule(e Enricher, ev *datapath.Event) (Rule, bool) {
	if ev.PolicyRule == 0 {
		return Rule{}, false
	}
	return e.PolicyRule(ev.PolicyRule)
}

func ruleDirection(r Rule, f *flowpb.Flow) flowpb.TrafficDirection {
	if r.Direction != flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN {
		return r.Direction
	}
	return f.TrafficDirection
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
	return p
}

// side is one end of an event as the datapath saw it.
type side struct {
	addr     netip.Addr
	identity uint32 // from the datapath; 0 if the event carries none
	localID  uint32 // the endpoint the event was observed at, if this end
	cgroup   uint64 // the calling process's cgroup (socket events, source)
}

// localIDIf returns the event's endpoint ID when the endpoint is the end
// that the direction names: the source of egress, the destination of
// ingress. Host programs (on uplinks) report endpoint 0.
func localIDIf(ev *datapath.Event, dir string) uint32 {
	if ev.Dir == dir {
		return ev.EndpointID
	}
	return 0
}

// endpoint resolves one end: the local endpoint by ID, the caller by
// cgroup, anything else by address. Identities from the datapath win over
// the agent's, as in Hubble: they are what the decision was made with.
func (c *Converter) endpoint(e Enricher, s side) (*flowpb.Endpoint, Endpoint) {
	var ep Endpoint
	ok := false
	if s.localID != 0 {
		ep, ok = e.LocalEndpoint(s.localID)
	}
	if !ok && s.cgroup != 0 {
		ep, ok = e.EndpointByCgroup(s.cgroup)
	}
	if !ok && s.addr.IsValid() && !s.addr.IsUnspecified() {
		ep, ok = e.EndpointByIP(s.addr.Unmap())
	}

	id := identity.ID(s.identity)
	if id.IsLocalCIDR() {
		// A CIDR class of one endpoint's policy: meaningless elsewhere.
		id = identity.Unknown
	}
	switch {
	case id != identity.Unknown:
	case ok:
		id = ep.Identity
	case s.addr.IsValid() && !s.addr.IsUnspecified():
		id = identity.World // not in the cluster
	}

	out := &flowpb.Endpoint{ID: ep.ID, Identity: uint32(id)}
	if !ok && s.localID != 0 {
		out.ID = s.localID
	}
	if ep.Pod != nil {
		out.Namespace, out.PodName = ep.Pod.Namespace, ep.Pod.Name
		out.ClusterName = c.ClusterName
		if w, ok := WorkloadOf(ep.Pod); ok {
			out.Workloads = []*flowpb.Workload{w}
		}
	}
	out.Labels = labelsOf(e, ep, id)
	return out, ep
}

// labelsOf returns an endpoint's labels in Hubble's "source:key=value"
// form, sorted: the agent's labels for the endpoint, else those of the
// identity (reserved ones are fixed), else the pod's own labels.
func labelsOf(e Enricher, ep Endpoint, id identity.ID) []string {
	if len(ep.Labels) > 0 {
		return ep.Labels.Strings()
	}
	if ls, ok := identity.ReservedLabels(id); ok {
		return ls.Strings()
	}
	if id != identity.Unknown {
		if ls, ok := e.IdentityLabels(id); ok && len(ls) > 0 {
			return ls.Strings()
		}
	}
	if ep.Pod != nil {
		s := identity.SubjectOf(ep.Pod, nil)
		return s.Labels().Strings()
	}
	return nil
}

// podAddr returns the pod address of the same family as peer.
func podAddr(ep Endpoint, peer netip.Addr) netip.Addr {
	for _, a := range ep.Pod.IPs {
		if a.Is4() == peer.Unmap().Is4() {
			return a
		}
	}
	return netip.Addr{}
}

func observationPoint(ev *datapath.Event) (int32, flowpb.TraceObservationPoint) {
	switch {
	case ev.EndpointID != 0 && ev.Dir == dirIngress:
		return traceToEndpoint, flowpb.TraceObservationPoint_TO_ENDPOINT
	case ev.EndpointID != 0 && ev.Dir == dirEgress:
		return traceFromEndpoint, flowpb.TraceObservationPoint_FROM_ENDPOINT
	case ev.Dir == dirIngress:
		// Host programs: a packet arriving on an uplink (NodePort).
		return traceFromNetwork, flowpb.TraceObservationPoint_FROM_NETWORK
	case ev.Dir == dirEgress:
		return traceToNetwork, flowpb.TraceObservationPoint_TO_NETWORK
	}
	return traceToEndpoint, flowpb.TraceObservationPoint_UNKNOWN_POINT
}

// trafficDirection is the direction of the packet's connection relative
// to the endpoint, as Hubble reports it: the packet's own direction, the
// other one for a reply (a reply leaving a pod belongs to a connection
// into it).
func trafficDirection(dir string, reply bool) flowpb.TrafficDirection {
	if reply {
		switch dir {
		case dirIngress:
			dir = dirEgress
		case dirEgress:
			dir = dirIngress
		}
	}
	switch dir {
	case dirIngress:
		return flowpb.TrafficDirection_INGRESS
	case dirEgress:
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

// TCP header flag bits (the 14th byte of the header).
const (
	tcpFIN = 1 << iota
	tcpSYN
	tcpRST
	tcpPSH
	tcpACK
	tcpURG
	tcpECE
	tcpCWR
)

func layer4(ev *datapath.Event) *flowpb.Layer4 {
	sport, dport := uint32(ev.Src.Port()), uint32(ev.Dst.Port())
	switch ev.Proto {
	case "TCP":
		fl := ev.TCPFlags
		tcp := &flowpb.TCP{SourcePort: sport, DestinationPort: dport}
		if !socketEvent(ev) { // a socket call has no packet, hence no flags
			tcp.Flags = &flowpb.TCPFlags{
				FIN: fl&tcpFIN != 0, SYN: fl&tcpSYN != 0, RST: fl&tcpRST != 0,
				PSH: fl&tcpPSH != 0, ACK: fl&tcpACK != 0, URG: fl&tcpURG != 0,
				ECE: fl&tcpECE != 0, CWR: fl&tcpCWR != 0,
			}
		}
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: tcp}}
	case "UDP":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}}
	case "SCTP":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{SourcePort: sport, DestinationPort: dport}}}
	case "ICMP":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: icmpType(ev)}}}
	case "ICMPv6":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{}}}
	}
	return nil
}

// socketEvent reports whether the event comes from the socket hooks
// (connect/sendmsg), not from a packet.
func socketEvent(ev *datapath.Event) bool {
	return ev.Type == eventTranslate || ev.CgroupID != 0
}

// ICMPv4 types the datapath's port encoding reveals.
const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
)

// icmpType infers the ICMP type: the datapath does not report it, but
// keys echo by its identifier, in the source port of a request and the
// destination port of a reply (bpf/lib/parse.h). Other types report 0.
func icmpType(ev *datapath.Event) uint32 {
	if ev.Src.Port() != 0 && ev.Dst.Port() == 0 {
		return icmpEchoRequest
	}
	return icmpEchoReply
}

// l4Summary is Hubble's summary of the transport: "TCP Flags: SYN",
// "ICMPv4 EchoRequest", "UDP"; for socket translations, the frontend.
func l4Summary(ev *datapath.Event, f *flowpb.Flow) string {
	l4 := f.GetL4()
	var s string
	switch {
	case l4.GetTCP() != nil && l4.GetTCP().GetFlags() != nil:
		s = "TCP Flags: " + tcpFlagsString(l4.GetTCP().GetFlags())
	case l4.GetTCP() != nil:
		s = "TCP"
	case l4.GetUDP() != nil:
		s = "UDP"
	case l4.GetSCTP() != nil:
		s = "SCTP"
	case l4.GetICMPv4() != nil && ev.Src.Port() != 0 && ev.Dst.Port() == 0:
		s = "ICMPv4 EchoRequest"
	case l4.GetICMPv4() != nil && ev.Src.Port() == 0 && ev.Dst.Port() != 0:
		s = "ICMPv4 EchoReply"
	case l4.GetICMPv4() != nil:
		s = "ICMPv4"
	case l4.GetICMPv6() != nil:
		s = "ICMPv6"
	default:
		s = ev.Proto
	}
	if ev.ServiceID != 0 && ev.VIP.IsValid() && socketEvent(ev) {
		s += " to service " + ev.VIP.String()
	}
	return s
}

// tcpFlagsString lists the flags in Hubble's order.
func tcpFlagsString(fl *flowpb.TCPFlags) string {
	var out []string
	for _, f := range []struct {
		set  bool
		name string
	}{
		{fl.SYN, "SYN"}, {fl.ACK, "ACK"}, {fl.RST, "RST"}, {fl.FIN, "FIN"},
		{fl.PSH, "PSH"}, {fl.URG, "URG"}, {fl.ECE, "ECE"}, {fl.CWR, "CWR"}, {fl.NS, "NS"},
	} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return strings.Join(out, ", ")
}

// noEnricher knows nothing.
type noEnricher struct{}

func (noEnricher) LocalEndpoint(uint32) (Endpoint, bool)              { return Endpoint{}, false }
func (noEnricher) EndpointByIP(netip.Addr) (Endpoint, bool)           { return Endpoint{}, false }
func (noEnricher) EndpointByCgroup(uint64) (Endpoint, bool)           { return Endpoint{}, false }
func (noEnricher) IdentityLabels(identity.ID) (identity.Labels, bool) { return nil, false }
func (noEnricher) Service(uint32) (Service, bool)                     { return Service{}, false }
func (noEnricher) PolicyRule(uint32) (Rule, bool)                     { return Rule{}, false }
