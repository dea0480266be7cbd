package servicesync

// A Maglev service across an agent restart that changes
// --maglev-table-size: the first agent programs tables of 251 entries, the
// second loads from the same pins with 509. Flows go through sl_from_ep
// with BPF_PROG_TEST_RUN.
//
//	pod 10.244.1.5:sport ──► VIP 10.96.0.10:80 ══ sl_from_ep (Maglev) ══► backend 10.128.0.N:8080
//	                          backend = table[flow_hash % size], table from the Go computation

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

var (
	restartClient = netip.MustParseAddr("10.244.1.5")
	restartVIP    = netip.AddrPortFrom(netip.MustParseAddr("10.96.0.10"), 80)
)

// maglevStore holds one Maglev ClusterIP service with ten ready backends.
func maglevStore(t *testing.T) *model.Store {
	t.Helper()
	es := &model.EndpointSlice{Namespace: "x", Name: "web-abcde", ServiceName: "web", AddressType: model.AddressTypeIPv4,
		Ports: []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}}}
	for i := range 10 {
		es.Endpoints = append(es.Endpoints, model.Endpoint{Addresses: []netip.Addr{addrAt("10.128.0.0", i+1)}, Ready: true, Serving: true, NodeName: "node1"})
	}
	store := model.NewStore()
	_, err := store.Apply([]model.Change{
		{Op: model.OpUpsert, Object: &model.Service{
			Namespace: "x", Name: "web", Type: model.ServiceTypeClusterIP, ClusterIPs: []netip.Addr{restartVIP.Addr()},
			Ports:       []model.ServicePort{{Name: "http", Protocol: model.ProtocolTCP, Port: restartVIP.Port()}},
			Annotations: map[string]string{service.AlgorithmAnnotation: "maglev"}, SessionAffinity: model.SessionAffinityNone,
			InternalTrafficPolicy: model.TrafficPolicyCluster, ExternalTrafficPolicy: model.TrafficPolicyCluster,
		}},
		{Op: model.OpUpsert, Object: es},
		{Op: model.OpUpsert, Object: &model.Node{Name: "node1", Addresses: []model.NodeAddress{{Type: model.NodeInternalIP, Address: "172.31.0.10"}}}},
	})
	require.NoError(t, err)
	return store
}

// startLB loads the datapath from root's pins with the given table size,
// with the client pod as endpoint 7 on loopback, and runs the reconciler's
// first pass as the agent does on start.
func startLB(t *testing.T, root string, size uint32, store *model.Store) (*datapath.Datapath, *Reconciler) {
	t.Helper()
	dp := datapathtest.Load(t, datapath.Config{BPFRoot: root, MaglevTableSize: size, MaglevMax: 256})
	require.NoError(t, dp.Maps().PutEndpoint(datapath.EndpointEntry{IfIndex: 1, ID: 7, IPv4: restartClient}))
	r, err := New(Options{Maps: dp.Maps(), Store: store, Service: service.Options{NodeName: "node1", MaglevTableSize: size}})
	require.NoError(t, err)
	r.Reconcile(true)
	require.NoError(t, r.Status().LastErr, "first pass after loading with --maglev-table-size %d", size)
	return dp, r
}

// maglevPicks predicts, from the reconciler's own computation, the backend
// of each flow: the entry FlowHash % size of the frontend's table.
func maglevPicks(t *testing.T, r *Reconciler, sports []uint16) map[uint16]netip.AddrPort {
	t.Helper()
	d := r.Desired()
	require.NotNil(t, d)
	i := slices.IndexFunc(d.Frontends, func(f service.Frontend) bool { return f.Address == restartVIP.Addr() })
	require.GreaterOrEqual(t, i, 0, "frontend %s computed", restartVIP)
	table := d.Frontends[i].Maglev
	require.Len(t, table, int(d.MaglevTableSize))
	byID := map[uint32]netip.AddrPort{}
	for _, b := range d.Backends {
		byID[b.ID] = netip.AddrPortFrom(b.Address, b.Port)
	}
	out := map[uint16]netip.AddrPort{}
	for _, sp := range sports {
		h := datapathtest.FlowHash(netip.AddrPortFrom(restartClient, sp), restartVIP, 6)
		out[sp] = byID[table[h%uint32(len(table))]]
	}
	return out
}

