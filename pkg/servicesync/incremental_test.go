package servicesync

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/internal/testing/datapathtest"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/service"
)

// noMaps stands in for the kernel's maps where a test or benchmark wants
// the reconciler's computation and planning without the writes: the maps
// start empty and every write succeeds.
type noMaps struct{}

func (noMaps) LBDump() (datapath.LBState, error) {
	return datapath.LBState{Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{}, Backends: map[uint32]datapath.LBBackend{}}, nil
}
func (noMaps) ApplyLB(*datapath.LBWrites) error              { return nil }
func (noMaps) DeleteCTForBackends(ids []uint32) (int, error) { return 0, nil }

// churn changes a small model at random: endpoints come and go (from a
// pool shared by services, so backends are shared), services switch
// between ClusterIP, NodePort and LoadBalancer (with and without source
// ranges) and between random and Maglev, claim other services' cluster
// IPs as external IPs, and the node's address changes (NodePort frontends
// on node addresses).
type churn struct {
	r     *rand.Rand
	store *model.Store
	n     int
}

func (c *churn) service(i int) *model.Service {
	s := &model.Service{
		Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), Type: model.ServiceTypeClusterIP,
		ClusterIPs:            []netip.Addr{addrAt("10.96.0.0", i+1)},
		Ports:                 []model.ServicePort{{Name: "http", Protocol: model.ProtocolTCP, Port: 80}},
		SessionAffinity:       model.SessionAffinityNone,
		InternalTrafficPolicy: model.TrafficPolicyCluster, ExternalTrafficPolicy: model.TrafficPolicyCluster,
	}
	switch c.r.IntN(5) {
	case 0:
		s.Type, s.Ports[0].NodePort = model.ServiceTypeNodePort, uint16(30000+i)
		if c.r.IntN(2) == 0 {
			s.ExternalTrafficPolicy = model.TrafficPolicyLocal
		}
	case 3:
		s.Type, s.Ports[0].NodePort = model.ServiceTypeLoadBalancer, uint16(30000+i)
		s.LoadBalancerIPs = []netip.Addr{addrAt("203.0.113.0", i+1)}
		if c.r.IntN(2) == 0 {
			s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", c.r.IntN(3)))}
		}
	case 1:
		s.Annotations = map[string]string{service.AlgorithmAnnotation: "maglev"}
	case 2:
		s.Ports = append(s.Ports, model.ServicePort{Name: "dns", Protocol: model.ProtocolUDP, Port: 53})
	}
	if c.r.IntN(4) == 0 {
		// Claims the next service's cluster IP, and wins it while that
		// service is gone.
		s.ExternalIPs = []netip.Addr{addrAt("10.96.0.0", (i+1)%c.n+1)}
	}
	return s
}

func (c *churn) slice(i int) *model.EndpointSlice {
	es := &model.EndpointSlice{
		Namespace: "bench", Name: fmt.Sprintf("svc-%05d-abcde", i), ServiceName: fmt.Sprintf("svc-%05d", i),
		AddressType: model.AddressTypeIPv4,
		Ports:       []model.EndpointPort{{Name: "http", Protocol: model.ProtocolTCP, Port: 8080}, {Name: "dns", Protocol: model.ProtocolUDP, Port: 5353}},
	}
	for range c.r.IntN(5) {
		es.Endpoints = append(es.Endpoints, model.Endpoint{
			Addresses: []netip.Addr{addrAt("10.128.0.0", 1+c.r.IntN(3*c.n))},
			Ready:     c.r.IntN(5) > 0, Serving: true, Terminating: c.r.IntN(5) == 0,
			NodeName: fmt.Sprintf("node%d", c.r.IntN(3)),
		})
	}
	return es
}

func (c *churn) node() *model.Node {
	return &model.Node{Name: "node1", Addresses: []model.NodeAddress{{Type: "InternalIP", Address: fmt.Sprintf("172.31.0.%d", 10+c.r.IntN(2))}}}
}

func (c *churn) init(t testing.TB) {
	var ch []model.Change
	for i := range c.n {
		ch = append(ch, model.Change{Op: model.OpUpsert, Object: c.service(i)}, model.Change{Op: model.OpUpsert, Object: c.slice(i)})
	}
	ch = append(ch, model.Change{Op: model.OpUpsert, Object: c.node()})
	_, err := c.store.Apply(ch)
	require.NoError(t, err)
}

func (c *churn) step(t testing.TB) {
	var ch []model.Change
	for range 1 + c.r.IntN(3) {
		i := c.r.IntN(c.n)
		switch c.r.IntN(8) {
		case 0, 1, 2, 3:
			ch = append(ch, model.Change{Op: model.OpUpsert, Object: c.slice(i)})
		case 4:
			ch = append(ch, model.Change{Op: model.OpUpsert, Object: c.service(i)})
		case 5:
			ch = append(ch, model.Change{Op: model.OpDelete, Object: c.service(i)})
		case 6:
			ch = append(ch, model.Change{Op: model.OpDelete, Object: c.slice(i)})
		case 7:
			ch = append(ch, model.Change{Op: model.OpUpsert, Object: c.node()})
		}
	}
	_, err := c.store.Apply(ch)
	require.NoError(t, err)
}

// fullWant is what the maps should hold for the store's model: a full
// Compute with its own allocator, which has seen the same sequence of
// models as the reconciler's.
func fullWant(store *model.Store, ids *service.Allocator) datapath.LBState {
	snap := store.Snapshot()
	opts := service.Options{NodeName: "node1", MaglevTableSize: 251, IDs: ids}
	opts.NodeAddrs = nodeAddrs(snap, opts.NodeName, nil)
	opts.Extras = func(nn model.NamespacedName) service.ServiceExtras {
		s := snap.Services[nn]
		return service.ServiceExtras{ExternalIPs: s.ExternalIPs, LoadBalancerIPs: s.LoadBalancerIPs,
			LoadBalancerSourceRanges: s.LoadBalancerSourceRanges}
	}
	return toLBState(service.Compute(snap, opts), opts.NodeName)
}

