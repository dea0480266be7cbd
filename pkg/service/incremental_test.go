package service

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluice-net/sluice/pkg/model"
)

// extrasFrom reads the fields the model carries but Compute takes through
// Options.Extras from the state's services, as the LB reconciler does.
func extrasFrom(st *model.State) func(model.NamespacedName) ServiceExtras {
	return func(nn model.NamespacedName) ServiceExtras {
		s, ok := st.Services[nn]
		if !ok {
			return ServiceExtras{}
		}
		return ServiceExtras{ExternalIPs: s.ExternalIPs, LoadBalancerIPs: s.LoadBalancerIPs,
			LoadBalancerSourceRanges: s.LoadBalancerSourceRanges, HealthCheckNodePort: s.HealthCheckNodePort}
	}
}

// randomModel makes small random services and slices drawn from narrow
// pools of names, addresses and ports, so that services collide on
// frontend keys (cluster IPs, external IPs, node ports), slices move
// between services, and one backend address serves several services with
// different states and nodes.
type randomModel struct {
	r *rand.Rand
}

func (g randomModel) pick(l ...string) string { return l[g.r.IntN(len(l))] }

func (g randomModel) addr(prefix string, n int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s.%d", prefix, 1+g.r.IntN(n)))
}

func (g randomModel) svcName() model.NamespacedName {
	return model.NamespacedName{Namespace: g.pick("a", "b"), Name: fmt.Sprintf("s%d", g.r.IntN(8))}
}

func (g randomModel) service(nn model.NamespacedName) *model.Service {
	s := &model.Service{
		Namespace:             nn.Namespace,
		Name:                  nn.Name,
		Type:                  model.ServiceTypeClusterIP,
		ClusterIPs:            []netip.Addr{g.addr("10.96.0", 10)},
		SessionAffinity:       model.SessionAffinityNone,
		InternalTrafficPolicy: model.TrafficPolicyCluster,
		ExternalTrafficPolicy: model.TrafficPolicyCluster,
	}
	switch g.r.IntN(10) {
	case 0:
		s.Type = model.ServiceTypeNodePort
	case 1, 2:
		s.Type = model.ServiceTypeLoadBalancer
	case 3:
		s.Headless, s.ClusterIPs = true, nil
	case 4:
		s.Type, s.ClusterIPs = model.ServiceTypeExternalName, nil
	case 5:
		s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr("fd00::1"))
	}
	for i, name := range []string{"http", "dns", ""}[:1+g.r.IntN(2)] {
		sp := model.ServicePort{Name: name, Protocol: model.ProtocolTCP, Port: uint16(80 + g.r.IntN(2))}
		if g.r.IntN(3) == 0 {
			sp.Protocol, sp.Port = model.ProtocolUDP, 53
		}
		if s.Type != model.ServiceTypeClusterIP && g.r.IntN(4) > 0 {
			sp.NodePort = uint16(30000 + 2*g.r.IntN(3) + i)
		}
		s.Ports = append(s.Ports, sp)
	}
	if g.r.IntN(3) == 0 {
		s.InternalTrafficPolicy = model.TrafficPolicyLocal
	}
	if g.r.IntN(3) == 0 {
		s.ExternalTrafficPolicy = model.TrafficPolicyLocal
	}
	if g.r.IntN(4) == 0 {
		s.SessionAffinity, s.SessionAffinityTimeoutSeconds = model.SessionAffinityClientIP, uint32(10+g.r.IntN(3))
	}
	if a := g.pick("", "", "maglev", "random", "bogus"); a != "" {
		s.Annotations = map[string]string{AlgorithmAnnotation: a}
	}
	if g.r.IntN(4) == 0 {
		s.ExternalIPs = []netip.Addr{g.addr("10.96.0", 10)} // may hit a cluster IP
	}
	if s.Type == model.ServiceTypeLoadBalancer {
		s.LoadBalancerIPs = []netip.Addr{g.addr("203.0.113", 3)}
		if g.r.IntN(2) == 0 {
			s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		}
		if s.ExternalTrafficPolicy == model.TrafficPolicyLocal {
			s.HealthCheckNodePort = uint16(32000 + g.r.IntN(3))
		}
	}
	return s
}

