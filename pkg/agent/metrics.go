package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluice-net/sluice/pkg/metrics"
)

// DefaultMetricsAddress is where the agent serves /metrics, /healthz and
// /readyz unless --metrics-address says otherwise: Cilium's agent port for
// Prometheus, on every address of the node (the agent runs with
// hostNetwork, and the kubelet probes the pod IP, which is the node's).
const DefaultMetricsAddress = ":9962"

// metricsServer serves the collector with the health endpoints on
// --metrics-address. Its listener is opened before the datapath is
// touched, so a taken port fails the start instead of a scrape later.
type metricsServer struct {
	ln    net.Listener
	srv   *http.Server
	close sync.Once
}

// listenMetrics opens addr; an empty addr disables the server (nil).
func listenMetrics(addr string) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address %s: %w", addr, err)
	}
	return &metricsServer{ln: ln}, nil
}

// serve starts serving a's metrics and health.
func (s *metricsServer) serve(a *Agent) {
	if s == nil {
		return
	}
	reg := metrics.NewRegistry(a.metrics)
	s.srv = &http.Server{Handler: metrics.Handler(reg, a.ready, a.log.With("component", "metrics")), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server", "error", err)
		}
	}()
	a.log.Info("serving metrics and health", "address", s.ln.Addr().String(),
		"paths", []string{metrics.PathMetrics, metrics.PathHealthz, metrics.PathReadyz})
}

// stop ends serving (within a short grace for a scrape in flight) before
// the datapath's maps are closed; it may be called more than once.
func (s *metricsServer) stop() {
	if s == nil {
		return
	}
	s.close.Do(func() {
		if s.srv == nil {
			s.ln.Close()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
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
