package service

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluice-net/sluice/pkg/model"
)

// family is an address family Sluice balances: the computation is per
// family, as kube-proxy runs one proxier per family, and a dual-stack
// Service is two families of frontends over the same pods.
type family struct {
	addressType model.AddressType
	is          func(netip.Addr) bool
	wildcard    netip.Addr
}

var families = []family{
	{addressType: model.AddressTypeIPv4, is: netip.Addr.Is4, wildcard: netip.IPv4Unspecified()},
	{addressType: model.AddressTypeIPv6, is: netip.Addr.Is6, wildcard: netip.IPv6Unspecified()},
}

// Compute returns the frontends and backends this node should program for
// state, with Kubernetes service semantics as kube-proxy applies them (see
// the package documentation). It updates opts.IDs. Invalid options are
// reported in Desired.Warnings and replaced by their defaults; callers
// should have rejected them with Options.Validate.
//
// Compute recomputes every service; Incremental gives the same result
// recomputing only the services that changed since its previous call.
func Compute(state *model.State, opts Options) *Desired {
	c := computation{d: &Desired{}}
	c.d.Warnings = normalize(&opts)
	c.opts = opts
	c.d.MaglevTableSize = opts.MaglevTableSize
	if state != nil {
		c.d.Revision = state.Revision
		bySvc := indexSlices(state)
		for _, nn := range slices.SortedFunc(maps.Keys(state.Services), compareNN) {
			r := computeService(state.Services[nn], bySvc[nn], &c.opts)
			c.cands = append(c.cands, r.cands...)
			if r.hasCheck {
				c.checks = append(c.checks, r.check)
			}
			c.d.Warnings = append(c.d.Warnings, r.warnings...)
		}
	}
	c.finish()
	return c.d
}

type computation struct {
	opts   Options
	d      *Desired
	cands  []Frontend // before conflicts and IDs
	checks []HealthCheck
}

func (c *computation) warnf(format string, args ...any) {
	c.d.Warnings = append(c.d.Warnings, fmt.Sprintf(format, args...))
}

// normalize applies defaults, replaces invalid options by their defaults
// and says so in the warnings it returns, and gives opts an allocator if it
// has none.
func normalize(o *Options) []string {
	var warns []string
	o.Defaults()
	if _, err := ParseAlgorithm(string(o.DefaultAlgorithm)); err != nil {
		warns = append(warns, fmt.Sprintf("options: default algorithm: %v; using %q", err, AlgorithmRandom))
		o.DefaultAlgorithm = AlgorithmRandom
	}
	if err := ValidateMaglevTableSize(o.MaglevTableSize); err != nil {
		warns = append(warns, fmt.Sprintf("options: %v; using %d", err, DefaultMaglevTableSize))
		o.MaglevTableSize = DefaultMaglevTableSize
	}
	if o.IDs == nil {
		o.IDs = &Allocator{}
	}
	return warns
}

func compareNN(a, b model.NamespacedName) int {
	return cmp.Or(cmpString(a.Namespace, b.Namespace), cmpString(a.Name, b.Name))
}

// indexSlices groups endpoint slices by the service named in their
// kubernetes.io/service-name label, in their own namespace, sorted by name.
func indexSlices(state *model.State) map[model.NamespacedName][]*model.EndpointSlice {
	out := make(map[model.NamespacedName][]*model.EndpointSlice)
	for _, es := range state.EndpointSlices {
		if es.ServiceName == "" {
			continue
		}
		nn := sliceService(es)
		out[nn] = append(out[nn], es)
	}
	for _, l := range out {
		slices.SortFunc(l, compareSlices)
	}
	return out
}

// sliceService is the service an endpoint slice belongs to.
func sliceService(es *model.EndpointSlice) model.NamespacedName {
	return model.NamespacedName{Namespace: es.Namespace, Name: es.ServiceName}
}

func compareSlices(a, b *model.EndpointSlice) int { return cmpString(a.Name, b.Name) }

// endpoint is one address and port of a service port, merged over slices.
type endpoint struct {
	key                         BackendKey
	ready, serving, terminating bool
	nodeName, zone              string
	pod                         model.NamespacedName
}

func (e *endpoint) rank() int {
	switch {
	case e.ready:
		return 0
	case e.serving && e.terminating:
		return 1
	}
	return 2
}