func (g randomModel) slice(nn model.NamespacedName) *model.EndpointSlice {
	svc := g.svcName()
	es := &model.EndpointSlice{
		Namespace:   nn.Namespace,
		Name:        nn.Name,
		ServiceName: svc.Name,
		AddressType: model.AddressTypeIPv4,
	}
	switch g.r.IntN(12) {
	case 0:
		es.ServiceName = ""
	case 1:
		es.AddressType = model.AddressTypeIPv6
	}
	for _, name := range []string{"http", "dns", ""} {
		if g.r.IntN(3) > 0 {
			p := model.EndpointPort{Name: name, Protocol: model.ProtocolTCP, Port: uint16(8080 + g.r.IntN(2))}
			if g.r.IntN(3) == 0 {
				p.Protocol, p.Port = model.ProtocolUDP, 5353
			}
			es.Ports = append(es.Ports, p)
		}
	}
	for range g.r.IntN(5) {
		e := ep(g.addr("10.0.0", 12).String(), g.pick("n1", "n2", "n3"), g.pick(ready, ready, ready, termServing, termGone, notReady))
		if g.r.IntN(6) == 0 {
			e.Zone = "z1"
		}
		es.Endpoints = append(es.Endpoints, e)
	}
	return es
}

func (g randomModel) sliceName() model.NamespacedName {
	return model.NamespacedName{Namespace: g.pick("a", "b"), Name: fmt.Sprintf("e%d", g.r.IntN(12))}
}

// step returns a copy of st with a few random changes.
func (g randomModel) step(st *model.State) *model.State {
	next := st.Clone()
	next.Revision++
	for range 1 + g.r.IntN(3) {
		switch g.r.IntN(6) {
		case 0, 1:
			nn := g.svcName()
			next.Upsert(g.service(nn))
		case 2:
			next.Delete(model.Key{Kind: model.KindService, Namespace: g.pick("a", "b"), Name: fmt.Sprintf("s%d", g.r.IntN(8))})
		case 3, 4:
			next.Upsert(g.slice(g.sliceName()))
		case 5:
			nn := g.sliceName()
			next.Delete(model.Key{Kind: model.KindEndpointSlice, Namespace: nn.Namespace, Name: nn.Name})
		}
	}
	return next
}

// TestIncrementalMatchesCompute applies random sequences of changes and
// checks after every one that Incremental's result is exactly Compute's
// (with an allocator that saw the same sequence): frontends with their
// IDs, node-address frontends, conflict outcomes, backends, health checks,
// warnings and Maglev tables. It also checks what a consumer relies on:
// keys present before and after keep their IDs, and every frontend and
// backend entry that differs is listed in Changes.
func TestIncrementalMatchesCompute(t *testing.T) {
	nodeAddrs := [][]netip.Addr{nil, ips("192.168.1.10"), ips("192.168.1.10", "192.168.1.11"), ips("10.96.0.3")}
	for seed := range uint64(25) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			g := randomModel{r: rand.New(rand.NewPCG(seed, 7))}
			fullIDs := &Allocator{}
			opts := Options{NodeName: "n1", MaglevTableSize: 251, MaglevSeed: "s"}
			in := NewIncremental(Options{})
			st := &model.State{}
			var prev *Desired
			for i := range 150 {
				st = g.step(st)
				if g.r.IntN(15) == 0 {
					opts.NodeAddrs = nodeAddrs[g.r.IntN(len(nodeAddrs))]
				}
				if g.r.IntN(40) == 0 {
					opts.DefaultAlgorithm = Algorithm(g.pick("random", "maglev"))
				}
				opts.Extras = extrasFrom(st)

				full := opts
				full.IDs = fullIDs
				want := Compute(st, full)
				ch := in.Update(st, opts)
				got := in.Desired()
				require.Equal(t, want, got, "step %d", i)
				assertConsistent(t, got)
				if prev != nil {
					checkChanges(t, prev, got, ch)
				}
				prev = got
			}
		})
	}
}

// checkChanges checks that IDs of keys in both results are equal and that
// every difference is reported.
func checkChanges(t *testing.T, prev, cur *Desired, ch Changes) {
	t.Helper()
	prevF := map[FrontendKey]Frontend{}
	for _, f := range prev.Frontends {
		prevF[f.Key()] = f
	}
	for _, f := range cur.Frontends {
		old, ok := prevF[f.Key()]
		if ok {
			require.Equal(t, old.ID, f.ID, "frontend %s changed ID", f.Key())
		}
		delete(prevF, f.Key())
		if !ch.All && (!ok || !assert.ObjectsAreEqual(old, f)) {
			require.True(t, slices.Contains(ch.Frontends, f.Key()), "frontend %s changed but is not in Changes", f.Key())
		}
	}
	for k := range prevF {
		require.True(t, ch.All || slices.Contains(ch.Frontends, k), "frontend %s went but is not in Changes", k)
	}
	prevB := map[uint32]Backend{}
	keyID := map[BackendKey]uint32{}
	for _, b := range prev.Backends {
		prevB[b.ID] = b
		keyID[b.Key()] = b.ID
	}
	for _, b := range cur.Backends {
		if id, ok := keyID[b.Key()]; ok {
			require.Equal(t, id, b.ID, "backend %s changed ID", b.Key())
		}
		old, ok := prevB[b.ID]
		delete(prevB, b.ID)
		if !ch.All && (!ok || old != b) {
			require.True(t, slices.Contains(ch.Backends, b.ID), "backend %d changed but is not in Changes", b.ID)
		}
	}
	for id := range prevB {
		require.True(t, ch.All || slices.Contains(ch.Backends, id), "backend %d went but is not in Changes", id)
	}
	require.Equal(t, ch.All || ch.HealthChecks || slices.Equal(prev.HealthChecks, cur.HealthChecks), true, "health checks changed silently")
	require.Equal(t, ch.All || ch.Warnings || slices.Equal(prev.Warnings, cur.Warnings), true, "warnings changed silently")
}

