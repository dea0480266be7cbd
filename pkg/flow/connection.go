package flow

import (
	"net/netip"
	"path"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/sluice-net/sluice/pkg/model"
)

// Connection is a connection a flow shows, turned from its client to its
// server: what policy tools (`sluice policy suggest`, trace --what-if)
// read flows as. It works on Sluice's flows and on Cilium's Hubble flows.
type Connection struct {
	Client, Server ConnectionEnd
	// Protocol is TCP, UDP or SCTP; Port the server's port (the backend's,
	// for a connection to a service).
	Protocol model.Protocol
	Port     uint16
	Time     time.Time
	Verdict  flowpb.Verdict
	// Service is the service the client addressed, if the flow names it.
	Service *flowpb.Service
	// Flow is the flow it was read from.
	Flow *flowpb.Flow
}

// ConnectionEnd is one end of a Connection.
type ConnectionEnd struct {
	Addr netip.Addr
	Port uint16
	// Endpoint is the flow's description of the end (pod, labels,
	// workloads, identity); never nil.
	Endpoint *flowpb.Endpoint
}

// ConnectionKey identifies a connection by its 5-tuple, so that the
// several flows of one connection (its start, its end, both nodes' views)
// count once.
type ConnectionKey struct {
	Client, Server netip.AddrPort
	Protocol       model.Protocol
}

// Key returns the connection's 5-tuple.
func (c *Connection) Key() ConnectionKey {
	return ConnectionKey{
		Client:   netip.AddrPortFrom(c.Client.Addr, c.Client.Port),
		Server:   netip.AddrPortFrom(c.Server.Addr, c.Server.Port),
		Protocol: c.Protocol,
	}
}

// ConnectionOf reads the connection a flow shows: a flow of a TCP, UDP or
// SCTP connection that went through (forwarded, redirected to the proxy,
// or audited: policy would have denied it), with both addresses. A reply
// is turned around. Drops, socket-LB translations (the connection's own
// flows follow), L7 requests (their connection's L4 flows show it) and
// other transports are not connections: false.
func ConnectionOf(f *flowpb.Flow) (Connection, bool) {
	switch f.GetVerdict() {
	case flowpb.Verdict_FORWARDED, flowpb.Verdict_REDIRECTED, flowpb.Verdict_AUDIT:
	default:
		return Connection{}, false
	}
	if f.GetL7() != nil {
		return Connection{}, false
	}
	var (
		proto        model.Protocol
		sport, dport uint32
	)
	switch l4 := f.GetL4(); {
	case l4.GetTCP() != nil:
		proto, sport, dport = model.ProtocolTCP, l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
	case l4.GetUDP() != nil:
		proto, sport, dport = model.ProtocolUDP, l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
	case l4.GetSCTP() != nil:
		proto, sport, dport = model.ProtocolSCTP, l4.GetSCTP().GetSourcePort(), l4.GetSCTP().GetDestinationPort()
	default:
		return Connection{}, false
	}
	src, err1 := netip.ParseAddr(f.GetIP().GetSource())
	dst, err2 := netip.ParseAddr(f.GetIP().GetDestination())
	if err1 != nil || err2 != nil || dport == 0 || dport > 0xffff || sport > 0xffff {
		return Connection{}, false
	}
	c := Connection{
		Client:   ConnectionEnd{Addr: src.Unmap(), Port: uint16(sport), Endpoint: endpointOrEmpty(f.GetSource())},
		Server:   ConnectionEnd{Addr: dst.Unmap(), Port: uint16(dport), Endpoint: endpointOrEmpty(f.GetDestination())},
		Protocol: proto, Port: uint16(dport), Verdict: f.GetVerdict(), Flow: f,
	}
	if f.GetIsReply().GetValue() {
		c.Client, c.Server = c.Server, c.Client
		c.Port = c.Server.Port
	} else if s := f.GetDestinationService(); s.GetName() != "" {
		c.Service = s
	}
	if t := f.GetTime(); t.IsValid() {
		c.Time = t.AsTime()
	}
	return c, true
}

func endpointOrEmpty(ep *flowpb.Endpoint) *flowpb.Endpoint {
	if ep == nil {
		return &flowpb.Endpoint{}
	}
	return ep
}

// String describes the connection for people:
// "shop/web-1 10.0.0.1:40312 -> shop/db-0 10.0.0.2:5432 TCP", with the
// service the client addressed, if any.
func (c *Connection) String() string {
	end := func(e ConnectionEnd) string {
		s := netip.AddrPortFrom(e.Addr, e.Port).String()
		if p := e.Endpoint.GetPodName(); p != "" {
			return path.Join(e.Endpoint.GetNamespace(), p) + " " + s
		}
		return s
	}
	s := end(c.Client) + " -> " + end(c.Server) + " " + string(c.Protocol)
	if c.Service != nil {
		s += " (service " + path.Join(c.Service.GetNamespace(), c.Service.GetName()) + ")"
	}
	return s
}
