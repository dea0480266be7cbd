package reconcilers

// The assembled reconcilers over a loaded datapath: a model with a service
// whose one endpoint is a pod of this node reaches the maps.
//
//	model.Store ──► servicesync ──► sl_lb_svc 10.96.0.10:80 → 10.244.1.5:8080 (local)
//	            └─► policysync ───► sl_ipcache 10.244.1.5 → the pod's identity

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
)

func TestSetProgramsTheModel(t *testing.T) {
	dp := datapathtest.Load(t, datapath.Config{})
	m := dp.Maps()
	vip := netip.MustParseAddr("10.96.0.10")
	podIP := netip.MustParseAddr("10.244.1.5")
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "shop"}},
		{Op: model.OpUpsert, Object: &model.Node{Name: "node-1", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "172.31.0.10"}}}},
		{Op: model.OpUpsert, Object: &model.Pod{Namespace: "shop", Name: "web-1", NodeName: "node-1", Phase: model.PodRunning,
			IPs: []netip.Addr{podIP}, Labels: map[string]string{"app": "web"}}},
		{Op: model.OpUpsert, Object: &model.Service{Namespace: "shop", Name: "web", Type: model.ServiceTypeClusterIP,
			ClusterIPs: []netip.Addr{vip}, Ports: []model.ServicePort{{Name: "http", Protocol: model.ProtocolTCP, Port: 80}},
			SessionAffinity: model.SessionAffinityNone, InternalTrafficPolicy: model.TrafficPolicyCluster, ExternalTrafficPolicy: model.TrafficPolicyCluster}},
		{Op: model.OpUpsert, Object: &model.EndpointSlice{Namespace: "shop", Name: "web-abcde", ServiceName: "web", AddressType: model.AddressTypeIPv4,
			Ports:     []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}},
			Endpoints: []model.Endpoint{{Addresses: []netip.Addr{podIP}, Ready: true, Serving: true, NodeName: "node-1"}}}},
	})
	require.NoError(t, err)

	set, err := New(Config{NodeName: "node-1", Maps: m, Store: store, StateDir: t.TempDir(), ServiceMinInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	require.Nil(t, set.Endpoints, "no attacher, no endpoint manager")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done, "the reconcilers stop with their context, without an error")
	}()

	require.Eventually(t, func() bool {
		st, err := m.LBDump()
		require.NoError(t, err)
		f, ok := st.Frontends[datapath.LBFrontendKey{Addr: vip, Port: 80, Proto: 6}]
		if !ok || len(f.Slots) != 1 {
			return false
		}
		b := st.Backends[f.Slots[0]]
		// Local: the service computation knows this node's name
		// without being told twice.
		return b.Addr == podIP && b.Port == 8080 && b.Local
	}, 5*time.Second, 10*time.Millisecond, "the service's backend, a pod of this node, is in sl_lb_*")
	require.Eventually(t, func() bool {
		ipc, err := m.DumpIPCache()
		require.NoError(t, err)
		return ipc[netip.PrefixFrom(podIP, 32)].Identity >= 256
	}, 5*time.Second, 10*time.Millisecond, "the pod's identity is in sl_ipcache")
}