func TestIncrementalTouchesOnlyWhatChanged(t *testing.T) {
	st := bigState(50, 4)
	opts := Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10"), DefaultAlgorithm: AlgorithmMaglev, MaglevTableSize: 251}
	in := NewIncremental(Options{})
	ch := in.Update(st, opts)
	require.True(t, ch.All)
	before := in.Desired()

	ch = in.Update(st.Clone(), opts)
	assert.Equal(t, Changes{}, ch, "nothing changed")

	// One endpoint of one service replaced.
	next := st.Clone()
	es := *next.EndpointSlices[model.NamespacedName{Namespace: ns, Name: "svcba-a"}]
	es.Endpoints = slices.Clone(es.Endpoints)
	es.Endpoints[0].Addresses = ips("10.9.9.9")
	next.Upsert(&es)
	ch = in.Update(next, opts)
	assert.False(t, ch.All)
	var svcs []string
	for _, k := range ch.Frontends {
		f, ok := in.Frontend(k)
		require.True(t, ok)
		svcs = append(svcs, f.Service.Name)
	}
	assert.Equal(t, []string{"svcba", "svcba", "svcba"}, svcs, "the service's cluster IP, wildcard and node address frontends")
	assert.Len(t, ch.Backends, 5, "the service's 3 kept backends, the removed one and the new one")
	after := in.Desired()
	for i := range before.Frontends {
		if before.Frontends[i].Service.Name != "svcba" {
			assert.Equal(t, before.Frontends[i], after.Frontends[i])
		}
	}
	full := Compute(next, Options{NodeName: "n1", NodeAddrs: ips("192.168.1.10"), DefaultAlgorithm: AlgorithmMaglev, MaglevTableSize: 251})
	assert.Equal(t, full.Frontends[0].Maglev, after.Frontends[0].Maglev)

	// A node address change recomputes the services with node ports only.
	opts.NodeAddrs = ips("192.168.1.11")
	ch = in.Update(next, opts)
	assert.False(t, ch.All)
	assert.Len(t, ch.Frontends, 50*4, "every NodePort service's 3 frontends before, 3 after, sharing cluster IP and wildcard")
	f, ok := in.Frontend(FrontendKey{Address: ip("192.168.1.11"), Port: 30001, Protocol: model.ProtocolTCP})
	require.True(t, ok)
	assert.Equal(t, "svcba", f.Service.Name)
	byID, ok := in.FrontendByID(f.ID)
	require.True(t, ok)
	assert.Equal(t, f.Key(), byID.Key())
}

func TestIncrementalSeededAllocator(t *testing.T) {
	st := bigState(20, 3)
	first := Compute(st, Options{NodeName: "n1"})
	fids, bids := map[FrontendKey]uint32{}, map[BackendKey]uint32{}
	for _, f := range first.Frontends {
		fids[f.Key()] = f.ID + 100 // as if read back from pinned maps
	}
	for _, b := range first.Backends {
		bids[b.Key()] = b.ID + 100
	}
	bids[bkey("10.200.0.1", 80)] = 1 // gone while the agent was down
	seed := func() *Allocator {
		a, err := NewAllocator(fids, bids)
		require.NoError(t, err)
		return a
	}
	in := NewIncremental(Options{IDs: seed()})
	in.Update(st, Options{NodeName: "n1"})
	got := in.Desired()
	assert.Equal(t, Compute(st, Options{NodeName: "n1", IDs: seed()}), got)
	for _, f := range got.Frontends {
		assert.Equal(t, fids[f.Key()], f.ID)
	}
	_, ok := in.Backend(1)
	assert.False(t, ok, "an adopted ID of a backend that is gone is released")
}

func TestIDSpaceUpdateMatchesAssign(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var full, incr idSpace[BackendKey]
	cur := map[BackendKey]bool{}
	for range 300 {
		var added, removed []BackendKey
		for range r.IntN(6) {
			k := bkey(fmt.Sprintf("10.0.0.%d", 1+r.IntN(40)), 80)
			if cur[k] {
				if !slices.Contains(removed, k) {
					removed = append(removed, k)
				}
			} else if !slices.Contains(added, k) {
				added = append(added, k)
			}
		}
		for _, k := range removed {
			delete(cur, k)
		}
		for _, k := range added {
			cur[k] = true
		}
		var need []BackendKey
		for k := range cur {
			need = append(need, k)
		}
		slices.SortFunc(need, BackendKey.compare)
		slices.SortFunc(added, BackendKey.compare)
		full.assign(need)
		incr.update(added, removed)
		require.Equal(t, full.ids, incr.ids)
	}
}

