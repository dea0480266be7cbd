package agent

import (
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
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
