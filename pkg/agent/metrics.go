package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-net/sluice/pkg/metrics"
)

// DefaultMetricsAddress is where the agent serves /metrics (with /healthz
// and /readyz) unless --metrics-address says otherwise: Cilium's agent port
// for Prometheus, on every address of the node (the agent runs with
// hostNetwork, and Prometheus scrapes the pod IP, which is the node's).
const DefaultMetricsAddress = ":9962"

// DefaultHealthAddress is where the agent serves /healthz and /readyz for
// the kubelet's probes unless --health-address says otherwise: loopback
// only, which a probe of a hostNetwork pod reaches with host 127.0.0.1 and
// nothing off the node reaches at all. The port is Cilium's agent health
// port.
const DefaultHealthAddress = "127.0.0.1:9879"

// httpServers serve the probes on --health-address, and the collector with
// the probes on --metrics-address. Their listeners are opened, and /healthz
// answered, before the source syncs or the datapath is touched: a taken
// port fails the start instead of a probe or a scrape later, and the
// kubelet's liveness probe sees a live process during a first sync that
// can take minutes on a large cluster. Until the datapath is loaded
// /metrics carries only the process's and Go's metrics and /readyz answers
// 503 naming the stage the agent is in.
type httpServers struct {
	// health and metrics are nil when their address is empty.
	health, metrics *httpServer
	close           sync.Once

	gatherer atomic.Pointer[prometheus.Registry]
	ready    atomic.Pointer[func() error]
}

// httpServer is one listener and what serves it.
type httpServer struct {
	ln  net.Listener
	srv *http.Server
}

// listenHTTP opens healthAddr and metricsAddr and starts serving at once;
// an empty address disables its server, and with both empty there is none
// (nil). stage names what the agent is doing while it starts, for /readyz.
func listenHTTP(healthAddr, metricsAddr string, stage func() string, log *slog.Logger) (*httpServers, error) {
	if healthAddr == "" && metricsAddr == "" {
		return nil, nil
	}
	s := &httpServers{}
	s.gatherer.Store(metrics.NewRegistry(nil))
	starting := func() error { return fmt.Errorf("starting: %s", stage()) }
	s.ready.Store(&starting)
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return s.gatherer.Load().Gather() })
	ready := func() error { return (*s.ready.Load())() }
	var err error
	if healthAddr != "" {
		if s.health, err = serveHTTP("--health-address", healthAddr, metrics.HealthHandler(ready), log); err != nil {
			return nil, err
		}
		log.Info("serving health probes", "address", s.health.ln.Addr().String(),
			"paths", []string{metrics.PathHealthz, metrics.PathReadyz})
	}
	if metricsAddr != "" {
		if s.metrics, err = serveHTTP("--metrics-address", metricsAddr, metrics.Handler(gather, ready, log), log); err != nil {
			s.stop()
			return nil, err
		}
		log.Info("serving metrics and health", "address", s.metrics.ln.Addr().String(),
			"paths", []string{metrics.PathMetrics, metrics.PathHealthz, metrics.PathReadyz})
	}
	return s, nil
}

// serveHTTP listens on addr, named by flag in errors, and serves h there.
func serveHTTP(flag, addr string, h http.Handler, log *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	s := &httpServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "address", addr, "error", err)
		}
	}()
	return s, nil
}

// serve switches to a's collector and readiness, once the datapath is
// loaded and every component a.ready asks exists.
func (s *httpServers) serve(a *Agent) {
	if s == nil {
		return
	}
	s.gatherer.Store(metrics.NewRegistry(a.metrics))
	ready := a.ready
	s.ready.Store(&ready)
}

// stop ends serving (within a short grace for a request in flight) before
// the datapath's maps are closed; it may be called more than once.
func (s *httpServers) stop() {
	if s == nil {
		return
	}
	s.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, h := range []*httpServer{s.health, s.metrics} {
			if h == nil {
				continue
			}
			_ = h.srv.Shutdown(ctx)
			// Shutdown closes only listeners Serve has begun with; the
			// serving goroutine may not have started yet.
			_ = h.ln.Close()
		}
	})
}

// newMetrics makes the agent's collector. It reads the maps and the
// agent's state only when scraped, which is after Run has set both up.
func (a *Agent) newMetrics() *metrics.Collector {
	return metrics.NewCollector(metrics.Options{Datapath: a.maps, State: a, Version: version})
}

// MetricsState implements metrics.StateSource.
func (a *Agent) MetricsState() metrics.State {
	ls, ps := a.lb.Status(), a.policy.Status()
	return metrics.State{
		Endpoints:        len(a.eps.List()),
		ServiceFrontends: ls.Frontends, ServiceBackends: ls.Backends,
		Identities: ps.Identities, PolicyEnforcedEndpoints: ps.EnforcedEndpoints,
		PolicyFailedClosedEndpoints: len(ps.FailedClosed), PolicyRevision: ps.Revision,
		FlowsLostByFollowers: a.flows.store.Stats().FollowersLost,
	}
}

// ready is nil when the agent is ready (api.Status.Ready, /readyz): the
// source has synced and the endpoints and services have been programmed
// once. Otherwise it names what the agent still waits for.
func (a *Agent) ready() error {
	var waiting []string
	if !a.source.Synced() {
		waiting = append(waiting, "the source's initial sync")
	}
	if !a.eps.Synced() {
		waiting = append(waiting, "endpoints")
	}
	if !a.lb.Synced() {
		waiting = append(waiting, "services")
	}
	if len(waiting) > 0 {
		return fmt.Errorf("waiting for %s", strings.Join(waiting, ", "))
	}
	return nil
}
