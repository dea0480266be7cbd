package servicesync

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/reconcile"
	"github.com/sluice-net/sluice/pkg/service"
)

// Options configure a Reconciler.
type Options struct {
	Maps    *datapath.Maps
	Store   *model.Store
	Service service.Options
	Logger  *slog.Logger
	// MinInterval bounds how often model changes are written: a rolling
	// update touches many EndpointSlices within milliseconds.
	MinInterval time.Duration
	// BackendsRemoved, if set, is told about backends that were removed,
	// after their connections' CT entries were deleted (the agent then
	// destroys sockets that socket LB connected to them).
	BackendsRemoved func([]datapath.LBBackend)
	// Resync is the period of the full pass that re-reads the maps and
	// prunes what no longer belongs there (entries written by hand, or
	// left by a write that failed halfway).
	Resync time.Duration
	// ObservePass, if set, is told of every pass: whether it was a full
	// one, how long it took and the error it left in Status (metrics).
	ObservePass func(full bool, took time.Duration, err error)
}

// Status is what the reconciler reports for `sluice status`.
type Status struct {
	Frontends   int
	Backends    int
	LastApply   time.Time
	LastPlan    string
	LastErr     error
	Warnings    []string
	Applied     uint64
	CTCleanedUp uint64
}

// lbMaps is what the reconciler uses of the datapath's maps
// (*datapath.Maps), so that tests and benchmarks can leave the kernel out.
type lbMaps interface {
	LBDump() (datapath.LBState, error)
	ApplyLB(*datapath.LBWrites) error
	DeleteCTForBackends(backendIDs []uint32) (int, error)
}

// Reconciler writes services into the LB maps.
type Reconciler struct {
	opts Options
	maps lbMaps
	log  *slog.Logger
	loop *reconcile.Loop

	mu   sync.Mutex
	have datapath.LBState // what the maps hold, as far as we know
	// services computes the desired services incrementally: a pass after
	// one Service or EndpointSlice changed recomputes, plans and writes
	// that service alone.
	services *service.Incremental
	// needFull makes the next pass plan everything against have, as a
	// full resync does: set when a write failed halfway.
	needFull  bool
	healthErr error
	status    Status
	synced    bool
	health    *healthServer
}

// New builds a reconciler whose ID allocator is seeded from the pinned
// maps, so frontends and backends keep their IDs (and established
// connections their translations) across agent restarts.
func New(opts Options) (*Reconciler, error) {
	return newReconciler(opts, opts.Maps)
}

func newReconciler(opts Options, maps lbMaps) (*Reconciler, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinInterval == 0 {
		opts.MinInterval = 100 * time.Millisecond
	}
	if opts.Resync == 0 {
		opts.Resync = time.Minute
	}
	opts.Service.Defaults()
	if err := opts.Service.Validate(); err != nil {
		return nil, err
	}
	have, err := maps.LBDump()
	if err != nil {
		return nil, fmt.Errorf("read pinned service maps: %w", err)
	}
	fids := map[service.FrontendKey]uint32{}
	for k, f := range have.Frontends {
		fids[service.FrontendKey{Address: k.Addr, Port: k.Port, Protocol: model.ProtocolOf(k.Proto)}] = f.ID
	}
	bids := map[service.BackendKey]uint32{}
	for id, b := range have.Backends {
		bids[service.BackendKey{Address: b.Addr, Port: b.Port, Protocol: model.ProtocolOf(b.Proto)}] = id
	}
	alloc, err := service.NewAllocator(fids, bids)
	if err != nil {
		return nil, fmt.Errorf("adopt service IDs from pinned maps: %w", err)
	}
	opts.Service.IDs = alloc
	r := &Reconciler{opts: opts, maps: maps, log: opts.Logger, have: have,
		services: service.NewIncremental(opts.Service), health: newHealthServer(opts.Logger)}
	r.loop = reconcile.New(reconcile.Options{MinInterval: opts.MinInterval, Resync: opts.Resync, Observe: opts.ObservePass}, r.pass)
	return r, nil
}