// BenchmarkIncremental compares one Update after one EndpointSlice change
// with a Compute of the same state, at 10,000 services of 10 endpoints.
func BenchmarkIncremental(b *testing.B) {
	const n, k = 10_000, 10
	st := &model.State{}
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		st.Upsert(svc(name, netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}).String()))
		var eps []model.Endpoint
		for j := range k {
			eps = append(eps, ep(netip.AddrFrom4([4]byte{10, byte(1 + i>>8), byte(i), byte(j + 1)}).String(), "n"+fmt.Sprint(j%3), ready))
		}
		st.Upsert(slice(name+"-a", name, eps))
	}
	opts := Options{NodeName: "n1"}
	// change returns st with one endpoint of service i replaced (a new
	// address each time).
	change := func(st *model.State, i, v int) *model.State {
		next := st.Clone()
		nn := model.NamespacedName{Namespace: ns, Name: fmt.Sprintf("svc-%05d-a", i)}
		es := *next.EndpointSlices[nn]
		es.Endpoints = slices.Clone(es.Endpoints)
		es.Endpoints[0].Addresses = []netip.Addr{netip.AddrFrom4([4]byte{10, 250, byte(v >> 8), byte(v)})}
		next.Upsert(&es)
		return next
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			NewIncremental(Options{}).Update(st, opts)
		}
	})
	b.Run("compute-cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Compute(st, opts)
		}
	})
	b.Run("one-service", func(b *testing.B) {
		in := NewIncremental(Options{})
		in.Update(st, opts)
		states := make([]*model.State, 64)
		for i := range states {
			states[i] = change(st, (i*157)%n, i)
		}
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			in.Update(states[i%len(states)], opts)
			i++
		}
	})
	b.Run("compute-one-service", func(b *testing.B) {
		ids := &Allocator{}
		o := opts
		o.IDs = ids
		Compute(st, o)
		next := change(st, n/2, 1)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i%2 == 0 {
				Compute(next, o)
			} else {
				Compute(st, o)
			}
			i++
		}
	})
}

// TestIncrementalResultsStayImmutable holds on to an early Desired while a
// frontend loses its key to another service, its backend's ID is released
// and reused, and it wins the key back with a new backend ID: the early
// result must not change (it shares backend lists with the Incremental).
func TestIncrementalResultsStayImmutable(t *testing.T) {
	// a's external IP is only reachable through its ExternalIP frontend,
	// whose backend 10.0.0.1 (on another node) no other frontend lists:
	// internalTrafficPolicy Local keeps it out of the ClusterIP frontend.
	a := svc("a", "10.96.0.1", withITPLocal, func(s *model.Service) { s.ExternalIPs = ips("10.96.0.2") })
	aEps := slice("a-x", "a", []model.Endpoint{ep("10.0.0.1", "n2", ready)})
	b := svc("b", "10.96.0.2")
	c := svc("c", "10.96.0.3")
	cEps := slice("c-x", "c", []model.Endpoint{ep("10.0.0.3", "n1", ready)})
	opts := Options{NodeName: "n1", Extras: func(nn model.NamespacedName) ServiceExtras {
		if nn.Name == "a" {
			return ServiceExtras{ExternalIPs: ips("10.96.0.2")}
		}
		return ServiceExtras{}
	}}
	in := NewIncremental(Options{})
	ext := func(d *Desired) Frontend {
		for _, f := range d.Frontends {
			if f.Kind == KindExternalIP {
				return f
			}
		}
		t.Fatal("no ExternalIP frontend")
		return Frontend{}
	}

	st := state(a, aEps)
	in.Update(st, opts)
	d0 := in.Desired()
	require.Equal(t, uint32(1), ext(d0).Backends[0].ID)

	st = st.Clone()
	st.Upsert(b) // b's cluster IP wins 10.96.0.2; 10.0.0.1 is released
	in.Update(st, opts)
	st = st.Clone()
	st.Upsert(c)
	st.Upsert(cEps) // 10.0.0.3 takes the released ID 1
	in.Update(st, opts)
	st = st.Clone()
	st.Delete(b.Key()) // a wins 10.96.0.2 back; 10.0.0.1 gets ID 2
	in.Update(st, opts)
	d3 := in.Desired()
	require.Equal(t, uint32(2), ext(d3).Backends[0].ID)
	assert.Equal(t, uint32(1), ext(d0).Backends[0].ID, "an earlier result changed")
}
