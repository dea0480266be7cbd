package servicesync

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/testutil"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

// Cold programming benchmark: 10,000 ClusterIP services of one TCP port with
// 10 ready endpoints each (100,000 backends), programmed by the reconciler's
// first full pass into freshly loaded, empty maps, as an agent does on a
// node's first start. tools/benchlb times iptables-restore and nft -f of
// the equivalent kube-proxy rules next to it (`make bench-lb`).
//
//	go test -run '^$' -bench LBColdProgramming -benchtime 3x ./pkg/servicesync/
//
// Reported per pass: cold-ms (compute, Plan and ApplyLB of everything),
// compute-ms (the service computation alone, the pure part of the cold
// pass: a first service.Incremental.Update), incr-ms (mean of 20 passes
// after one service's EndpointSlice changed: one endpoint replaced,
// applied incrementally), and, after the cold pass with store and
// reconciler alive, heap-inuse-MB and sys-MB of the Go runtime: a proxy
// for what the agent process holds for 10k services (the test binary's own
// baseline, a few MB, is included). BenchmarkLBReconcile gives ns/op and
// allocs/op of the same passes.
const (
	coldServices  = 10_000
	coldEndpoints = 10
	incrChanges   = 20
)

// coldConfig sizes the maps for the cold state: 10k frontends + 100k
// slots in sl_lb_svc; 100k backends and 10k reverse-NAT entries in the
// maps sized by LBBackendsMax.
func coldConfig(root string) datapath.Config {
	return datapath.Config{BPFRoot: root, LBMax: 131072, LBBackendsMax: 131072}
}

// loadCold loads a datapath into a fresh bpffs directory, removed with it.
func loadCold(b *testing.B) (*datapath.Datapath, func()) {
	root, err := os.MkdirTemp("/sys/fs/bpf", "sluice-bench-lb-")
	if err != nil {
		testutil.SkipOrFail(b, fmt.Sprintf("needs bpffs mounted at /sys/fs/bpf: %v", err))
	}
	dp, err := datapath.Load(coldConfig(root), nil)
	if err != nil {
		os.RemoveAll(root)
		require.NoError(b, err)
	}
	return dp, func() {
		require.NoError(b, dp.Close())
		require.NoError(b, os.RemoveAll(root))
	}
}

func BenchmarkLBColdProgramming(b *testing.B) {
	testutil.RequireRoot(b)
	state := coldState(coldServices, coldEndpoints)
	var cold, compute, incr time.Duration
	var heapInuse, sys uint64
	for i := range b.N {
		b.StopTimer()
		dp, done := loadCold(b)
		store := model.NewStore()
		_, err := store.Apply(upserts(state))
		require.NoError(b, err)
		r, err := New(Options{Maps: dp.Maps(), Store: store, Service: service.Options{NodeName: "node1"}})
		require.NoError(b, err)

		t := time.Now()
		service.NewIncremental(service.Options{}).Update(store.Snapshot(), service.Options{NodeName: "node1"})
		compute += time.Since(t)

		runtime.GC()
		b.StartTimer()
		t = time.Now()
		r.Reconcile(true)
		cold += time.Since(t)
		b.StopTimer()
		st := r.Status()
		require.NoError(b, st.LastErr)
		require.Equal(b, coldServices, st.Frontends)
		require.Equal(b, coldServices*coldEndpoints, st.Backends)

		if i == 0 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heapInuse, sys = ms.HeapInuse, ms.Sys
		}

		for j := range incrChanges {
			changeOne(b, store, j)
			t = time.Now()
			r.Reconcile(false)
			incr += time.Since(t)
			require.NoError(b, r.Status().LastErr)
			require.Contains(b, r.Status().LastPlan, "+1/-1 backends")
		}
		done()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(cold.Microseconds())/1000/n, "cold-ms")
	b.ReportMetric(float64(compute.Microseconds())/1000/n, "compute-ms")
	b.ReportMetric(float64(incr.Microseconds())/1000/n/incrChanges, "incr-ms")
	b.ReportMetric(float64(heapInuse)/(1<<20), "heap-inuse-MB")
	b.ReportMetric(float64(sys)/(1<<20), "sys-MB")
}

// changeOne replaces the first endpoint of one service's slice by a new
// address: one backend added, one removed, one slot rewritten. Change j
// picks the service and the address, so consecutive changes touch
// different services and never reuse an address.
func changeOne(b *testing.B, store *model.Store, j int) {
	es := endpointSlice((j*7919)%coldServices, coldEndpoints)
	es.Endpoints[0].Addresses = []netip.Addr{addrAt("10.250.0.0", j+1)}
	_, err := store.Apply([]model.Change{{Op: model.OpUpsert, Object: es}})
	require.NoError(b, err)
}

