package reconcilers

import (
	"context"
	"github.com/sluice-net/sluice/pkg/l7"
	"log/slog"
	"time"

	"github.com/sluice-net/sluice/pkg/api"
	"github.com/sluice-net/sluice/pkg/datapath"
	"github.com/sluice-net/sluice/pkg/endpoint"
	"github.com/sluice-net/sluice/pkg/metrics"
	"github.com/sluice-net/sluice/pkg/model"
	"github.com/sluice-net/sluice/pkg/policysync"
	"github.com/sluice-net/sluice/pkg/rungroup"
	"github.com/sluice-net/sluice/pkg/service"
	"github.com/sluice-net/sluice/pkg/servicesync"
)

// Config is what the reconcilers are built from.
type Config struct {
	NodeName string
	Maps     *datapath.Maps
	Store    *model.Store
	// StateDir keeps the policy reconciler's identities across restarts.
	StateDir string
	// Service configures the service computation; its NodeName is
	// NodeName when empty.
	Service service.Options
	// ServiceMinInterval is the service reconciler's MinInterval; zero
	// is its default (tests of behaviour shorten it).
	ServiceMinInterval time.Duration
	// PolicyAudit puts every endpoint in audit mode; PolicyMapMax is the
	// per-endpoint policy map size (zero: the policy reconciler's default).
	PolicyAudit  bool
	PolicyMapMax int
	// ProxyPorts is the L7 proxy's port range (zero: the default).
	ProxyPorts l7.PortRange
	// Attacher attaches the endpoint programs. Without one there is no
	// endpoint manager: a test then places endpoints itself, with
	// Set.Policy's Prepare, as the endpoint manager would.
	Attacher *datapath.Attacher
	// BackendsRemoved is told of the backends the service reconciler
	// removed (the agent destroys the UDP sockets connected to them).
	BackendsRemoved func([]datapath.LBBackend)
	// Metrics, if set, observes every pass (sluice_reconcile_*).
	Metrics *metrics.Collector
	Logger  *slog.Logger
}

// Set is the node's reconcilers, built and wired; none runs before Run
// or AddTo.
type Set struct {
	Services *servicesync.Reconciler
	Policy   *policysync.Reconciler
	// Endpoints is nil when Config had no Attacher.
	Endpoints *endpoint.Manager
}

// New builds the reconcilers over the loaded datapath's maps and the
// model. The service reconciler reads the pinned LB maps to keep their IDs.
func New(c Config) (*Set, error) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	observe := func(reconciler string) func(bool, time.Duration, error) {
		if c.Metrics == nil {
			return nil
		}
		return c.Metrics.ReconcileObserver(reconciler)
	}
	if c.Service.NodeName == "" {
		c.Service.NodeName = c.NodeName
	}
	s := &Set{}
	var err error
	s.Services, err = servicesync.New(servicesync.Options{
		Maps: c.Maps, Store: c.Store, Service: c.Service, MinInterval: c.ServiceMinInterval,
		Logger: log.With("component", "lb"), BackendsRemoved: c.BackendsRemoved,
		ObservePass: observe(metrics.ReconcilerServices),
	})
	if err != nil {
		return nil, err
	}
	var lister policysync.EndpointLister
	if c.Attacher != nil {
		// The endpoint manager, made next: it needs this reconciler as
		// its policy provider; neither runs before both are built.
		lister = policysync.EndpointListerFunc(func() []api.Endpoint { return s.Endpoints.List() })
	}
	s.Policy, err = policysync.New(policysync.Options{
		NodeName: c.NodeName, Maps: c.Maps, Store: c.Store, Audit: c.PolicyAudit,
		MaxEntries: c.PolicyMapMax, StateDir: c.StateDir, Logger: log,
		ObservePass: observe(metrics.ReconcilerPolicy), Endpoints: lister, ProxyPorts: c.ProxyPorts,
	})
	if err != nil {
		return nil, err
	}
	if c.Attacher != nil {
		s.Endpoints = endpoint.New(endpoint.Options{
			NodeName: c.NodeName, Maps: c.Maps, Attacher: c.Attacher, Store: c.Store,
			Logger: log.With("component", "endpoint"), Policy: s.Policy,
			ObservePass: observe(metrics.ReconcilerEndpoints),
		})
	}
	return s, nil
}

// AddTo adds each reconciler to g as a part of its own: the services,
// the policy, then the endpoints, which stop first.
func (s *Set) AddTo(g *rungroup.Group) {
	g.Add("service reconciler", func(ctx context.Context) error { s.Services.Run(ctx); return nil }, nil)
	g.Add("policy reconciler", s.Policy.Run, nil)
	if s.Endpoints != nil {
		g.Add("endpoint manager", s.Endpoints.Run, nil)
	}
}

// Run runs the reconcilers until ctx ends or one of them fails.
func (s *Set) Run(ctx context.Context) error {
	var g rungroup.Group
	s.AddTo(&g)
	return g.Run(ctx)
}
