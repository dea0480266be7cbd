package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths served by Handler.
const (
	PathMetrics = "/metrics"
	// PathHealthz answers 200 while the agent's process serves HTTP: a
	// liveness probe.
	PathHealthz = "/healthz"
	// PathReadyz answers 200 when the agent is ready (the Ready of `sluice
	// status`), else 503 with what it waits for: a readiness probe.
	PathReadyz = "/readyz"
)

// NewRegistry returns a registry with c and the Go runtime and process
// collectors (go_*, process_*), which is what the agent serves. A fresh
// registry rather than the global one, so that nothing a dependency
// registers at init time shows up unasked. c may be nil: the agent serves
// the process's metrics alone until its datapath is loaded.
func NewRegistry(c *Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c != nil {
		reg.MustRegister(c)
	}
	return reg
}

// Handler serves PathMetrics from g, and the probes as HealthHandler does;
// ready returns nil when the agent is ready, else what it still waits for.
// log, if not nil, gets the errors of gathering (the metrics that could be
// gathered are served anyway).
func Handler(g prometheus.Gatherer, ready func() error, log *slog.Logger) http.Handler {
	opts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}
	if log != nil {
		opts.ErrorLog = slogPrintln{log}
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(g, opts))
	handleHealth(mux, ready)
	return mux
}

// HealthHandler serves PathHealthz and PathReadyz alone: the agent's
// --health-address, which the kubelet probes, without the metrics.
func HealthHandler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	handleHealth(mux, ready)
	return mux
}

func handleHealth(mux *http.ServeMux, ready func() error) {
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
}

// slogPrintln is promhttp's error logger on slog.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) {
	l.log.Warn("gather metrics", "error", fmt.Sprint(v...))
}