// protoNum is the number of a service protocol the datapath translates:
// TCP and UDP. SCTP services wait for SCTP support in the datapath.
func protoNum(p model.Protocol) (uint8, bool) {
	if p != model.ProtocolTCP && p != model.ProtocolUDP {
		return 0, false
	}
	return p.Number()
}

// Trigger marks work.
func (r *Reconciler) Trigger() { r.loop.Trigger() }

// Run reconciles until ctx is done: the model store's changes mark work
// for the loop (pkg/reconcile), which writes at most every MinInterval.
func (r *Reconciler) Run(ctx context.Context) {
	ch := r.opts.Store.Subscribe()
	defer r.opts.Store.Unsubscribe(ch)
	defer r.health.close()
	// A pass catches up with what changed before the subscription. After
	// the agent's first (full) pass an incremental one suffices: it
	// computes from the model's current snapshot, and re-reading every
	// map entry right after they were written would only add garbage
	// and time to the start.
	r.loop.Run(ctx, !r.Synced(), ch)
}

// Reconcile computes and applies the desired state once, as a pass of the
// loop (observed). full re-reads the maps first and plans every service,
// so the diff also removes what the reconciler did not write. Otherwise
// only the frontends and backends that the model changes since the last
// pass touched are planned and written. It returns the error the pass
// left in Status.
func (r *Reconciler) Reconcile(full bool) error { return r.loop.RunPass(full) }

// pass is one pass of the loop; its error is the one it leaves in Status.
func (r *Reconciler) pass(full bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passLocked(full)
	return r.status.LastErr
}

func (r *Reconciler) passLocked(full bool) {
	start := time.Now()
	if full {
		have, err := r.maps.LBDump()
		if err != nil {
			r.status.LastErr = err
			return
		}
		// Tables are not read back: keep the copies of those we wrote.
		for k, f := range have.Frontends {
			if old, ok := r.have.Frontends[k]; ok && f.HasMaglev && old.ID == f.ID {
				f.Maglev = old.Maglev
				have.Frontends[k] = f
			}
		}
		r.have = have
	}
	snap := r.opts.Store.Snapshot()
	opts := r.opts.Service
	opts.NodeAddrs = nodeAddrs(snap, opts.NodeName, opts.NodeAddrs)
	// Extras depend on the Service object alone, as Incremental requires.
	opts.Extras = func(nn model.NamespacedName) service.ServiceExtras {
		svc, ok := snap.Services[nn]
		if !ok {
			return service.ServiceExtras{}
		}
		return service.ServiceExtras{
			ExternalIPs: svc.ExternalIPs, LoadBalancerIPs: svc.LoadBalancerIPs,
			LoadBalancerSourceRanges: svc.LoadBalancerSourceRanges, HealthCheckNodePort: svc.HealthCheckNodePort,
		}
	}
	ch := r.services.Update(snap, opts)
	if full || ch.All || ch.HealthChecks || r.healthErr != nil {
		r.healthErr = r.health.update(r.services.HealthChecks())
	}
	r.status.Warnings = r.services.Warnings()
	r.synced = true

	everything := full || ch.All || r.needFull
	var have, want datapath.LBState
	if everything {
		have, want = r.have, r.wantAll(opts.NodeName)
	} else {
		have, want = r.wantChanged(ch, opts.NodeName)
	}
	plan := Plan(have, want)
	if plan.Empty() {
		r.needFull = false
		r.status.Frontends, r.status.Backends = len(r.have.Frontends), len(r.have.Backends)
		r.status.LastErr = r.healthErr
		return
	}
	var removed []datapath.LBBackend
	for _, id := range plan.DelBackends {
		if b, ok := r.have.Backends[id]; ok {
			removed = append(removed, b)
		}
	}
	if err := r.maps.ApplyLB(plan); err != nil {
		// Re-read, and plan everything on the next pass: part of the
		// plan may be in the maps.
		r.status.LastErr = fmt.Errorf("program services: %w", err)
		r.log.Error("program services", "error", err, "plan", plan.String())
		if have, derr := r.maps.LBDump(); derr == nil {
			r.have = have
		}
		r.needFull = true
		return
	}
	if everything {
		r.have = want
	} else {
		r.merge(have, want)
	}
	r.needFull = false
	r.status.Frontends, r.status.Backends = len(r.have.Frontends), len(r.have.Backends)
	n, err := r.maps.DeleteCTForBackends(plan.DelBackends)
	if err != nil {
		r.log.Warn("clean connections of removed backends", "error", err)
	}
	r.status.CTCleanedUp += uint64(n)
	if len(removed) > 0 && r.opts.BackendsRemoved != nil {
		r.opts.BackendsRemoved(removed)
	}
	r.status.Applied++
	r.status.LastApply = time.Now()
	r.status.LastPlan = plan.String()
	r.status.LastErr = r.healthErr
	r.log.Info("services programmed", "plan", plan.String(), "frontends", r.status.Frontends,
		"backends", r.status.Backends, "connectionsCleaned", n, "took", time.Since(start).Round(time.Microsecond))
}

