package policysync

// The reconciler against a loaded datapath's maps: an endpoint prepared
// under policy gets its maps before its flags, the ipcache follows the
// model, a policy change rewrites flags and bumps the revision, and
// identities survive a restart.

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
)

type fakeEndpoints []api.Endpoint

func (f fakeEndpoints) List() []api.Endpoint { return f }

func loadMaps(t *testing.T) *datapath.Maps { return datapathtest.Load(t, datapath.Config{}).Maps() }

// pod is a running pod with address ip, and more (IPv6 of a dual-stack pod).
func pod(ns, name, node, ip string, labels map[string]string, more ...string) *model.Pod {
	p := &model.Pod{Namespace: ns, Name: name, NodeName: node, Phase: model.PodRunning, Labels: labels,
		IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	for _, a := range more {
		p.IPs = append(p.IPs, netip.MustParseAddr(a))
	}
	return p
}

var allowA = &model.NetworkPolicy{
	Namespace: "x", Name: "allow-a",
	PodSelector: model.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
	PolicyTypes: []model.PolicyType{model.PolicyTypeIngress},
	Ingress: []model.Rule{{
		Peers: []model.Peer{{PodSelector: &model.LabelSelector{MatchLabels: map[string]string{"app": "a"}}}},
		Ports: []model.PolicyPort{{Protocol: model.ProtocolTCP, Port: model.PortNumber(80)}},
	}},
}

func TestReconciler(t *testing.T) {
	m := loadMaps(t)
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x", Labels: map[string]string{"kubernetes.io/metadata.name": "x"}}},
		{Op: model.OpUpsert, Object: &model.Node{Name: "n1", Addresses: []model.NodeAddress{
			{Type: model.NodeInternalIP, Address: "172.31.0.10"}, {Type: model.NodeInternalIP, Address: "fd00:31::10"}}}},
		{Op: model.OpUpsert, Object: &model.Node{Name: "n2", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "172.31.0.11"}}}},
		{Op: model.OpUpsert, Object: pod("x", "a", "n1", "10.244.1.2", map[string]string{"app": "a"}, "fd00:10:244:1::2")},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", "10.244.1.3", map[string]string{"app": "b"}, "fd00:10:244:1::3")},
		{Op: model.OpUpsert, Object: pod("x", "r", "n2", "10.244.2.2", map[string]string{"app": "a"})},
		{Op: model.OpUpsert, Object: allowA},
	})
	require.NoError(t, err)
	stateDir := t.TempDir()
	r, err := New(Options{NodeName: "n1", Maps: m, Store: store, StateDir: stateDir, MaxEntries: 64,
		Endpoints: fakeEndpoints{{ID: 7, Namespace: "x", Pod: "b", IPs: []string{"10.244.1.3", "fd00:10:244:1::3"}}, {ID: 8, Namespace: "x", Pod: "a", IPs: []string{"10.244.1.2", "fd00:10:244:1::2"}}}})
	require.NoError(t, err)

	b := model.NamespacedName{Namespace: "x", Name: "b"}
	a := model.NamespacedName{Namespace: "x", Name: "a"}
	idB, flagsB := r.Prepare(b, 7)
	require.Equal(t, datapath.EPFlagPolicyIngress, flagsB)
	p, err := m.DumpEndpointPolicy(7)
	require.NoError(t, err, "the maps are in place before the flags are returned")
	idA, flagsA := r.Prepare(a, 8)
	require.Zero(t, flagsA, "a is under no policy")
	require.NotEqual(t, idA, idB)
	var peers []uint32
	for _, e := range p.Entries {
		peers = append(peers, e.Identity)
	}
	require.ElementsMatch(t, []uint32{datapath.IdentityHost, idA}, peers, "host-allow and app=a (local a and remote r share it)")

	require.NoError(t, m.PutEndpoint(datapath.EndpointEntry{IfIndex: 100, ID: 7, IPv4: netip.MustParseAddr("10.244.1.3"), Identity: idB, PolicyFlags: flagsB}))
	r.Placed(b, 7, 100, idB, flagsB)
	r.pass(true)

	ipc, err := m.DumpIPCache()
	require.NoError(t, err)
	want := map[string]datapath.IPCacheEntry{
		"10.244.1.2/32":  {Identity: idA, EndpointID: 8},
		"10.244.1.3/32":  {Identity: idB, EndpointID: 7},
		"10.244.2.2/32":  {Identity: idA},
		"172.31.0.10/32": {Identity: datapath.IdentityHost},
		"172.31.0.11/32": {Identity: datapath.IdentityRemoteNode},
		"0.0.0.0/0":      {Identity: datapath.IdentityWorld},
		// Both families: a dual-stack pod's IPv6 /128 has the identity of
		// its IPv4 /32.
		"fd00:10:244:1::2/128": {Identity: idA, EndpointID: 8},
		"fd00:10:244:1::3/128": {Identity: idB, EndpointID: 7},
		"fd00:31::10/128":      {Identity: datapath.IdentityHost},
		"::/0":                 {Identity: datapath.IdentityWorld},
	}
	got := map[string]datapath.IPCacheEntry{}
	for p, e := range ipc {
		got[p.String()] = e
	}
	require.Equal(t, want, got)
	rev1, err := m.PolicyRevision()
	require.NoError(t, err)
	require.NotZero(t, rev1)
	require.Equal(t, 1, r.Status().EnforcedEndpoints)

	// The policy goes away: flags cleared, maps removed, revision bumped.
	_, err = store.Apply([]model.Change{{Op: model.OpDelete, Object: allowA}})
	require.NoError(t, err)
	r.pass(false)
	eps, err := m.ListEndpoints()
	require.NoError(t, err)
	require.Len(t, eps, 1)
	require.Zero(t, eps[0].PolicyFlags)
	_, err = m.DumpEndpointPolicy(7)
	require.Error(t, err, "no maps for an endpoint under no policy")
	rev2, err := m.PolicyRevision()
	require.NoError(t, err)
	require.Greater(t, rev2, rev1)

	// Identities are kept across a restart, in a file only root reads:
	// they list every label set of the cluster's pods.
	fi, err := os.Stat(filepath.Join(stateDir, identitiesFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode(), "identities.json")
	r2, err := New(Options{NodeName: "n1", Maps: m, Store: store, StateDir: stateDir})
	require.NoError(t, err)
	id2, _ := r2.Prepare(b, 7)
	require.Equal(t, idB, id2)

	r.Released(b, 7)
	require.Empty(t, r.Status().FailedClosed)
}

