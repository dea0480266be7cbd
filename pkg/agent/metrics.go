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

// DefaultMetricsAddress is where the agent serves /metrics, /healthz and
// /readyz unless --metrics-address says otherwise: Cilium's agent port for
// Prometheus, on every address of the node (the agent runs with
// hostNetwork, and the kubelet probes the pod IP, which is the node's).
const DefaultMetricsAddress = ":9962"

// metricsServer serves the collector with the health endpoints on
// --metrics-address. Its listener is opened, and /healthz answered, before
// the source syncs or the datapath is touched: a taken port fails the start
// instead of a scrape later, and the kubelet's liveness probe sees a live
// process during a first sync that can take minutes on a large cluster.
// Until the datapath is loaded /metrics carries only the process's and Go's
// metrics and /readyz answers 503 naming the stage the agent is in.
type metricsServer struct {
	ln    net.Listener
	srv   *http.Server
	close sync.Once

	gatherer atomic.Pointer[prometheus.Registry]
	ready    atomic.Pointer[func() error]
}

// listenMetrics opens addr and starts serving health at once; an empty addr
// disables the server (nil). stage names what the agent is doing while it
// starts, for /readyz.
func listenMetrics(addr string, stage func() string, log *slog.Logger) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address %s: %w", addr, err)
	}
	s := &metricsServer{ln: ln}
	s.gatherer.Store(metrics.NewRegistry(nil))
	starting := func() error { return fmt.Errorf("starting: %s", stage()) }
	s.ready.Store(&starting)
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return s.gatherer.Load().Gather() })
	ready := func() error { return (*s.ready.Load())() }
	s.srv = &http.Server{Handler: metrics.Handler(gather, ready, log), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "error", err)
		}
	}()
	log.Info("serving metrics and health", "address", s.ln.Addr().String(),
		"paths", []string{metrics.PathMetrics, metrics.PathHealthz, metrics.PathReadyz})
	return s, nil
}

// serve switches to a's collector and readiness, once the datapath is
// loaded and every component a.ready asks exists.
func (s *metricsServer) serve(a *Agent) {
	if s == nil {
		return
	}
	s.gatherer.Store(metrics.NewRegistry(a.metrics))
	ready := a.ready
	s.ready.Store(&ready)
}

// stop ends serving (within a short grace for a scrape in flight) before
// the datapath's maps are closed; it may be called more than once.
func (s *metricsServer) stop() {
	if s == nil {
		return
	}
	s.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
		// Shutdown closes only listeners Serve has begun with; the serving
		// goroutine may not have started yet.
		_ = s.ln.Close()
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
