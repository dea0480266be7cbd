package servicesync

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sluice-net/sluice/pkg/service"
)

// healthServer serves each healthCheckNodePort as kube-proxy does, so a
// cloud load balancer in front of an externalTrafficPolicy: Local service
// only sends traffic to nodes that have an endpoint: 200 with the count of
// local endpoints, 503 when there are none.
type healthServer struct {
	log     *slog.Logger
	mu      sync.Mutex
	servers map[uint16]*http.Server
	checks  map[uint16]service.HealthCheck
}

func newHealthServer(log *slog.Logger) *healthServer {
	return &healthServer{log: log, servers: map[uint16]*http.Server{}, checks: map[uint16]service.HealthCheck{}}
}

type healthReply struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// update opens listeners for new ports, closes those no longer wanted and
// updates the counts the others answer with. A port that cannot be opened
// is an error; the others keep serving.
func (h *healthServer) update(checks []service.HealthCheck) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	want := map[uint16]service.HealthCheck{}
	for _, c := range checks {
		if c.NodePort != 0 {
			want[c.NodePort] = c
		}
	}
	h.checks = want
	var errs []error
	for port, srv := range h.servers {
		if _, ok := want[port]; !ok {
			srv.Close()
			delete(h.servers, port)
		}
	}
	for port := range want {
		if _, ok := h.servers[port]; ok {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			errs = append(errs, fmt.Errorf("healthCheckNodePort %d: %w", port, err))
			continue
		}
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = srv
		go func() { _ = srv.Serve(ln) }()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

func (h *healthServer) handler(port uint16) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		c := h.checks[port]
		h.mu.Unlock()
		var r healthReply
		r.Service.Namespace, r.Service.Name = c.Service.Namespace, c.Service.Name
		r.LocalEndpoints = c.LocalEndpoints
		r.ServiceProxyHealthy = true
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if c.LocalEndpoints == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(r)
	})
}

func (h *healthServer) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, srv := range h.servers {
		srv.Close()
		delete(h.servers, port)
	}
}
