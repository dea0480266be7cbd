package flow

import (
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/datapath/events"
)

// View is a stored entry as flow filters read it: the facts of the flow
// it stands for, read off the record without building the flow, or off a
// prebuilt flow. Every answer is the one the built flow gives
// (TestViewIsTheBuiltFlow); filtering a record costs no allocation.
//
// Fill one with Entry.View or ViewOf; a View is reused from entry to
// entry by the caller.
type View struct {
	flow *flowpb.Flow // a prebuilt flow; nil for a record
	ev   events.Event
	refs
	conv *Converter
}

// ViewOf is the view of a prebuilt flow.
func ViewOf(f *flowpb.Flow) View { return View{flow: f} }

func (v *View) setRecord(r *Record) {
	v.flow = nil
	v.ev = r.event()
	v.refs = r.refs
	v.conv = r.conv
}

// Time is the flow's time.
func (v *View) Time() time.Time {
	if v.flow != nil {
		return v.flow.GetTime().AsTime()
	}
	return v.ev.Time
}

// NodeName is flow.node_name.
func (v *View) NodeName() string {
	if v.flow != nil {
		return v.flow.GetNodeName()
	}
	return v.conv.NodeName
}

// shownIPs are the addresses flow.IP holds (layer3): invalid where it
// holds none.
func (v *View) shownIPs() (src, dst netip.Addr) {
	dst = v.ev.Dst.Addr().Unmap()
	if !dst.IsValid() {
		return netip.Addr{}, netip.Addr{}
	}
	src = sourceAddr(&v.ev, v.refs).Unmap()
	if !src.IsValid() || src.IsUnspecified() {
		src = netip.Addr{}
	}
	return src, dst
}