func cloneState(s datapath.LBState) datapath.LBState {
	return datapath.LBState{Frontends: maps.Clone(s.Frontends), Backends: maps.Clone(s.Backends)}
}

// TestReconcilerIncrementalMatchesFull runs random model changes through
// the reconciler and checks, after every pass, that what it planned and
// believes the maps hold is what a full Compute and a plan of everything
// give: planning only the changed services loses nothing.
func TestReconcilerIncrementalMatchesFull(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			c := &churn{r: rand.New(rand.NewPCG(seed, 3)), store: model.NewStore(), n: 40}
			c.init(t)
			r, err := newReconciler(Options{Maps: nil, Store: c.store, Service: service.Options{NodeName: "node1", MaglevTableSize: 251}}, noMaps{})
			require.NoError(t, err)
			ids := &service.Allocator{}
			// The first pass programs everything, full or not.
			r.Reconcile(seed%2 == 0)
			require.Equal(t, fullWant(c.store, ids), r.have)
			for i := range 200 {
				c.step(t)
				full := i%50 == 49
				before, applied := cloneState(r.have), r.Status().Applied
				if full {
					before, _ = noMaps{}.LBDump() // what a full pass plans against
				}
				r.Reconcile(full)
				want := fullWant(c.store, ids)
				require.Equal(t, want, r.have, "step %d", i)
				plan := Plan(before, want)
				if plan.Empty() {
					require.Equal(t, applied, r.Status().Applied, "step %d: nothing to write", i)
				} else {
					require.Equal(t, applied+1, r.Status().Applied, "step %d", i)
					require.Equal(t, plan.String(), r.Status().LastPlan, "step %d", i)
				}
			}
		})
	}
}

// TestReconcilerRealMaps does the same against the kernel's maps, and
// checks that the periodic full pass still prunes entries the reconciler
// did not write, which incremental passes do not look at.
func TestReconcilerRealMaps(t *testing.T) {
	dp := datapathtest.Load(t, datapath.Config{LBMax: 4096, LBBackendsMax: 4096, MaglevTableSize: 251, MaglevMax: 256, CTMax: 4096})

	c := &churn{r: rand.New(rand.NewPCG(9, 9)), store: model.NewStore(), n: 40}
	c.init(t)
	r, err := New(Options{Maps: dp.Maps(), Store: c.store, Service: service.Options{NodeName: "node1", MaglevTableSize: 251}})
	require.NoError(t, err)
	ids := &service.Allocator{}
	// A dump does not read Maglev tables back, only that there is one.
	dumped := func(s datapath.LBState) datapath.LBState {
		s = cloneState(s)
		for k, f := range s.Frontends {
			f.Maglev = nil
			s.Frontends[k] = f
		}
		return s
	}
	check := func(msg string) {
		t.Helper()
		have, err := dp.Maps().LBDump()
		require.NoError(t, err)
		require.Equal(t, dumped(fullWant(c.store, ids)), have, msg)
	}
	r.Reconcile(true)
	require.NoError(t, r.Status().LastErr)
	check("cold pass")
	for i := range 60 {
		c.step(t)
		r.Reconcile(false)
		require.NoError(t, r.Status().LastErr)
		check(fmt.Sprintf("step %d", i))
	}

	// An entry nobody asked for, as a crashed writer or a hand edit leaves.
	stale := datapath.LBState{
		Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{{Addr: netip.MustParseAddr("10.99.0.1"), Port: 80, Proto: 6}: {
			Key: datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.99.0.1"), Port: 80, Proto: 6}, ID: 4000, Slots: []uint32{4000}}},
		Backends: map[uint32]datapath.LBBackend{4000: {ID: 4000, Addr: netip.MustParseAddr("10.99.1.1"), Port: 80, Proto: 6}},
	}
	require.NoError(t, dp.Maps().ApplyLB(Plan(datapath.LBState{}, stale)))
	c.step(t)
	r.Reconcile(false)
	have, err := dp.Maps().LBDump()
	require.NoError(t, err)
	require.Contains(t, have.Frontends, datapath.LBFrontendKey{Addr: netip.MustParseAddr("10.99.0.1"), Port: 80, Proto: 6}, "incremental passes only look at what changed")
	r.Reconcile(true)
	require.NoError(t, r.Status().LastErr)
	check("full resync prunes")
}

// TestReconcilerConcurrentReaders reads the computed services the way the
// agent's API does (Desired, then encoding it after the lock is released;
// FrontendService per flow event) while passes run. Under -race it checks
// that a pass never writes what an earlier Desired shares (backend lists,
// Maglev tables).
func TestReconcilerConcurrentReaders(t *testing.T) {
	c := &churn{r: rand.New(rand.NewPCG(5, 5)), store: model.NewStore(), n: 40}
	c.init(t)
	r, err := newReconciler(Options{Store: c.store, Service: service.Options{NodeName: "node1", MaglevTableSize: 251}}, noMaps{})
	require.NoError(t, err)
	r.Reconcile(true)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			d := r.Desired()
			n := 0
			for _, f := range d.Frontends {
				for _, b := range f.Backends {
					n += int(b.ID)
				}
				for _, id := range f.Maglev {
					n += int(id)
				}
				_, _ = r.FrontendService(f.ID)
			}
			require.NotNil(t, d)
		}
	}()
	for range 300 {
		c.step(t)
		r.Reconcile(false)
	}
	close(stop)
	<-done
}
