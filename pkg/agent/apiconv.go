package agent

import (
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policytrace"
	"github.com/sluice-net/sluice/pkg/service"
)

// The local API's wire types (pkg/api) from the parts' own types: the one
// place where an internal type becomes API, so that the API changes only
// here and on purpose.

// apiServices is the computed service table with its Maglev memory; d is
// nil before the service reconciler's first pass.
func apiServices(d *service.Desired) api.Services {
	out := api.Services{Frontends: []api.Frontend{}}
	if d == nil {
		return out
	}
	out.Frontends = convertAll(d.Frontends, apiFrontend)
	out.MaglevTableSize = d.MaglevTableSize
	out.Memory = convertAll(d.MemoryPerService(), func(m service.ServiceMemory) api.ServiceMemory {
		return api.ServiceMemory{Service: apiName(m.Service), Tables: m.Tables, Bytes: m.Bytes}
	})
	return out
}

func apiFrontend(f service.Frontend) api.Frontend {
	out := api.Frontend{
		ID: f.ID, Service: apiName(f.Service), PortName: f.PortName, Kind: string(f.Kind),
		Address: f.Address, Port: f.Port, Protocol: string(f.Protocol), Algorithm: string(f.Algorithm),
		SessionAffinity: f.SessionAffinity, AffinityTimeout: f.AffinityTimeout, TrafficPolicyLocal: f.TrafficPolicyLocal,
		SourceRanges: f.SourceRanges, ClusterFrontendID: f.ClusterFrontendID,
		NoEndpoints: f.NoEndpoints, NoLocalEndpoints: f.NoLocalEndpoints,
	}
	out.Backends = convertAll(f.Backends, func(b service.Backend) api.Backend {
		return api.Backend{ID: b.ID, Address: b.Address, Port: b.Port, Protocol: string(b.Protocol),
			NodeName: b.NodeName, Pod: apiName(b.Pod), Zone: b.Zone, State: string(b.State)}
	})
	return out
}

func apiName(n model.NamespacedName) api.NamespacedName {
	return api.NamespacedName{Namespace: n.Namespace, Name: n.Name}
}

func apiMapPressure(ps []datapath.MapPressure) []api.MapPressure {
	return convertAll(ps, func(p datapath.MapPressure) api.MapPressure {
		return api.MapPressure{Map: p.Map, Entries: p.Entries, Max: p.Max, Live: p.Live}
	})
}

func apiNATUsage(us []datapath.NATUsage) []api.NATUsage {
	return convertAll(us, func(u datapath.NATUsage) api.NATUsage {
		return api.NATUsage{Address: u.Address, Proto: u.Proto, PortsInUse: u.PortsInUse, PortsTotal: u.PortsTotal}
	})
}

// apiTrace is a policy trace's answer.
func apiTrace(r *policytrace.Result) *api.PolicyTrace {
	if r == nil {
		return nil
	}
	out := &api.PolicyTrace{From: apiTraceEnd(r.From), To: apiTraceEnd(r.To), Protocol: string(r.Protocol), Port: r.Port,
		Verdict: r.Verdict, Problems: r.Problems, Paths: convertAll(r.Paths, apiTracePath)}
	if out.Paths == nil {
		out.Paths = []api.TracePath{}
	}
	if h := r.Service; h != nil {
		out.Service = &api.TraceService{Service: apiName(h.Service), Frontend: h.Frontend, Kind: h.Kind,
			MapBackends: h.MapBackends, MapsRead: h.MapsRead,
			Backends: convertAll(h.Backends, func(b policytrace.Backend) api.TraceBackend {
				return api.TraceBackend{Address: b.Address, Pod: apiName(b.Pod), Node: b.Node}
			})}
		if out.Service.Backends == nil {
			out.Service.Backends = []api.TraceBackend{}
		}
	}
	return out
}

func apiTraceEnd(e policytrace.End) api.TraceEnd {
	return api.TraceEnd{Kind: e.Kind, Name: e.Name, Address: e.Address, Node: e.Node, Local: e.Local,
		Identity: uint32(e.Identity), Labels: e.Labels}
}

func apiTracePath(p policytrace.Path) api.TracePath {
	return api.TracePath{To: apiTraceEnd(p.To), Port: p.Port, Egress: apiTraceDecision(p.Egress),
		Ingress: apiTraceDecision(p.Ingress), Verdict: p.Verdict}
}

func apiTraceDecision(d *policytrace.Decision) *api.TraceDecision {
	if d == nil {
		return nil
	}
	out := &api.TraceDecision{Endpoint: apiName(d.Endpoint), Node: d.Node, Local: d.Local, Direction: d.Direction,
		Peer: uint32(d.Peer), PeerLabels: d.PeerLabels, Enforced: d.Enforced, Audit: d.Audit, Verdict: d.Verdict,
		Rule: d.Rule, RuleID: d.RuleID, Tier: d.Tier, Entry: d.Entry, ProxyPort: d.ProxyPort}
	if m := d.Maps; m != nil {
		out.Maps = &api.TraceMapCheck{EndpointID: m.EndpointID, Flags: m.Flags, Peer: uint32(m.Peer), Verdict: m.Verdict,
			Rule: m.Rule, RuleID: m.RuleID, Entry: m.Entry, Agrees: m.Agrees}
	}
	return out
}

// apiWhatIf is what a manifest of policies would change.
func apiWhatIf(w *policytrace.WhatIf) *api.PolicyWhatIf {
	if w == nil {
		return nil
	}
	out := &api.PolicyWhatIf{Policies: w.Policies, Replaced: w.Replaced, Trace: apiTrace(w.Trace), Connections: w.Connections,
		Denied: convertAll(w.Denied, func(g policytrace.DeniedGroup) api.WhatIfDenied {
			return api.WhatIfDenied{From: g.From, To: g.To, Protocol: string(g.Protocol), Port: g.Port, At: g.At, Now: g.Now,
				Count: g.Count, First: g.First, Last: g.Last, Example: g.Example}
		})}
	if out.Denied == nil {
		out.Denied = []api.WhatIfDenied{}
	}
	return out
}

// convertAll converts every element; nil stays nil.
func convertAll[T, U any](in []T, convert func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, x := range in {
		out[i] = convert(x)
	}
	return out
}