// endpoints returns the endpoints of service port sp in family fam, sorted
// by key. As in kube-proxy, the backend port is that of the slice port with
// the service port's name and protocol (the EndpointSlice controller has
// already resolved targetPort, by number or by name, per pod), a slice
// without such a port contributes nothing, only an endpoint's first address
// is used (addresses are fungible per the API), and an address listed by
// several slices counts once, preferring the most usable record.
func endpoints(svcSlices []*model.EndpointSlice, sp model.ServicePort, fam family) []endpoint {
	n := 0
	for _, es := range svcSlices {
		n += len(es.Endpoints)
	}
	out := make([]endpoint, 0, n) // grown one by one, 10,000 services' copies are megabytes of garbage
	for _, es := range svcSlices {
		if es.AddressType != fam.addressType {
			continue
		}
		var port uint16
		for _, p := range es.Ports {
			if p.Name == sp.Name && p.Protocol == sp.Protocol && p.Port != 0 {
				port = p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 || !fam.is(ep.Addresses[0]) {
				continue
			}
			e := endpoint{
				key:         BackendKey{Address: ep.Addresses[0], Port: port, Protocol: sp.Protocol},
				ready:       ep.Ready,
				serving:     ep.Serving,
				terminating: ep.Terminating,
				nodeName:    ep.NodeName,
				zone:        ep.Zone,
			}
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				e.pod = model.NamespacedName{Namespace: r.Namespace, Name: r.Name}
			}
			out = append(out, e)
		}
	}
	// One record per key, the most usable; stable, so that among equals
	// the first listed wins (slices are in name order).
	slices.SortStableFunc(out, func(a, b endpoint) int { return cmp.Or(a.key.compare(b.key), a.rank()-b.rank()) })
	return slices.CompactFunc(out, func(a, b endpoint) bool { return a.key == b.key })
}

// selection is the backends of a frontend under one traffic policy.
type selection struct {
	backends    []Backend
	noEndpoints bool
	noLocal     bool
	// taken: a frontend has backends as its own; the next ones copy it.
	taken bool
}

// frontendBackends returns backends for one more frontend of s: each
// frontend needs its own (IDs are written in place), but the first one
// may have s's.
func (s *selection) frontendBackends() []Backend {
	if !s.taken {
		s.taken = true
		return s.backends
	}
	return slices.Clone(s.backends)
}

// selectBackends applies kube-proxy's CategorizeEndpoints (KEP-1669): among
// the eligible endpoints (this node's only, if local), new connections go to
// the ready ones; if there are none, to the serving and terminating ones;
// otherwise nowhere. Eligible endpoints that are not selected but may hold
// connections (terminating, or not ready) are listed as inactive.
func selectBackends(eps []endpoint, local bool, node string) selection {
	var s selection
	anyUsable := false
	haveReady := false
	for _, e := range eps {
		usable := e.ready || (e.serving && e.terminating)
		anyUsable = anyUsable || usable
		if local && e.nodeName != node {
			continue
		}
		haveReady = haveReady || e.ready
	}
	s.backends = make([]Backend, 0, len(eps))
	for _, e := range eps {
		if local && e.nodeName != node {
			continue
		}
		b := Backend{
			Address:  e.key.Address,
			Port:     e.key.Port,
			Protocol: e.key.Protocol,
			NodeName: e.nodeName,
			Pod:      e.pod,
			Zone:     e.zone,
		}
		switch {
		case e.ready || (!haveReady && e.serving && e.terminating):
			b.State = BackendActive
		case e.terminating:
			b.State = BackendTerminating
		default:
			b.State = BackendNotReady
		}
		s.backends = append(s.backends, b)
	}
	if len(s.backends) == 0 {
		s.backends = nil
	}
	slices.SortStableFunc(s.backends, func(a, b Backend) int { return a.State.rank() - b.State.rank() })
	s.noEndpoints = len(s.backends) == 0 || s.backends[0].State != BackendActive
	s.noLocal = s.noEndpoints && local && anyUsable
	return s
}

// serviceResult is what one service contributes to a computation before
// the services are put together: conflicts between them resolved, IDs
// assigned and Maglev tables built. It depends on the service, its
// endpoint slices and the options alone, which is what lets Incremental
// recompute one service without the others.
type serviceResult struct {
	// cands are the candidate frontends, without IDs, ClusterFrontendID
	// or Maglev table.
	cands    []Frontend
	check    HealthCheck
	hasCheck bool
	warnings []string
}

// computeService returns the candidate frontends of svc in every family,
// from its endpoint slices (sorted by name) and o (normalized). Like
// kube-proxy, it skips ExternalName and headless services and services
// without a cluster IP of the family, including their external addresses.
func computeService(svc *model.Service, svcSlices []*model.EndpointSlice, o *Options) serviceResult {
	var r serviceResult
	for _, fam := range families {
		r.service(svc, svcSlices, fam, o)
	}
	return r
}

