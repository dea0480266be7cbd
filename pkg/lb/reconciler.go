package lb

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/model"
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

// Reconciler writes services into the LB maps.
type Reconciler struct {
	opts    Options
	log     *slog.Logger
	trigger chan struct{}

	mu      sync.Mutex
	have    datapath.LBState // what the maps hold, as far as we know
	desired *service.Desired
	status  Status
	synced  bool
	health  *healthServer
}

// New builds a reconciler whose ID allocator is seeded from the pinned
// maps, so frontends and backends keep their IDs (and established
// connections their translations) across agent restarts.
func New(opts Options) (*Reconciler, error) {
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
	have, err := opts.Maps.LBDump()
	if err != nil {
		return nil, fmt.Errorf("read pinned service maps: %w", err)
	}
	fids := map[service.FrontendKey]uint32{}
	for k, f := range have.Frontends {
		fids[service.FrontendKey{Address: k.Addr, Port: k.Port, Protocol: protoName(k.Proto)}] = f.ID
	}
	bids := map[service.BackendKey]uint32{}
	for id, b := range have.Backends {
		bids[service.BackendKey{Address: b.Addr, Port: b.Port, Protocol: protoName(b.Proto)}] = id
	}
	alloc, err := service.NewAllocator(fids, bids)
	if err != nil {
		return nil, fmt.Errorf("adopt service IDs from pinned maps: %w", err)
	}
	opts.Service.IDs = alloc
	return &Reconciler{opts: opts, log: opts.Logger, trigger: make(chan struct{}, 1), have: have,
		health: newHealthServer(opts.Logger)}, nil
}

func protoName(p uint8) model.Protocol {
	switch p {
	case 6:
		return model.ProtocolTCP
	case 17:
		return model.ProtocolUDP
	case 132:
		return model.ProtocolSCTP
	}
	return model.Protocol(fmt.Sprint(p))
}

func protoNum(p model.Protocol) (uint8, bool) {
	switch p {
	case model.ProtocolTCP:
		return 6, true
	case model.ProtocolUDP:
		return 17, true
	}
	// SCTP services wait for SCTP support in the datapath.
	return 0, false
}

// Trigger marks work.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done.
func (r *Reconciler) Run(ctx context.Context) {
	ch := r.opts.Store.Subscribe()
	defer r.opts.Store.Unsubscribe(ch)
	defer r.health.close()
	r.Reconcile(true)
	resync := time.NewTicker(r.opts.Resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			r.Trigger()
		case <-r.trigger:
			time.Sleep(r.opts.MinInterval)
			r.Reconcile(false)
		case <-resync.C:
			r.Reconcile(true)
		}
	}
}

// Reconcile computes and applies the desired state once. full re-reads the
// maps first, so the diff also removes what the reconciler did not write.
func (r *Reconciler) Reconcile(full bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	if full {
		have, err := r.opts.Maps.LBDump()
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
	d := service.Compute(snap, opts)
	healthErr := r.health.update(d.HealthChecks)
	want := toLBState(d, opts.NodeName)
	plan := datapath.PlanLB(r.have, want)
	r.desired = d
	r.status.Warnings = d.Warnings
	r.status.Frontends, r.status.Backends = len(want.Frontends), len(want.Backends)
	r.synced = true
	if plan.Empty() {
		r.status.LastErr = healthErr
		return
	}
	var removed []datapath.LBBackend
	for _, id := range plan.RemovedBackends {
		if b, ok := r.have.Backends[id]; ok {
			removed = append(removed, b)
		}
	}
	if err := r.opts.Maps.ApplyLB(plan); err != nil {
		// Re-read on the next pass: part of the plan may be in the maps.
		r.status.LastErr = fmt.Errorf("program services: %w", err)
		r.log.Error("program services", "error", err, "plan", plan.String())
		if have, derr := r.opts.Maps.LBDump(); derr == nil {
			r.have = have
		}
		return
	}
	r.have = want
	n, err := r.opts.Maps.DeleteCTForBackends(plan.RemovedBackends)
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
	r.status.LastErr = healthErr
	r.log.Info("services programmed", "plan", plan.String(), "frontends", len(want.Frontends),
		"backends", len(want.Backends), "connectionsCleaned", n, "took", time.Since(start).Round(time.Microsecond))
}

// toLBState turns the computed services into map contents.
func toLBState(d *service.Desired, node string) datapath.LBState {
	st := datapath.LBState{Frontends: map[datapath.LBFrontendKey]datapath.LBFrontend{}, Backends: map[uint32]datapath.LBBackend{}}
	for _, b := range d.Backends {
		p, ok := protoNum(b.Protocol)
		if !ok || !b.Address.Is4() {
			continue
		}
		st.Backends[b.ID] = datapath.LBBackend{ID: b.ID, Addr: b.Address, Port: b.Port, Proto: p,
			Terminating: b.State != service.BackendActive, Local: node != "" && b.NodeName == node}
	}
	for _, f := range d.Frontends {
		p, ok := protoNum(f.Protocol)
		if !ok || !f.Address.Is4() {
			continue
		}
		key := datapath.LBFrontendKey{Addr: f.Address, Port: f.Port, Proto: p}
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
			// Only IPv4 clients reach an IPv4 frontend: IPv6 ranges
			// allow none of them, and ranges that are all IPv6 leave
			// the flag on with nothing allowed, as Kubernetes means.
			lf.Flags |= datapath.LBFlagSrcRange
			for _, r := range f.SourceRanges {
				if r.Addr().Is4() {
					lf.SourceRanges = append(lf.SourceRanges, r.Masked())
				}
			}
		}
		if f.Algorithm == service.AlgorithmMaglev && len(f.Maglev) > 0 {
			lf.Flags |= datapath.LBFlagMaglev
			lf.Maglev, lf.HasMaglev = f.Maglev, true
		}
		for _, b := range f.Backends {
			if b.State == service.BackendActive {
				if _, ok := st.Backends[b.ID]; ok {
					lf.Slots = append(lf.Slots, b.ID)
				}
			}
		}
		st.Frontends[key] = lf
	}
	return st
}

// Desired returns the last computed services (for `sluice service list`).
func (r *Reconciler) Desired() *service.Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired
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

// FrontendName names a frontend by ID as "ns/name:port" (the port name, or
// number when unnamed), for flow events; "" if unknown.
func (r *Reconciler) FrontendName(id uint32) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.desired == nil {
		return ""
	}
	for i := range r.desired.Frontends {
		if f := &r.desired.Frontends[i]; f.ID == id {
			port := f.PortName
			if port == "" {
				port = fmt.Sprint(f.Port)
			}
			return f.Service.String() + ":" + port
		}
	}
	return ""
}