// wantAll is the whole desired map contents.
func (r *Reconciler) wantAll(node string) datapath.LBState {
	nf, nb := r.services.Len()
	st := datapath.LBState{Frontends: make(map[datapath.LBFrontendKey]datapath.LBFrontend, nf),
		Backends: make(map[uint32]datapath.LBBackend, nb)}
	for b := range r.services.Backends() {
		if lb, ok := lbBackend(&b, node); ok {
			st.Backends[b.ID] = lb
		}
	}
	for f := range r.services.Frontends() {
		if lf, ok := lbFrontend(f); ok {
			st.Frontends[lf.Key] = lf
		}
	}
	return st
}

// wantChanged returns, for the frontends and backends ch lists, what the
// maps hold and what they should hold: the part of the state a plan needs
// to look at. An ID released by the Update is not reused before the next,
// and a frontend keeps its ID while it exists, so the plan of this part is
// the plan of the whole: Plan never needs an entry outside it.
func (r *Reconciler) wantChanged(ch service.Changes, node string) (have, want datapath.LBState) {
	have = datapath.LBState{Frontends: make(map[datapath.LBFrontendKey]datapath.LBFrontend, len(ch.Frontends)),
		Backends: make(map[uint32]datapath.LBBackend, len(ch.Backends))}
	want = datapath.LBState{Frontends: make(map[datapath.LBFrontendKey]datapath.LBFrontend, len(ch.Frontends)),
		Backends: make(map[uint32]datapath.LBBackend, len(ch.Backends))}
	for _, k := range ch.Frontends {
		lk, ok := lbKey(k)
		if !ok {
			continue
		}
		if f, ok := r.have.Frontends[lk]; ok {
			have.Frontends[lk] = f
		}
		if f, ok := r.services.Frontend(k); ok {
			if lf, ok := lbFrontend(&f); ok {
				want.Frontends[lk] = lf
			}
		}
	}
	for _, id := range ch.Backends {
		if b, ok := r.have.Backends[id]; ok {
			have.Backends[id] = b
		}
		if b, ok := r.services.Backend(id); ok {
			if lb, ok := lbBackend(&b, node); ok {
				want.Backends[id] = lb
			}
		}
	}
	return have, want
}

// merge records in r.have that the entries of part were written as want.
func (r *Reconciler) merge(part, want datapath.LBState) {
	for k := range part.Frontends {
		delete(r.have.Frontends, k)
	}
	for id := range part.Backends {
		delete(r.have.Backends, id)
	}
	for k, f := range want.Frontends {
		r.have.Frontends[k] = f
	}
	for id, b := range want.Backends {
		r.have.Backends[id] = b
	}
}

// toLBState turns the computed services into map contents.
func toLBState(d *service.Desired, node string) datapath.LBState {
	st := datapath.LBState{Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{}, Backends: map[uint32]datapath.LBBackend{}}
	for i := range d.Backends {
		if b, ok := lbBackend(&d.Backends[i], node); ok {
			st.Backends[b.ID] = b
		}
	}
	for i := range d.Frontends {
		if f, ok := lbFrontend(&d.Frontends[i]); ok {
			st.Frontends[f.Key] = f
		}
	}
	return st
}