func (r *serviceResult) algorithm(svc *model.Service, o *Options) Algorithm {
	v, ok := svc.Annotations[AlgorithmAnnotation]
	if !ok {
		return o.DefaultAlgorithm
	}
	a, err := ParseAlgorithm(v)
	if err != nil {
		r.warnings = append(r.warnings, fmt.Sprintf("service %s/%s: annotation %s: %v; using %q",
			svc.Namespace, svc.Name, AlgorithmAnnotation, err, o.DefaultAlgorithm))
		return o.DefaultAlgorithm
	}
	return a
}

func (r *serviceResult) service(svc *model.Service, svcSlices []*model.EndpointSlice, fam family, o *Options) {
	if svc.Type == model.ServiceTypeExternalName || svc.Headless {
		return
	}
	nn := model.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	clusterIPs := filterFamily(svc.ClusterIPs, fam)
	if len(clusterIPs) == 0 {
		return
	}
	var extras ServiceExtras
	if o.Extras != nil {
		extras = o.Extras(nn)
	}
	alg := r.algorithm(svc, o)
	hasNodePorts := svc.Type == model.ServiceTypeNodePort || svc.Type == model.ServiceTypeLoadBalancer
	isLB := svc.Type == model.ServiceTypeLoadBalancer
	itpLocal := svc.InternalTrafficPolicy == model.TrafficPolicyLocal
	etpLocal := svc.ExternalTrafficPolicy == model.TrafficPolicyLocal

	localReady := make(map[netip.Addr]bool)
	for _, sp := range svc.Ports {
		eps := endpoints(svcSlices, sp, fam)
		for _, e := range eps {
			if e.ready && e.nodeName == o.NodeName {
				localReady[e.key.Address] = true
			}
		}
		in := selectBackends(eps, itpLocal, o.NodeName)
		internal, external := &in, &in // the same unless the policies differ
		if etpLocal != itpLocal {
			ex := selectBackends(eps, etpLocal, o.NodeName)
			external = &ex
		}
		add := func(kind Kind, addr netip.Addr, port uint16) {
			sel, local := internal, itpLocal
			if kind.External() {
				sel, local = external, etpLocal
			}
			f := Frontend{
				Service:            nn,
				PortName:           sp.Name,
				Kind:               kind,
				Address:            addr,
				Port:               port,
				Protocol:           sp.Protocol,
				Algorithm:          alg,
				TrafficPolicyLocal: local,
				Backends:           sel.frontendBackends(),
				NoEndpoints:        sel.noEndpoints,
				NoLocalEndpoints:   sel.noLocal,
			}
			if svc.SessionAffinity == model.SessionAffinityClientIP {
				f.SessionAffinity = true
				f.AffinityTimeout = svc.SessionAffinityTimeoutSeconds
			}
			if kind == KindLoadBalancer {
				f.SourceRanges = slices.Clone(extras.LoadBalancerSourceRanges)
			}
			r.cands = append(r.cands, f)
		}
		for _, ip := range clusterIPs {
			add(KindClusterIP, ip, sp.Port)
		}
		if hasNodePorts && sp.NodePort != 0 {
			add(KindNodePort, fam.wildcard, sp.NodePort)
			for _, ip := range filterFamily(o.NodeAddrs, fam) {
				add(KindNodePort, ip, sp.NodePort)
			}
		}
		for _, ip := range filterFamily(extras.ExternalIPs, fam) {
			add(KindExternalIP, ip, sp.Port)
		}
		if isLB {
			for _, ip := range filterFamily(extras.LoadBalancerIPs, fam) {
				add(KindLoadBalancer, ip, sp.Port)
			}
		}
	}
	if isLB && etpLocal && extras.HealthCheckNodePort != 0 {
		r.check, r.hasCheck = HealthCheck{Service: nn, NodePort: extras.HealthCheckNodePort, LocalEndpoints: len(localReady)}, true
	}
}