// BenchmarkLBReconcile measures the reconciler's passes at 10,000 services
// × 10 endpoints, in ns/op and allocs/op:
//
//	cold/…         the first pass, everything into empty maps
//	one-service/…  a pass after one EndpointSlice changed (changeOne)
//
// each three ways:
//
//	maps          the reconciler writing the kernel's maps (root)
//	no-maps       the reconciler with the writes left out: computation and
//	              planning alone
//	full-compute  what a pass cost before computation was incremental:
//	              service.Compute, toLBState and Plan of everything (no
//	              writes), the baseline to compare no-maps with
//
// Model updates (store.Apply) are not timed.
//
//	go test -run '^$' -bench LBReconcile -benchmem ./pkg/servicesync/
func BenchmarkLBReconcile(b *testing.B) {
	state := coldState(coldServices, coldEndpoints)
	newStore := func(b *testing.B) *model.Store {
		store := model.NewStore()
		_, err := store.Apply(upserts(state))
		require.NoError(b, err)
		return store
	}
	opts := func(store *model.Store) Options {
		return Options{Store: store, Service: service.Options{NodeName: "node1"}}
	}
	// fullPass is the work of a pass before: Compute, then a plan of
	// everything against the previous pass's state.
	fullPass := func(store *model.Store, ids *service.Allocator, have datapath.LBState) (datapath.LBState, *datapath.LBWrites) {
		snap := store.Snapshot()
		o := service.Options{NodeName: "node1", IDs: ids}
		o.Extras = func(nn model.NamespacedName) service.ServiceExtras { return service.ServiceExtras{} }
		want := toLBState(service.Compute(snap, o), o.NodeName)
		return want, Plan(have, want)
	}
	empty, _ := noMaps{}.LBDump()

	b.Run("cold/maps", func(b *testing.B) {
		testutil.RequireRoot(b)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			dp, done := loadCold(b)
			o := opts(newStore(b))
			o.Maps = dp.Maps()
			r, err := New(o)
			require.NoError(b, err)
			runtime.GC()
			b.StartTimer()
			r.Reconcile(true)
			b.StopTimer()
			require.NoError(b, r.Status().LastErr)
			done()
			b.StartTimer()
		}
	})
	b.Run("cold/no-maps", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			r, err := newReconciler(opts(newStore(b)), noMaps{})
			require.NoError(b, err)
			runtime.GC()
			b.StartTimer()
			r.Reconcile(true)
		}
	})
	b.Run("cold/full-compute", func(b *testing.B) {
		store := newStore(b)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			runtime.GC()
			b.StartTimer()
			fullPass(store, &service.Allocator{}, empty)
		}
	})

	oneService := func(b *testing.B, r *Reconciler, store *model.Store) {
		r.Reconcile(true)
		require.NoError(b, r.Status().LastErr)
		runtime.GC()
		b.ReportAllocs()
		j := 0
		for b.Loop() {
			b.StopTimer()
			changeOne(b, store, j)
			j++
			b.StartTimer()
			r.Reconcile(false)
		}
		b.StopTimer()
		require.NoError(b, r.Status().LastErr)
		require.Contains(b, r.Status().LastPlan, "+1/-1 backends")
	}
	b.Run("one-service/maps", func(b *testing.B) {
		testutil.RequireRoot(b)
		dp, done := loadCold(b)
		defer done()
		store := newStore(b)
		o := opts(store)
		o.Maps = dp.Maps()
		r, err := New(o)
		require.NoError(b, err)
		oneService(b, r, store)
	})
	b.Run("one-service/no-maps", func(b *testing.B) {
		store := newStore(b)
		r, err := newReconciler(opts(store), noMaps{})
		require.NoError(b, err)
		oneService(b, r, store)
	})
	b.Run("one-service/full-compute", func(b *testing.B) {
		store := newStore(b)
		ids := &service.Allocator{}
		have, _ := fullPass(store, ids, empty)
		runtime.GC()
		b.ReportAllocs()
		j := 0
		for b.Loop() {
			b.StopTimer()
			changeOne(b, store, j)
			j++
			b.StartTimer()
			have, _ = fullPass(store, ids, have)
		}
	})
}

// coldState is n services 10.96.x.y:80 → targetPort 8080, each with one
// EndpointSlice of eps ready endpoints at distinct pod addresses.
func coldState(n, eps int) []model.Object {
	objs := make([]model.Object, 0, 2*n+1)
	objs = append(objs, &model.Namespace{Name: "bench"})
	for i := range n {
		objs = append(objs, &model.Service{
			Namespace:             "bench",
			Name:                  fmt.Sprintf("svc-%05d", i),
			Type:                  model.ServiceTypeClusterIP,
			ClusterIPs:            []netip.Addr{addrAt("10.96.0.0", i+1)},
			Ports:                 []model.ServicePort{{Name: "http", Protocol: model.ProtocolTCP, Port: 80, TargetPort: model.PortNumber(8080)}},
			Selector:              map[string]string{"app": fmt.Sprintf("svc-%05d", i)},
			SessionAffinity:       model.SessionAffinityNone,
			InternalTrafficPolicy: model.TrafficPolicyCluster,
		}, endpointSlice(i, eps))
	}
	return objs
}

func endpointSlice(i, eps int) *model.EndpointSlice {
	es := &model.EndpointSlice{
		Namespace:   "bench",
		Name:        fmt.Sprintf("svc-%05d-abcde", i),
		ServiceName: fmt.Sprintf("svc-%05d", i),
		AddressType: model.AddressTypeIPv4,
		Ports:       []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}},
	}
	for j := range eps {
		es.Endpoints = append(es.Endpoints, model.Endpoint{
			Addresses: []netip.Addr{addrAt("10.128.0.0", i*eps+j+1)},
			Ready:     true, Serving: true,
			NodeName: fmt.Sprintf("node%d", j%3),
		})
	}
	return es
}

func upserts(objs []model.Object) []model.Change {
	out := make([]model.Change, len(objs))
	for i, o := range objs {
		out[i] = model.Change{Op: model.OpUpsert, Object: o}
	}
	return out
}

func addrAt(base string, i int) netip.Addr {
	a := netip.MustParseAddr(base).As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