// lbKey is the datapath's key for k; false for what the datapath does not
// balance (SCTP). Both families: socket LB (connect4/6 and the rest) and
// the per-packet path serve IPv6 frontends as they do IPv4 ones.
func lbKey(k service.FrontendKey) (datapath.LBFrontendKey, bool) {
	p, ok := protoNum(k.Protocol)
	if !ok || !k.Address.IsValid() {
		return datapath.LBFrontendKey{}, false
	}
	return datapath.LBFrontendKey{Addr: k.Address, Port: k.Port, Proto: p}, true
}

// lbBackend is b's backend map entry; false if the datapath cannot reach it.
func lbBackend(b *service.Backend, node string) (datapath.LBBackend, bool) {
	p, ok := protoNum(b.Protocol)
	if !ok || !b.Address.IsValid() {
		return datapath.LBBackend{}, false
	}
	return datapath.LBBackend{ID: b.ID, Addr: b.Address, Port: b.Port, Proto: p,
		Terminating: b.State != service.BackendActive, Local: node != "" && b.NodeName == node}, true
}

// lbFrontend is f's frontend map entry; its slots are its active backends
// that have a backend entry (lbBackend).
func lbFrontend(f *service.Frontend) (datapath.LBFrontend, bool) {
	key, ok := lbKey(f.Key())
	if !ok {
		return datapath.LBFrontend{}, false
	}
	lf := datapath.LBFrontend{Key: key, ID: f.ID}
	if f.SessionAffinity {
		lf.Flags |= datapath.LBFlagAffinity
		lf.AffinityTimeout = f.AffinityTimeout
	}
	if f.Kind.External() {
		lf.Flags |= datapath.LBFlagExternal
		if f.TrafficPolicyLocal {
			lf.Flags |= datapath.LBFlagLocal
		}
	}
	if f.NoLocalEndpoints {
		lf.Flags |= datapath.LBFlagNoLocal
	}
	if len(f.SourceRanges) > 0 {
		// Only clients of its family reach a frontend: ranges of the
		// other family allow none of them, and ranges that are all of
		// the other family leave the flag on with nothing allowed, as
		// Kubernetes means. The per-packet path checks them (socket
		// LB cannot see the client's address at connect() and leaves
		// such frontends to it).
		lf.Flags |= datapath.LBFlagSrcRange
		for _, r := range f.SourceRanges {
			if r.Addr().Is4() == key.Addr.Is4() {
				lf.SourceRanges = append(lf.SourceRanges, r.Masked())
			}
		}
	}
	if f.Algorithm == service.AlgorithmMaglev && len(f.Maglev) > 0 {
		lf.Flags |= datapath.LBFlagMaglev
		lf.Maglev, lf.HasMaglev = f.Maglev, true
	}
	for i := range f.Backends {
		b := &f.Backends[i]
		if _, ok := protoNum(b.Protocol); ok && b.Address.Is4() == key.Addr.Is4() && b.State == service.BackendActive {
			lf.Slots = append(lf.Slots, b.ID)
		}
	}
	return lf, true
}

// Desired returns the services last computed (for `sluice service list`),
// nil before the first pass. It copies the whole result.
func (r *Reconciler) Desired() *service.Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		return nil
	}
	return r.services.Desired()
}

// Status returns the reconciler's state.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Synced reports whether one pass has run.
func (r *Reconciler) Synced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

// nodeAddrs are the node's addresses for NodePort frontends: those of its
// Node object, or the configured ones when there is no Node object (an
// edge host's manifests may not describe the host itself).
func nodeAddrs(s *model.State, node string, fallback []netip.Addr) []netip.Addr {
	n, ok := s.Nodes[node]
	if !ok {
		return fallback
	}
	var out []netip.Addr
	for _, a := range n.Addresses {
		if a.Type != "InternalIP" && a.Type != "ExternalIP" {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return fallback
	}
	return out
}

// FrontendService returns the service of a frontend ID, for flows.
func (r *Reconciler) FrontendService(id uint32) (model.NamespacedName, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.services.FrontendByID(id)
	if !ok {
		return model.NamespacedName{}, false
	}
	return f.Service, true
}