// filterFamily returns the valid, specified addresses of fam, deduplicated,
// in their original order.
func filterFamily(addrs []netip.Addr, fam family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsValid() && !a.IsUnspecified() && fam.is(a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// finish resolves address conflicts, assigns IDs, builds Maglev tables and
// sorts the result.
func (c *computation) finish() {
	// Conflicts: the kind rank decides, then service and port name, which
	// keeps the outcome independent of map order.
	slices.SortFunc(c.cands, func(a, b Frontend) int {
		return cmp.Or(a.Key().compare(b.Key()), a.Kind.rank()-b.Kind.rank(),
			compareNN(a.Service, b.Service), cmpString(a.PortName, b.PortName))
	})
	var fronts []Frontend
	for _, f := range c.cands {
		if n := len(fronts); n > 0 && fronts[n-1].Key() == f.Key() {
			w := &fronts[n-1]
			c.warnf("frontend %s: %s %s port %s conflicts with %s %s port %s, which wins",
				f.Key(), f.Kind, f.Service, portLabel(f.PortName), w.Kind, w.Service, portLabel(w.PortName))
			continue
		}
		fronts = append(fronts, f)
	}

	// IDs. fronts is in key order, so frontend keys are sorted and unique.
	fkeys := make([]FrontendKey, len(fronts))
	bset := make(map[BackendKey]Backend)
	for i := range fronts {
		fkeys[i] = fronts[i].Key()
		for _, b := range fronts[i].Backends {
			if old, ok := bset[b.Key()]; !ok || b.State.rank() < old.State.rank() {
				bset[b.Key()] = b
			}
		}
	}
	fids := c.opts.IDs.frontends.assign(fkeys)
	bids := c.opts.IDs.backends.assign(slices.SortedFunc(maps.Keys(bset), BackendKey.compare))
	for i := range fronts {
		f := &fronts[i]
		f.ID = fids[f.Key()]
		for j := range f.Backends {
			f.Backends[j].ID = bids[f.Backends[j].Key()]
		}
	}
	for k, b := range bset {
		b.ID = bids[k]
		c.d.Backends = append(c.d.Backends, b)
	}
	slices.SortFunc(c.d.Backends, func(a, b Backend) int { return cmp.Compare(a.ID, b.ID) })

	slices.SortFunc(fronts, func(a, b Frontend) int {
		return cmp.Or(compareNN(a.Service, b.Service), cmpString(a.PortName, b.PortName),
			cmpString(string(a.Protocol), string(b.Protocol)), a.Kind.rank()-b.Kind.rank(),
			a.Address.Compare(b.Address), int(a.Port)-int(b.Port))
	})
	// Cluster frontend of each service port, for external frontends.
	type portKey struct {
		svc      model.NamespacedName
		name     string
		protocol model.Protocol
		is4      bool
	}
	clusterID := make(map[portKey]uint32)
	for _, f := range fronts {
		k := portKey{f.Service, f.PortName, f.Protocol, f.Address.Is4()}
		if _, seen := clusterID[k]; f.Kind == KindClusterIP && !seen {
			clusterID[k] = f.ID
		}
	}
	tables := make(map[maglevKey][]uint32)
	for i := range fronts {
		f := &fronts[i]
		if f.Kind.External() {
			f.ClusterFrontendID = clusterID[portKey{f.Service, f.PortName, f.Protocol, f.Address.Is4()}]
		}
		if f.Algorithm == AlgorithmMaglev && !f.NoEndpoints {
			f.Maglev = c.maglev(f.ActiveBackends(), tables)
		}
	}
	c.opts.IDs.maglev = tables
	c.d.Frontends = fronts
	c.d.HealthChecks = c.checks
	slices.SortFunc(c.d.HealthChecks, func(a, b HealthCheck) int { return compareNN(a.Service, b.Service) })
	slices.Sort(c.d.Warnings)
}

// maglev returns the table of backend IDs for the active backends, shared
// between frontends with the same backends and reused from the previous
// computation when unchanged (see Allocator).
func (c *computation) maglev(active []Backend, tables map[maglevKey][]uint32) []uint32 {
	k, names := maglevKeyOf(active, &c.opts)
	if t, ok := tables[k]; ok {
		return t
	}
	t, ok := c.opts.IDs.maglev[k]
	if !ok {
		t = maglevIDs(active, names, k)
	}
	tables[k] = t
	return t
}

// maglevKeyOf returns the key of the Maglev table for the active backends,
// and their names.
func maglevKeyOf(active []Backend, o *Options) (maglevKey, []string) {
	names := make([]string, len(active))
	for i := range active {
		names[i] = active[i].Key().String()
	}
	return maglevKey{names: strings.Join(names, ","), m: o.MaglevTableSize, seed: o.MaglevSeed}, names
}

// maglevIDs builds the table of backend IDs for the active backends.
func maglevIDs(active []Backend, names []string, k maglevKey) []uint32 {
	idx := MaglevTable(names, k.m, k.seed)
	t := make([]uint32, len(idx))
	for i, j := range idx {
		t[i] = active[j].ID
	}
	return t
}

func portLabel(name string) string {
	if name == "" {
		return `""`
	}
	return name
}