// picks sends a SYN of each flow through prog and returns where it went.
func picks(t *testing.T, prog *ebpf.Program, sports []uint16) map[uint16]netip.AddrPort {
	t.Helper()
	out := map[uint16]netip.AddrPort{}
	for _, sp := range sports {
		_, to := datapathtest.Run(t, prog, datapathtest.TCP(t, netip.AddrPortFrom(restartClient, sp), restartVIP, true), 0)
		out[sp] = to
	}
	return out
}

func flushCT(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	_, err := dp.Maps().GCCT(func(uint32) bool { return true }, nil)
	require.NoError(t, err)
}

// innerSizes returns the entry count of every table in sl_lb_maglev.
func innerSizes(t *testing.T, dp *datapath.Datapath) []uint32 {
	t.Helper()
	var (
		id    uint32
		inner *ebpf.Map
		sizes []uint32
	)
	it := dp.Objects().SlLbMaglev.Iterate()
	for it.Next(&id, &inner) {
		sizes = append(sizes, inner.MaxEntries())
		inner.Close()
	}
	require.NoError(t, it.Err())
	return sizes
}

// TestMaglevTableSizeChangeAcrossRestart: the documented way to change
// --maglev-table-size is a ConfigMap edit and a restart. The pinned
// sl_lb_maglev of the old size must not be adopted (the kernel refuses
// tables of another size in it, and the service would silently fall back
// to random selection): it is replaced, the first pass writes every table
// at the new size, and flows hash onto the new tables, consistently.
func TestMaglevTableSizeChangeAcrossRestart(t *testing.T) {
	root := datapathtest.Root(t)
	store := maglevStore(t)
	sports := make([]uint16, 200)
	for i := range sports {
		sports[i] = uint16(30000 + i)
	}

	dp1, r1 := startLB(t, root, 251, store)
	require.Equal(t, []uint32{251}, innerSizes(t, dp1))
	before := picks(t, dp1.Objects().SlFromEp, sports)
	require.Equal(t, maglevPicks(t, r1, sports), before, "size 251: every flow on its Maglev entry")
	// One connection established before the restart, kept in CT.
	established := sports[0]

	dp2, r2 := startLB(t, root, 509, store)
	require.True(t, slices.ContainsFunc(dp2.Replaced, func(s string) bool { return strings.HasPrefix(s, "sl_lb_maglev: replaced") }),
		"an sl_lb_maglev of 251-entry tables is replaced, not adopted: %v", dp2.Replaced)
	require.Equal(t, []uint32{509}, innerSizes(t, dp2), "the first pass wrote the table at the new size")

	// The established connection keeps its backend: CT was adopted.
	_, to := datapathtest.Run(t, dp2.Objects().SlFromEp, datapathtest.TCP(t, netip.AddrPortFrom(restartClient, established), restartVIP, false), 0)
	require.Equal(t, before[established], to, "an established connection keeps its backend across the restart")

	// New connections: the Maglev entry of the 509 table, every time.
	flushCT(t, dp2)
	want := maglevPicks(t, r2, sports)
	after := picks(t, dp2.Objects().SlFromEp, sports)
	require.Equal(t, want, after, "size 509: every flow on its Maglev entry, none on the random fallback")
	flushCT(t, dp2)
	require.Equal(t, after, picks(t, dp2.Objects().SlFromEp, sports), "the same flows hash to the same backends again")
	moved := 0
	for _, sp := range sports {
		if before[sp] != after[sp] {
			moved++
		}
	}
	t.Logf("%d of %d flows changed backend with the table size (new tables, same backends)", moved, len(sports))

	// The previous agent's programs (still attached in a real restart until
	// the new agent swaps them) keep their own 251-entry tables.
	flushCT(t, dp1)
	require.Equal(t, before, picks(t, dp1.Objects().SlFromEp, sports), "old programs keep hashing on the old tables until swapped")
}
