package agent

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

// The API's own wire types say on the socket exactly what the parts' types
// said when the API borrowed them: `sluice service list -o json` and
// `sluice status -o json` read the same documents as before, and scripts
// around them keep working.
func TestAPIWireFormUnchanged(t *testing.T) {
	web := model.NamespacedName{Namespace: "default", Name: "web"}
	backend := func(id uint32, ap string, state service.BackendState) service.Backend {
		a := netip.MustParseAddrPort(ap)
		return service.Backend{ID: id, Address: a.Addr(), Port: a.Port(), Protocol: model.ProtocolTCP, State: state}
	}
	// One backend with every field set, one with the optional ones empty.
	full := backend(11, "10.244.1.5:8080", service.BackendActive)
	full.NodeName, full.Pod, full.Zone = "node-1", model.NamespacedName{Namespace: "default", Name: "web-1"}, "a"
	d := &service.Desired{
		MaglevTableSize: 7,
		Frontends: []service.Frontend{{
			ID: 1, Service: web, PortName: "http", Kind: service.KindClusterIP,
			Address: netip.MustParseAddr("10.96.0.10"), Port: 80, Protocol: model.ProtocolTCP,
			Algorithm: service.AlgorithmMaglev, SessionAffinity: true, AffinityTimeout: 10800, TrafficPolicyLocal: true,
			Backends: []service.Backend{full, backend(12, "10.244.2.7:8080", service.BackendTerminating)},
			Maglev:   []uint32{11, 11, 11, 11, 11, 11, 11},
		}, {
			ID: 2, Service: web, Kind: service.KindLoadBalancer,
			Address: netip.MustParseAddr("192.0.2.80"), Port: 80, Protocol: model.ProtocolTCP, Algorithm: service.AlgorithmRandom,
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, ClusterFrontendID: 1,
			NoEndpoints: true, NoLocalEndpoints: true,
		}},
	}
	// The form before: api.Services held the service package's types.
	type servicesBefore struct {
		Frontends       []service.Frontend      `json:"frontends"`
		MaglevTableSize uint32                  `json:"maglevTableSize"`
		Memory          []service.ServiceMemory `json:"memory,omitempty"`
	}
	requireSameJSON(t, servicesBefore{Frontends: d.Frontends, MaglevTableSize: d.MaglevTableSize, Memory: d.MemoryPerService()}, apiServices(d))
	requireSameJSON(t, servicesBefore{Frontends: []service.Frontend{}}, apiServices(nil))
	requireSameJSON(t, servicesBefore{}, apiServices(&service.Desired{}))

	pressure := []datapath.MapPressure{{Map: datapath.MapCT, Entries: 5, Max: 65536, Live: 4}, {Map: "sl_endpoints", Entries: 2, Max: 1024}}
	requireSameJSON(t, pressure, apiMapPressure(pressure))
	nat := []datapath.NATUsage{{Address: "172.31.0.10", Proto: "TCP", PortsInUse: 3, PortsTotal: 28232}}
	requireSameJSON(t, nat, apiNATUsage(nat))
}

func requireSameJSON(t *testing.T, before, now any) {
	t.Helper()
	b, err := json.Marshal(before)
	require.NoError(t, err)
	n, err := json.Marshal(now)
	require.NoError(t, err)
	require.JSONEq(t, string(b), string(n))
}