func parseIP(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// SourceIP is the flow's source address; invalid when it shows none.
func (v *View) SourceIP() netip.Addr {
	if v.flow != nil {
		return parseIP(v.flow.GetIP().GetSource())
	}
	src, _ := v.shownIPs()
	return src
}

// DestinationIP is the flow's destination address; invalid when it shows
// none.
func (v *View) DestinationIP() netip.Addr {
	if v.flow != nil {
		return parseIP(v.flow.GetIP().GetDestination())
	}
	_, dst := v.shownIPs()
	return dst
}

// SourceIPXlated is flow.IP.source_xlated; Sluice's flows have none.
func (v *View) SourceIPXlated() netip.Addr {
	if v.flow != nil {
		return parseIP(v.flow.GetIP().GetSourceXlated())
	}
	return netip.Addr{}
}

// IPVersion is flow.IP.ipVersion.
func (v *View) IPVersion() flowpb.IPVersion {
	if v.flow != nil {
		return v.flow.GetIP().GetIpVersion()
	}
	switch _, dst := v.shownIPs(); {
	case dst.Is4():
		return flowpb.IPVersion_IPv4
	case dst.Is6():
		return flowpb.IPVersion_IPv6
	}
	return flowpb.IPVersion_IP_NOT_USED
}

// Source is the flow's source endpoint (nil if none); shared, read-only.
func (v *View) Source() *flowpb.Endpoint {
	if v.flow != nil {
		return v.flow.GetSource()
	}
	return v.src.endpoint()
}

// Destination is the flow's destination endpoint (nil if none).
func (v *View) Destination() *flowpb.Endpoint {
	if v.flow != nil {
		return v.flow.GetDestination()
	}
	return v.dst.endpoint()
}

// SourceService is flow.source_service; Sluice's flows have none.
func (v *View) SourceService() *flowpb.Service {
	if v.flow != nil {
		return v.flow.GetSourceService()
	}
	return nil
}

// DestinationService is the service a translated flow was addressed to.
func (v *View) DestinationService() *flowpb.Service {
	if v.flow != nil {
		return v.flow.GetDestinationService()
	}
	if v.svc == nil {
		return nil
	}
	return v.svc.service
}

// L4 is the flow's transport and, for TCP, UDP and SCTP, its ports.
func (v *View) L4() (p L4Proto, sport, dport uint32) {
	if v.flow != nil {
		l4 := v.flow.GetL4()
		switch {
		case l4.GetTCP() != nil:
			return L4TCP, l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
		case l4.GetUDP() != nil:
			return L4UDP, l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
		case l4.GetSCTP() != nil:
			return L4SCTP, l4.GetSCTP().GetSourcePort(), l4.GetSCTP().GetDestinationPort()
		case l4.GetICMPv4() != nil:
			return L4ICMPv4, 0, 0
		case l4.GetICMPv6() != nil:
			return L4ICMPv6, 0, 0
		case l4.GetVRRP() != nil:
			return L4VRRP, 0, 0
		case l4.GetIGMP() != nil:
			return L4IGMP, 0, 0
		}
		return L4None, 0, 0
	}
	switch p := l4Proto(v.ev.Proto); p {
	case L4TCP, L4UDP, L4SCTP:
		return p, uint32(v.ev.Src.Port()), uint32(v.ev.Dst.Port())
	default:
		return p, 0, 0
	}
}

// TCP flag bits of TCPFlags: the datapath's (enum sl_tcp_flag), and NS
// above the flags byte, which flow.TCPFlags has and the datapath never
// reports.
const (
	TCPFlagFIN = uint16(events.TCPFIN)
	TCPFlagSYN = uint16(events.TCPSYN)
	TCPFlagRST = uint16(events.TCPRST)
	TCPFlagPSH = uint16(events.TCPPSH)
	TCPFlagACK = uint16(events.TCPACK)
	TCPFlagURG = uint16(events.TCPURG)
	TCPFlagECE = uint16(events.TCPECE)
	TCPFlagCWR = uint16(events.TCPCWR)
	TCPFlagNS  = TCPFlagCWR << 1
)

// TCPFlagBits is a flow.TCPFlags message as TCPFlag* bits.
func TCPFlagBits(fl *flowpb.TCPFlags) uint16 {
	var b uint16
	for _, f := range []struct {
		set bool
		bit uint16
	}{
		{fl.GetFIN(), TCPFlagFIN}, {fl.GetSYN(), TCPFlagSYN}, {fl.GetRST(), TCPFlagRST}, {fl.GetPSH(), TCPFlagPSH},
		{fl.GetACK(), TCPFlagACK}, {fl.GetURG(), TCPFlagURG}, {fl.GetECE(), TCPFlagECE}, {fl.GetCWR(), TCPFlagCWR},
		{fl.GetNS(), TCPFlagNS},
	} {
		if f.set {
			b |= f.bit
		}
	}
	return b
}

// TCPFlags are the TCP flags of the flow's packet (TCPFlag* bits); ok is
// false when the flow has none (not TCP, or a socket call).
func (v *View) TCPFlags() (bits uint16, ok bool) {
	if v.flow != nil {
		fl := v.flow.GetL4().GetTCP().GetFlags()
		if fl == nil {
			return 0, false
		}
		return TCPFlagBits(fl), true
	}
	if l4Proto(v.ev.Proto) != L4TCP || socketEvent(&v.ev) {
		return 0, false
	}
	// The datapath's byte is the header's: FIN is bit 0 ... CWR bit 7.
	return uint16(v.ev.TCPFlags), true
}

// L7 reports a DNS or HTTP record; Sluice's datapath flows have none.
func (v *View) L7() (dns, http bool) {
	if v.flow != nil {
		l7 := v.flow.GetL7()
		return l7.GetDns() != nil, l7.GetHttp() != nil
	}
	return false, false
}

// HTTP is the flow's HTTP record (an L7 flow of the node's proxy), nil
// for other flows.
func (v *View) HTTP() *flowpb.HTTP {
	if v.flow != nil {
		return v.flow.GetL7().GetHttp()
	}
	return nil
}

// TraceID is the flow's trace ID (trace_context.parent.trace_id), empty
// for flows without one; Sluice's datapath flows have none.
func (v *View) TraceID() string {
	if v.flow != nil {
		return v.flow.GetTraceContext().GetParent().GetTraceId()
	}
	return ""
}

// Verdict is the flow's verdict.
func (v *View) Verdict() flowpb.Verdict {
	if v.flow != nil {
		return v.flow.GetVerdict()
	}
	return shapeOf(&v.ev, v.refs).verdict
}

// DropReasonDesc is the drop reason in Hubble's terms.
func (v *View) DropReasonDesc() flowpb.DropReason {
	if v.flow != nil {
		return v.flow.GetDropReasonDesc()
	}
	return shapeOf(&v.ev, v.refs).dropReasonDesc
}

// TrafficDirection is the flow's traffic direction.
func (v *View) TrafficDirection() flowpb.TrafficDirection {
	if v.flow != nil {
		return v.flow.GetTrafficDirection()
	}
	return trafficDirection(v.ev.Dir, v.ev.Reply)
}

// EventType is flow.event_type: the monitor message type and sub-type;
// ok is false when the flow has none.
func (v *View) EventType() (typ, sub int32, ok bool) {
	if v.flow != nil {
		et := v.flow.GetEventType()
		return et.GetType(), et.GetSubType(), et != nil
	}
	sh := shapeOf(&v.ev, v.refs)
	return sh.etType, sh.etSub, sh.eventType
}

// IsReply is flow.is_reply; known is false when the flow leaves it unset.
func (v *View) IsReply() (reply, known bool) {
	if v.flow != nil {
		r := v.flow.GetIsReply()
		return r.GetValue(), r != nil
	}
	sh := shapeOf(&v.ev, v.refs)
	return sh.isReply, sh.isReplySet
}