// An endpoint's enforcement never precedes what allows its peers: when
// Prepare returns the flags that turn it on, before the reconciler's first
// pass, the ipcache already gives the allowed peer (on another node here)
// the identity the endpoint's maps allow, and the endpoint its own ID.
func TestPrepareWritesTheIPCacheBeforeEnforcing(t *testing.T) {
	m := loadMaps(t)
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x"}},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", "10.244.1.3", map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: pod("x", "r", "n2", "10.244.2.2", map[string]string{"app": "a"})},
		{Op: model.OpUpsert, Object: allowA},
	})
	require.NoError(t, err)
	r, err := New(Options{NodeName: "n1", Maps: m, Store: store, MaxEntries: 64})
	require.NoError(t, err)

	idB, flags := r.Prepare(model.NamespacedName{Namespace: "x", Name: "b"}, 7)
	require.Equal(t, datapath.EPFlagPolicyIngress, flags, "b is enforced from its first packet")
	ipc, err := m.DumpIPCache()
	require.NoError(t, err)
	peer, ok := ipc[netip.MustParsePrefix("10.244.2.2/32")]
	require.True(t, ok, "the allowed peer's address is known when enforcement turns on: %v", ipc)
	p, err := m.DumpEndpointPolicy(7)
	require.NoError(t, err)
	var allowed []uint32
	for _, e := range p.Entries {
		allowed = append(allowed, e.Identity)
	}
	require.Contains(t, allowed, peer.Identity, "and its identity is the one b's maps allow")
	require.Equal(t, datapath.IPCacheEntry{Identity: idB, EndpointID: 7}, ipc[netip.MustParsePrefix("10.244.1.3/32")])

	// A peer appearing later reaches the ipcache before an endpoint
	// prepared after it enforces.
	_, err = store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: pod("x", "b2", "n1", "10.244.1.4", map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: pod("x", "r2", "n2", "10.244.2.3", map[string]string{"app": "a"})},
	})
	require.NoError(t, err)
	_, flags = r.Prepare(model.NamespacedName{Namespace: "x", Name: "b2"}, 8)
	require.Equal(t, datapath.EPFlagPolicyIngress, flags)
	ipc, err = m.DumpIPCache()
	require.NoError(t, err)
	require.Equal(t, peer.Identity, ipc[netip.MustParsePrefix("10.244.2.3/32")].Identity)
}

// A policy too large for the endpoint's maps fails it closed, visibly.
func TestReconcilerOverflow(t *testing.T) {
	m := loadMaps(t)
	store := model.NewStore()
	big := *allowA
	big.Ingress = []model.Rule{{Peers: allowA.Ingress[0].Peers}}
	for port := uint16(1000); port < 1100; port++ {
		big.Ingress[0].Ports = append(big.Ingress[0].Ports, model.PolicyPort{Protocol: model.ProtocolTCP, Port: model.PortNumber(port)})
	}
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Namespace{Name: "x"}},
		{Op: model.OpUpsert, Object: pod("x", "a", "n1", "10.244.1.2", map[string]string{"app": "a"})},
		{Op: model.OpUpsert, Object: pod("x", "b", "n1", "10.244.1.3", map[string]string{"app": "b"})},
		{Op: model.OpUpsert, Object: &big},
	})
	require.NoError(t, err)
	r, err := New(Options{NodeName: "n1", Maps: m, Store: store, MaxEntries: 16})
	require.NoError(t, err)
	_, flags := r.Prepare(model.NamespacedName{Namespace: "x", Name: "b"}, 7)
	require.Equal(t, datapath.EPFlagPolicyIngress|datapath.EPFlagPolicyOverflow, flags)
	st := r.Status()
	require.Len(t, st.FailedClosed, 1)
	require.Equal(t, "x/b", st.FailedClosed[0].Pod)
	require.Contains(t, st.FailedClosed[0].Error, "limit of 16")
}
